"""Dataset readers, splits and intensity normalisation."""

from .io import label_to_integer, load_nifti, save_nifti, spacing_from_affine
from .msd import DATA_ROOT_VARIABLE, Case, CaseFiles, MSDDataset, resolve_data_root
from .normalize import normalize_intensity
from .splits import kfold_split, nnunet_split, training_subset

__all__ = [
    "DATA_ROOT_VARIABLE",
    "Case",
    "CaseFiles",
    "MSDDataset",
    "kfold_split",
    "label_to_integer",
    "load_nifti",
    "nnunet_split",
    "normalize_intensity",
    "resolve_data_root",
    "save_nifti",
    "spacing_from_affine",
    "training_subset",
]

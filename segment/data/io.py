"""Read NIfTI images and label maps with their affines, and check them."""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import DataError


def load_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI file as ``(array, affine)`` with the scaling of its header applied.

    The affine is the sform when its code is positive, else the qform (nibabel's
    rule), so the translation column and axis signs stored in the file are kept.

    Raises:
        DataError: when the file is missing, truncated or not a NIfTI image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        image = nib.load(str(path))
        array = np.asanyarray(image.dataobj)
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as error:
        raise DataError(f"cannot read {path} as a NIfTI image ({type(error).__name__}: {error}); re-export or re-download it") from error
    return array, np.asarray(image.affine, dtype=np.float64)


def spacing_from_affine(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing in millimetres: the lengths of the affine's first three columns."""
    return np.linalg.norm(affine[:3, :3], axis=0)


def label_to_integer(array: np.ndarray, path: str | Path, classes: set[int] | None = None) -> np.ndarray:
    """Cast a label array to ``int64`` after checking every value is a whole, known class.

    Raises:
        DataError: naming ``path`` when a value is NaN, infinite, fractional, or
            not among ``classes``.
    """
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise DataError(f"label file {path} contains NaN or infinite values; labels must be whole class numbers")
        fractional = array[array != np.round(array)]
        if fractional.size:
            raise DataError(
                f"label file {path} contains non-integer values (for example {fractional.flat[0]!r}); "
                "labels must be whole class numbers, re-export it without interpolation"
            )
    elif not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        raise DataError(f"label file {path} has unsupported dtype {array.dtype}; expected integers")
    labels = array.astype(np.int64)
    if classes is not None:
        unknown = sorted(set(np.unique(labels).tolist()) - classes)
        if unknown:
            raise DataError(
                f"label file {path} contains values {unknown} that are not among the classes {sorted(classes)} "
                "declared in dataset.json"
            )
    return labels

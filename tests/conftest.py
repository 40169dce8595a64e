"""Shared fixtures: small synthetic Decathlon datasets and the real data root."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REAL_DATA_ROOT = os.environ.get("MEDAUG_DATA")


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None, dtype=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(array, dtype=dtype) if dtype else array, np.eye(4) if affine is None else affine)
    nib.save(image, str(path))
    return path


def make_msd_dataset(folder: Path, n_cases: int = 4, shape=(12, 14, 10), seed: int = 0) -> Path:
    """Write an MSD-layout dataset of ``n_cases`` random images with a two-class box label."""
    rng = np.random.default_rng(seed)
    training = []
    for index in range(n_cases):
        case = f"case_{index:03d}"
        image = rng.normal(100, 20, size=shape).astype(np.float32)
        label = np.zeros(shape, dtype=np.uint8)
        label[3:7, 4:8, 2:6] = 1
        label[7:9, 4:8, 2:6] = 2
        write_nifti(folder / "imagesTr" / f"{case}.nii.gz", image)
        write_nifti(folder / "labelsTr" / f"{case}.nii.gz", label)
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    manifest = {
        "name": "Synthetic",
        "tensorImageSize": "3D",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "first", "2": "second"},
        "numTraining": n_cases,
        "training": training,
    }
    (folder / "dataset.json").write_text(json.dumps(manifest, indent=2))
    return folder


@pytest.fixture
def msd_dataset(tmp_path: Path) -> Path:
    return make_msd_dataset(tmp_path / "Synthetic")


@pytest.fixture(scope="session")
def hippocampus_folder() -> Path:
    """The real Task04 Hippocampus folder; tests that need it skip only when MEDAUG_DATA is unset."""
    if not REAL_DATA_ROOT:
        pytest.skip("MEDAUG_DATA is not set; .ci/run sets it to ../shared/data")
    folder = Path(REAL_DATA_ROOT) / "Task04_Hippocampus"
    assert folder.is_dir(), f"MEDAUG_DATA is set but {folder} does not exist"
    return folder

"""Writing label maps and images to NIfTI: exact integers, kept affines, atomic files."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from augment import Pipeline, RandomAffine, derive_generator
from segment.data import load_nifti, save_nifti
from segment.errors import DataError

AFFINE = np.array([
    [-0.8, 0.0, 0.0, 120.5],
    [0.0, 0.8, 0.0, -95.25],
    [0.0, 0.0, 2.5, -30.0],
    [0.0, 0.0, 0.0, 1.0],
])


def ct_header_with_scaling() -> nib.Nifti1Header:
    template = nib.Nifti1Image(np.zeros((8, 8, 8), dtype=np.int16), np.eye(4))
    template.header.set_slope_inter(0.5, -1024)
    return template.header


def test_float_labels_survive_repeated_round_trips(tmp_path):
    labels = np.random.default_rng(0).integers(0, 3, size=(8, 8, 8)).astype(np.float64)
    path = save_nifti(tmp_path / "label.nii.gz", labels, np.eye(4), label=True, header=ct_header_with_scaling())

    for _ in range(5):
        array, affine = load_nifti(path)
        save_nifti(path, array, affine, label=True, header=nib.load(path).header)

    array, _ = load_nifti(path)
    stored = nib.load(path)
    assert np.array_equal(array, labels)
    assert stored.get_data_dtype() == np.uint8
    assert stored.header.get_slope_inter() in ((None, None), (1.0, 0.0))


def test_wide_label_values_get_a_wider_type(tmp_path):
    labels = np.array([[[0, 300], [-5, 1]]])
    path = save_nifti(tmp_path / "label.nii.gz", labels, np.eye(4), label=True)
    assert nib.load(path).get_data_dtype() == np.int16
    assert np.array_equal(load_nifti(path)[0], labels)


def test_fractional_label_is_rejected(tmp_path):
    with pytest.raises(DataError, match="values must be whole class numbers"):
        save_nifti(tmp_path / "label.nii.gz", np.full((2, 2, 2), 0.999), np.eye(4), label=True)
    assert list(tmp_path.iterdir()) == []


def test_affine_kept_through_identity_augmentation(tmp_path):
    image = np.random.default_rng(1).normal(size=(10, 12, 6)).astype(np.float32)
    source = save_nifti(tmp_path / "source.nii.gz", image, AFFINE)
    array, affine = load_nifti(source)

    batch = {"image": torch.from_numpy(array)[None, None], "spacing": torch.tensor([[0.8, 0.8, 2.5]])}
    identity = Pipeline([RandomAffine(p=0.0)])(batch, derive_generator(0))
    saved = save_nifti(tmp_path / "augmented.nii.gz", identity["image"][0, 0].numpy(), affine)

    reloaded, reloaded_affine = load_nifti(saved)
    assert np.allclose(reloaded_affine, AFFINE, atol=1e-5)
    assert np.array_equal(reloaded, image)


def test_two_dimensional_image_keeps_one_channel(tmp_path):
    image = np.random.default_rng(2).normal(size=(64, 64)).astype(np.float32)
    path = save_nifti(tmp_path / "slice.nii.gz", image, np.eye(4))
    assert nib.load(path).shape == (64, 64)


def test_channel_axis_is_rejected(tmp_path):
    with pytest.raises(DataError, match="expected a 2D or 3D array"):
        save_nifti(tmp_path / "x.nii.gz", np.zeros((1, 4, 4, 4)), np.eye(4))


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def fail(image, filename):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", fail)
    with pytest.raises(OSError):
        save_nifti(tmp_path / "label.nii.gz", np.zeros((2, 2, 2)), np.eye(4), label=True)
    assert list(tmp_path.iterdir()) == []

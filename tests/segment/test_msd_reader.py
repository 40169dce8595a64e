"""MSDDataset and resolve_data_root: invalid datasets raise DataError naming the file and the fix, and affines load as stored."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segment.data import DATA_ROOT_VARIABLE, MSDDataset, load_nifti, resolve_data_root
from segment.errors import DataError
from tests.conftest import make_msd_dataset, write_nifti

SHAPE = (12, 14, 10)


def _one_case_dataset(tmp_path: Path) -> Path:
    """Write a valid one-case dataset (``case_000``) and return its folder."""
    return make_msd_dataset(tmp_path / "Synthetic", n_cases=1, shape=SHAPE)


def _box_label(shape=SHAPE, dtype=np.uint8) -> np.ndarray:
    label = np.zeros(shape, dtype=dtype)
    label[3:7, 4:8, 2:6] = 1
    label[7:9, 4:8, 2:6] = 2
    return label


def _set_training(folder: Path, entries: list[dict[str, str]]) -> None:
    manifest_path = folder / "dataset.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["training"] = entries
    manifest_path.write_text(json.dumps(manifest))


def _load_error(folder: Path, case_id: str = "case_000") -> str:
    with pytest.raises(DataError) as raised:
        MSDDataset(folder).load(case_id)
    return str(raised.value)


def _construction_error(folder: Path) -> str:
    with pytest.raises(DataError) as raised:
        MSDDataset(folder)
    return str(raised.value)


def test_synthetic_dataset_loads(msd_dataset):
    dataset = MSDDataset(msd_dataset)

    case = dataset.load("case_002")

    assert [files.case_id for files in dataset.cases] == ["case_000", "case_001", "case_002", "case_003"]
    assert dataset.num_classes == 3
    assert case.image.shape == (1, *SHAPE)
    assert case.image.dtype == np.float32
    assert case.label.dtype == np.int64
    np.testing.assert_array_equal(case.label[0], _box_label())


def test_nnunet_raw_layout_loads(tmp_path):
    # nnU-Net v2 raw: no 'training' list, labels as {"name": index}, one image file per channel.
    for channel in range(2):
        write_nifti(tmp_path / "imagesTr" / f"brain_007_{channel:04d}.nii.gz", np.full(SHAPE, channel + 1.0, dtype=np.float32))
    write_nifti(tmp_path / "labelsTr" / "brain_007.nii.gz", _box_label())
    manifest = {"labels": {"background": 0, "tumour": 1, "edema": 2}, "file_ending": ".nii.gz", "channel_names": {"0": "T1", "1": "FLAIR"}}
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    dataset = MSDDataset(tmp_path)

    case = dataset.load("brain_007", normalize=False)

    assert dataset.classes == {0: "background", 1: "tumour", 2: "edema"}
    assert case.image.shape == (2, *SHAPE)
    assert np.all(case.image[0] == 1.0)
    assert np.all(case.image[1] == 2.0)


# Files listed in dataset.json


def test_missing_image_file(tmp_path):
    folder = _one_case_dataset(tmp_path)
    image = folder / "imagesTr" / "case_000.nii.gz"
    image.unlink()

    message = _load_error(folder)

    assert str(image) in message
    assert "not found" in message
    assert "restore the file" in message


def test_missing_label_file(tmp_path):
    folder = _one_case_dataset(tmp_path)
    label = folder / "labelsTr" / "case_000.nii.gz"
    label.unlink()

    message = _load_error(folder)

    assert str(label) in message
    assert "not found" in message
    assert "restore the file" in message


def test_missing_dataset_json(tmp_path):
    folder = _one_case_dataset(tmp_path)
    (folder / "dataset.json").unlink()

    message = _construction_error(folder)

    assert "dataset.json not found" in message
    assert str(folder) in message
    assert "imagesTr/" in message


# Image and label disagree


def test_label_shape_differs_from_image(tmp_path):
    folder = _one_case_dataset(tmp_path)
    label = write_nifti(folder / "labelsTr" / "case_000.nii.gz", _box_label((12, 14, 9)))

    message = _load_error(folder)

    assert str(label) in message
    assert "(12, 14, 10)" in message
    assert "(12, 14, 9)" in message
    assert "share one voxel grid" in message


def test_label_affine_differs_from_image(tmp_path):
    folder = _one_case_dataset(tmp_path)
    shifted = np.eye(4)
    shifted[0, 3] = 1.0
    label = write_nifti(folder / "labelsTr" / "case_000.nii.gz", _box_label(), shifted)

    message = _load_error(folder)

    assert str(label) in message
    assert "different affines" in message
    assert "resample the label" in message


# Label values


def test_fractional_label_rejected(tmp_path):
    folder = _one_case_dataset(tmp_path)
    values = _box_label(dtype=np.float32)
    values[0, 0, 0] = 0.5
    label = write_nifti(folder / "labelsTr" / "case_000.nii.gz", values)

    message = _load_error(folder)

    assert str(label) in message
    assert "non-integer" in message
    assert "0.5" in message


def test_float_label_with_whole_values_loads(tmp_path):
    folder = _one_case_dataset(tmp_path)
    expected = _box_label()
    label = write_nifti(folder / "labelsTr" / "case_000.nii.gz", expected.astype(np.float32))
    assert nib.load(label).get_data_dtype() == np.float32

    case = MSDDataset(folder).load("case_000")

    assert case.label.dtype == np.int64
    assert case.label.shape == (1, *SHAPE)
    np.testing.assert_array_equal(case.label[0], expected)


def test_undeclared_label_value_rejected(tmp_path):
    folder = _one_case_dataset(tmp_path)
    values = _box_label()
    values[0, 0, 0] = 3
    label = write_nifti(folder / "labelsTr" / "case_000.nii.gz", values)

    message = _load_error(folder)

    assert str(label) in message
    assert "[3]" in message
    assert "declared in dataset.json" in message


# Image values and file contents


def test_nan_image_voxel_rejected(tmp_path):
    folder = _one_case_dataset(tmp_path)
    values = np.ones(SHAPE, dtype=np.float32)
    values[5, 5, 5] = np.nan
    image = write_nifti(folder / "imagesTr" / "case_000.nii.gz", values)

    message = _load_error(folder)

    assert str(image) in message
    assert "NaN" in message
    assert "case_000" in message


def test_nan_error_names_channel_file(tmp_path):
    # nnU-Net stores one file per channel, and the error must name the file with the NaN.
    folder = _one_case_dataset(tmp_path)
    (folder / "imagesTr" / "case_000.nii.gz").unlink()
    write_nifti(folder / "imagesTr" / "case_000_0000.nii.gz", np.ones(SHAPE, dtype=np.float32))
    values = np.ones(SHAPE, dtype=np.float32)
    values[1, 2, 3] = np.inf
    bad_channel = write_nifti(folder / "imagesTr" / "case_000_0001.nii.gz", values)

    message = _load_error(folder)

    assert str(bad_channel) in message
    assert "case_000_0000" not in message


def test_random_bytes_file_rejected(tmp_path):
    folder = _one_case_dataset(tmp_path)
    image = folder / "imagesTr" / "case_000.nii.gz"
    image.write_bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes())

    message = _load_error(folder)

    assert str(image) in message
    assert "cannot read" in message
    assert "re-download" in message


def test_truncated_gzip_rejected(tmp_path):
    folder = _one_case_dataset(tmp_path)
    image = folder / "imagesTr" / "case_000.nii.gz"
    compressed = image.read_bytes()
    image.write_bytes(compressed[: len(compressed) // 2])
    # The header is still readable, so the failure happens while reading voxels.
    assert nib.load(image).shape == SHAPE

    message = _load_error(folder)

    assert str(image) in message
    assert "cannot read" in message
    assert "re-download" in message


def test_load_nifti_missing_file(tmp_path):
    path = tmp_path / "absent.nii.gz"

    with pytest.raises(DataError, match="not found") as raised:
        load_nifti(path)

    assert str(path) in str(raised.value)


# Paths in dataset.json must stay inside the dataset folder


def test_parent_path_entry_rejected(tmp_path):
    folder = _one_case_dataset(tmp_path)
    write_nifti(tmp_path / "x.nii.gz", np.zeros(SHAPE, dtype=np.float32))
    _set_training(folder, [{"image": "../x.nii.gz", "label": "./labelsTr/case_000.nii.gz"}])

    message = _construction_error(folder)

    assert "'../x.nii.gz'" in message
    assert "outside the dataset folder" in message


def test_absolute_path_entry_rejected(tmp_path):
    folder = _one_case_dataset(tmp_path)
    outside = write_nifti(tmp_path / "x.nii.gz", np.zeros(SHAPE, dtype=np.float32))
    _set_training(folder, [{"image": str(outside), "label": "./labelsTr/case_000.nii.gz"}])

    message = _construction_error(folder)

    assert str(outside) in message
    assert "is absolute; paths must be relative to the dataset folder" in message


def test_symlink_out_of_dataset_rejected(tmp_path):
    folder = _one_case_dataset(tmp_path)
    outside = write_nifti(tmp_path / "elsewhere" / "x.nii.gz", np.zeros(SHAPE, dtype=np.float32))
    link = folder / "imagesTr" / "case_000.nii.gz"
    link.unlink()
    link.symlink_to(outside)

    message = _construction_error(folder)

    assert str(folder / "imagesTr" / "case_000.nii.gz") in message
    assert "is a symbolic link" in message
    assert "outside the dataset folder" in message


def test_channel_symlink_out_of_dataset_rejected(tmp_path):
    # dataset.json lists case_000.nii.gz and the reader falls back to the channel file case_000_0000.nii.gz.
    folder = _one_case_dataset(tmp_path)
    outside = write_nifti(tmp_path / "elsewhere" / "x.nii.gz", np.zeros(SHAPE, dtype=np.float32))
    (folder / "imagesTr" / "case_000.nii.gz").unlink()
    (folder / "imagesTr" / "case_000_0000.nii.gz").symlink_to(outside)

    message = _construction_error(folder)

    assert "case_000_0000.nii.gz" in message
    assert "outside the dataset folder" in message


def test_symlink_inside_dataset_accepted(tmp_path):
    folder = _one_case_dataset(tmp_path)
    image = folder / "imagesTr" / "case_000.nii.gz"
    stored = folder / "store" / "case_000.nii.gz"
    stored.parent.mkdir()
    image.rename(stored)
    image.symlink_to(stored)

    case = MSDDataset(folder).load("case_000")

    assert case.image.shape == (1, *SHAPE)


# Data root


def test_data_root_not_found(tmp_path):
    missing = tmp_path / "no-such-folder"

    with pytest.raises(DataError) as raised:
        resolve_data_root(missing)

    message = str(raised.value)
    assert str(missing) in message
    assert "not found" in message
    assert "--data-root" in message


def test_data_root_unset(monkeypatch):
    monkeypatch.delenv(DATA_ROOT_VARIABLE, raising=False)

    with pytest.raises(DataError) as raised:
        resolve_data_root()

    message = str(raised.value)
    assert "no data root" in message
    assert "--data-root" in message
    assert DATA_ROOT_VARIABLE in message


def test_data_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(tmp_path))

    assert resolve_data_root() == tmp_path


# Affines


def _write_case(folder: Path, image: nib.Nifti1Image, label: nib.Nifti1Image) -> None:
    """Write a one-case dataset ``case_a`` from prepared NIfTI images."""
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    nib.save(image, str(folder / "imagesTr" / "case_a.nii.gz"))
    nib.save(label, str(folder / "labelsTr" / "case_a.nii.gz"))
    manifest = {
        "labels": {"0": "background", "1": "first", "2": "second"},
        "training": [{"image": "./imagesTr/case_a.nii.gz", "label": "./labelsTr/case_a.nii.gz"}],
    }
    (folder / "dataset.json").write_text(json.dumps(manifest))


def test_flipped_affine_with_origin_kept(tmp_path):
    affine = np.diag([-0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [120.5, -95.25, -30.0]
    image = np.random.default_rng(1).normal(size=(10, 12, 6)).astype(np.float32)
    _write_case(tmp_path, nib.Nifti1Image(image, affine), nib.Nifti1Image(_box_label((10, 12, 6)), affine))

    case = MSDDataset(tmp_path).load("case_a")

    np.testing.assert_allclose(case.affine, affine, rtol=0, atol=1e-5)
    np.testing.assert_allclose(case.spacing, [0.8, 0.8, 2.5], rtol=0, atol=1e-5)


def test_sform_preferred_over_qform(tmp_path):
    sform = np.diag([0.8, 0.9, 3.0, 1.0])
    sform[:3, 3] = [10.0, 20.0, 30.0]
    qform = np.diag([1.0, 1.0, 1.0, 1.0])
    qform[:3, 3] = [-5.0, -5.0, -5.0]
    images = []
    for array in (np.ones((10, 12, 6), dtype=np.float32), _box_label((10, 12, 6))):
        image = nib.Nifti1Image(array, None)
        image.set_qform(qform, code=1)
        image.set_sform(sform, code=1)
        images.append(image)
    _write_case(tmp_path, *images)
    stored = nib.load(tmp_path / "imagesTr" / "case_a.nii.gz").header
    assert stored["sform_code"] == 1
    assert stored["qform_code"] == 1
    np.testing.assert_allclose(stored.get_qform(), qform)

    case = MSDDataset(tmp_path).load("case_a")

    np.testing.assert_allclose(case.affine, sform, rtol=0, atol=1e-5)
    np.testing.assert_allclose(case.spacing, [0.8, 0.9, 3.0], rtol=0, atol=1e-5)

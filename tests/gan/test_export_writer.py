"""Synthetic-dataset writer: one channel, physical intensities, source affine, unscaled integer labels."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from gan.errors import GanError
from gan.export import (
    DatasetInfo,
    PlannedCase,
    SyntheticCase,
    denormalise_output,
    export_dataset,
    image_path,
    label_path,
    write_case,
)
from gan.intensity import CTWindow, ZScoreClip
from segment.data import MSDDataset, load_nifti
from segment.errors import DataError

SOURCE_AFFINE = np.array([
    [-0.8, 0.0, 0.0, 120.5],
    [0.0, 0.8, 0.0, -95.25],
    [0.0, 0.0, 2.5, -30.0],
    [0.0, 0.0, 0.0, 1.0],
])


def ct_header_with_scaling(shape=(8, 8, 8)) -> nib.Nifti1Header:
    """Header of an int16 CT whose stored values are scaled by slope 0.5 and intercept -1024."""
    template = nib.Nifti1Image(np.zeros(shape, dtype=np.int16), SOURCE_AFFINE)
    template.header.set_slope_inter(0.5, -1024)
    return template.header


@pytest.mark.parametrize("output_value, expected_hu", [(-1.0, -1000.0), (0.0, 500.0), (1.0, 2000.0)])
def test_constant_output_saved_in_hounsfield_units(tmp_path, output_value, expected_hu):
    output = torch.full((1, 1, 4, 4), output_value)
    image = denormalise_output(output, CTWindow(-1000.0, 2000.0))
    write_case(tmp_path, "ct", SyntheticCase(image, None, SOURCE_AFFINE, header=ct_header_with_scaling((4, 4))))

    stored, _ = load_nifti(image_path(tmp_path, "ct"))
    assert stored.shape == (4, 4)
    assert np.all(np.abs(stored - expected_hu) <= 1.0)


def test_same_output_gives_same_hu_for_two_volumes(tmp_path):
    window = CTWindow(-1000.0, 2000.0)
    bright = torch.zeros(1, 1, 4, 4)
    bright[..., 0, 0] = 1.0
    dark = torch.zeros(1, 1, 4, 4)
    dark[..., 0, 0] = -1.0
    write_case(tmp_path, "bright", SyntheticCase(denormalise_output(bright, window), None, np.eye(4)))
    write_case(tmp_path, "dark", SyntheticCase(denormalise_output(dark, window), None, np.eye(4)))

    bright_hu, _ = load_nifti(image_path(tmp_path, "bright"))
    dark_hu, _ = load_nifti(image_path(tmp_path, "dark"))
    # Per-volume min-max scaling would map 0.0 to different HU values in the two volumes.
    assert np.all(np.abs(bright_hu[1:, :] - 500.0) <= 1.0)
    assert np.array_equal(bright_hu[1:, :], dark_hu[1:, :])
    assert abs(bright_hu[0, 0] - 2000.0) <= 1.0
    assert abs(dark_hu[0, 0] + 1000.0) <= 1.0


def test_output_outside_range_is_clipped(tmp_path):
    image = denormalise_output(torch.tensor([-3.0, 3.0]).reshape(1, 1, 1, 2), CTWindow(-1000.0, 2000.0))
    assert image.tolist() == [[-1000.0, 2000.0]]


@pytest.mark.parametrize(
    "output_shape, stored_shape",
    [((1, 1, 64, 64), (64, 64)), ((1, 1, 16, 64, 64), (64, 64, 16)), ((16, 1, 64, 64), (64, 64, 16))],
)
def test_single_channel_output_keeps_one_channel(tmp_path, output_shape, stored_shape):
    output = torch.rand(output_shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    intensity = ZScoreClip(5.0)
    image = denormalise_output(output, intensity)
    label = (image > 0).astype(np.float64)
    write_case(tmp_path, "case", SyntheticCase(image, label, SOURCE_AFFINE))

    stored_image = nib.load(image_path(tmp_path, "case"))
    stored_label = nib.load(label_path(tmp_path, "case"))
    assert stored_image.shape == stored_shape
    assert stored_label.shape == stored_shape
    assert np.allclose(stored_label.affine, stored_image.affine, atol=1e-6)

    # Slice k of the generator output becomes voxels [:, :, k].
    expected = intensity.from_model(output.numpy())
    expected = expected[0, 0] if len(output_shape) == 4 and output_shape[0] == 1 else expected.reshape(-1, 64, 64)
    if expected.ndim == 3:
        expected = np.moveaxis(expected, 0, -1)
    assert np.array_equal(np.asarray(stored_image.dataobj), expected)


def test_three_channel_output_is_rejected():
    with pytest.raises(GanError, match="one channel"):
        denormalise_output(torch.zeros(1, 3, 8, 8), CTWindow())


def test_image_keeps_source_affine(tmp_path):
    header = ct_header_with_scaling((10, 12, 6))
    image = np.random.default_rng(0).normal(size=(10, 12, 6)).astype(np.float32)
    write_case(tmp_path, "case", SyntheticCase(image, np.zeros((10, 12, 6)), SOURCE_AFFINE, header=header))

    for path in (image_path(tmp_path, "case"), label_path(tmp_path, "case")):
        stored = nib.load(path)
        assert np.allclose(stored.get_sform(), SOURCE_AFFINE, atol=1e-5)
        assert int(stored.header["sform_code"]) > 0
        assert np.allclose(load_nifti(path)[1], SOURCE_AFFINE, atol=1e-5)
    assert nib.load(image_path(tmp_path, "case")).get_data_dtype() == np.float32


def test_labels_stay_exact_over_five_cycles(tmp_path):
    labels = np.random.default_rng(1).integers(0, 3, size=(8, 8, 8)).astype(np.float64)
    image = np.zeros((8, 8, 8), dtype=np.float32)
    write_case(tmp_path, "case", SyntheticCase(image, labels, np.eye(4), header=ct_header_with_scaling()))

    path = label_path(tmp_path, "case")
    for _ in range(5):
        array, affine = load_nifti(path)
        write_case(tmp_path, "case", SyntheticCase(image, array, affine, header=nib.load(path).header))

    stored = nib.load(path)
    assert np.array_equal(load_nifti(path)[0], labels)
    assert stored.get_data_dtype() in (np.uint8, np.int16)
    assert stored.header.get_slope_inter() in ((None, None), (1.0, 0.0))


def test_fractional_label_is_rejected(tmp_path):
    with pytest.raises(DataError, match="whole class numbers"):
        write_case(tmp_path, "case", SyntheticCase(np.zeros((4, 4, 4)), np.full((4, 4, 4), 0.999), np.eye(4)))


def test_label_shape_mismatch_is_rejected(tmp_path):
    with pytest.raises(GanError, match="share one voxel grid"):
        write_case(tmp_path, "case", SyntheticCase(np.zeros((4, 4, 4)), np.zeros((4, 4, 3)), np.eye(4)))


def test_nan_image_is_rejected(tmp_path):
    with pytest.raises(GanError, match="NaN"):
        write_case(tmp_path, "case", SyntheticCase(np.full((4, 4), np.nan), None, np.eye(4)))


def _export(tmp_path, cases=3, dims=3):
    shape = (6, 7, 5)[:dims]
    rng = np.random.default_rng(0)
    planned = [PlannedCase(f"synth_{i:03d}", f"source_{i}", seed=i) for i in range(cases)]

    def generate(case):
        image = rng.normal(size=shape).astype(np.float32)
        return SyntheticCase(image, (image > 0).astype(np.uint8) * 2, SOURCE_AFFINE, parameters={"angle": np.float32(0.5)})

    info = DatasetInfo("Synth", "MRI", {0: "background", 1: "first", 2: "second"})
    return export_dataset(tmp_path / "out", planned, generate, info=info, provenance={"checkpoint_sha256": "ab" * 32, "kind": "conditional"})


def test_export_loads_as_msd_dataset(tmp_path):
    output = _export(tmp_path)
    dataset = MSDDataset(output)

    assert [case.case_id for case in dataset.cases] == ["synth_000", "synth_001", "synth_002"]
    assert dataset.classes == {0: "background", 1: "first", 2: "second"}
    case = dataset.load("synth_001", normalize=False)
    assert case.image.shape == (1, 6, 7, 5)
    assert set(np.unique(case.label).tolist()) <= {0, 2}
    assert np.allclose(case.affine, SOURCE_AFFINE, atol=1e-5)


def test_export_follows_nnunet_naming(tmp_path):
    output = _export(tmp_path)
    metadata = json.loads((output / "dataset.json").read_text())

    assert sorted(p.name for p in (output / "imagesTr").iterdir()) == [f"synth_00{i}_0000.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (output / "labelsTr").iterdir()) == [f"synth_00{i}.nii.gz" for i in range(3)]
    assert metadata["channel_names"] == {"0": "MRI"}
    assert metadata["labels"] == {"background": 0, "first": 1, "second": 2}
    assert metadata["numTraining"] == 3
    assert metadata["file_ending"] == ".nii.gz"
    assert metadata["training"][0] == {"image": "./imagesTr/synth_000.nii.gz", "label": "./labelsTr/synth_000.nii.gz"}
    assert metadata["tensorImageSize"] == "3D"
    assert sorted(p.name for p in output.iterdir()) == ["dataset.json", "imagesTr", "labelsTr", "manifest.json"]


def test_two_dimensional_export(tmp_path):
    output = _export(tmp_path, dims=2)
    dataset = MSDDataset(output)
    assert dataset.spatial_dims == 2
    assert dataset.load("synth_000").image.shape == (1, 6, 7)


def test_manifest_records_every_case(tmp_path):
    manifest = json.loads((_export(tmp_path) / "manifest.json").read_text())

    assert manifest["provenance"] == {"checkpoint_sha256": "ab" * 32, "kind": "conditional"}
    assert [case["source_case"] for case in manifest["cases"]] == ["source_0", "source_1", "source_2"]
    assert [case["seed"] for case in manifest["cases"]] == [0, 1, 2]
    assert manifest["cases"][0]["parameters"] == {"angle": 0.5}

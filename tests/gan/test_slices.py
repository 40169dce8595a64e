"""Slice datasets from 3D volumes: domains, case selection, 2.5D context, crops, masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gan.intensity import CTWindow, Percentiles, ZScoreClip
from gan.slices import (
    RandomSlices,
    SliceDataset,
    UnpairedSlices,
    context_indices,
    find_volumes,
    load_domain,
    map_slices,
    stack_slices,
)
from segment.errors import DataError
from tests.conftest import make_msd_dataset, write_nifti


def _ramp(shape=(6, 8, 5)) -> np.ndarray:
    # Slice k is filled with 100 * k, so a slice's value names its index.
    return np.broadcast_to(np.arange(shape[2], dtype=np.float32) * 100, shape).copy()


def test_folder_domain_pairs_labels(tmp_path):
    for name in ("ct", "mr"):
        write_nifti(tmp_path / f"{name}.nii.gz", _ramp())
        write_nifti(tmp_path / f"{name}_seg.nii.gz", np.ones((6, 8, 5), np.uint8))
    volumes = find_volumes(tmp_path, labels="{stem}_seg.nii.gz")
    assert [v.case_id for v in volumes] == ["ct", "mr"]
    assert volumes[0].label == tmp_path / "ct_seg.nii.gz"


def test_glob_domain_names_cases_by_folder(tmp_path):
    for case in ("pat1", "pat2"):
        write_nifti(tmp_path / case / "Flair.nii.gz", _ramp())
        write_nifti(tmp_path / case / "mask.nii.gz", np.ones((6, 8, 5), np.uint8))
    volumes = find_volumes(str(tmp_path / "*" / "Flair.nii.gz"), mask="mask.nii.gz")
    assert [v.case_id for v in volumes] == ["pat1", "pat2"]
    assert volumes[1].mask == tmp_path / "pat2" / "mask.nii.gz"


def test_missing_label_file_named(tmp_path):
    write_nifti(tmp_path / "ct.nii.gz", _ramp())
    with pytest.raises(DataError, match="ct_seg.nii.gz"):
        find_volumes(tmp_path, labels="{stem}_seg.nii.gz")
    with pytest.raises(DataError, match="no NIfTI images"):
        find_volumes(tmp_path / "nothing*.nii.gz")


def test_msd_domain_and_case_selection(tmp_path):
    folder = make_msd_dataset(tmp_path / "Synthetic", n_cases=3)
    volumes = load_domain(folder, Percentiles(), cases=["case_002", "case_000"])
    assert [v.case_id for v in volumes] == ["case_002", "case_000"]
    assert volumes[0].label is not None
    assert volumes[0].label.dtype == np.int64
    with pytest.raises(DataError, match="case_009"):
        load_domain(folder, Percentiles(), cases=["case_009"])
    with pytest.raises(DataError, match="empty"):
        load_domain(folder, Percentiles(), cases=[])


def test_load_maps_intensity_and_moves_axis(tmp_path):
    hu = np.full((4, 6, 8), -1000, dtype=np.int16)
    hu[:, 2, :] = 2000
    write_nifti(tmp_path / "ct.nii.gz", hu)
    (volume,) = load_domain(tmp_path / "ct.nii.gz", CTWindow(), axis=1)
    assert volume.image.shape == (4, 8, 6)
    assert volume.image.dtype == np.float32
    assert volume.image[..., 2].min() == 1.0
    assert volume.image[..., 0].max() == -1.0
    assert volume.intensity == {"name": "ct", "low": -1000.0, "high": 2000.0}
    assert volume.axis == 1


def test_label_shape_mismatch_rejected(tmp_path):
    write_nifti(tmp_path / "ct.nii.gz", _ramp())
    write_nifti(tmp_path / "ct_seg.nii.gz", np.zeros((6, 8, 4), np.uint8))
    with pytest.raises(DataError, match="share one voxel grid"):
        load_domain(tmp_path / "ct.nii.gz", CTWindow(), labels="{stem}_seg.nii.gz")


def test_context_indices_clamp_at_edges():
    assert context_indices(0, 5, 2) == [0, 0, 0, 1, 2]
    assert context_indices(4, 5, 1) == [3, 4, 4]
    assert context_indices(2, 5, 0) == [2]


def test_stack_slices_orders_neighbours():
    volume = _ramp()
    stack = stack_slices(volume, [0, 3], context=1)
    assert stack.shape == (2, 3, 6, 8)
    assert stack[0, :, 0, 0].tolist() == [0.0, 0.0, 100.0]
    assert stack[1, :, 0, 0].tolist() == [200.0, 300.0, 400.0]


def test_dataset_context_crop_and_pad(tmp_path):
    write_nifti(tmp_path / "img.nii.gz", _ramp((6, 8, 5)) + 1)
    write_nifti(tmp_path / "img_seg.nii.gz", np.ones((6, 8, 5), np.uint8))
    volumes = load_domain(tmp_path / "img.nii.gz", ZScoreClip(1000.0), labels="{stem}_seg.nii.gz")
    dataset = SliceDataset(volumes, context=1, size=(4, 10), min_foreground=None)
    assert len(dataset) == 5
    item = dataset[2]
    assert item["image"].shape == (3, 4, 10)
    assert item["label"].shape == (3, 4, 10)
    assert item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.int64
    assert item["slice"] == 2
    # Width 8 padded to 10: one column each side, repeating the edge columns.
    assert torch.equal(item["image"][:, :, 0], item["image"][:, :, 1])
    assert torch.equal(item["image"][:, :, 9], item["image"][:, :, 8])
    assert torch.all(item["label"] == 1)
    assert torch.allclose(item["image"][:, 0, 5], torch.tensor([101.0, 201.0, 301.0]) / 1000)


def test_crop_keeps_requested_window(tmp_path):
    image = np.arange(6 * 8 * 1, dtype=np.float32).reshape(6, 8, 1)
    write_nifti(tmp_path / "img.nii.gz", image)
    volumes = load_domain(tmp_path / "img.nii.gz", ZScoreClip(100.0))
    dataset = SliceDataset(volumes, size=(2, 4), min_foreground=None)
    # Centre crop: rows 2..3, columns 2..5.
    assert np.allclose(dataset[0]["image"][0].numpy() * 100, image[2:4, 2:6, 0])


def test_foreground_filter_skips_empty_slices(tmp_path):
    image = np.zeros((6, 8, 5), np.float32)
    image[:, :, 1] = 5.0
    image[0, 0, 3] = 5.0
    write_nifti(tmp_path / "img.nii.gz", image)
    volumes = load_domain(tmp_path / "img.nii.gz", ZScoreClip(10.0))
    assert [k for _, k in SliceDataset(volumes, min_foreground=0.0).index] == [1, 3]
    assert [k for _, k in SliceDataset(volumes, min_foreground=0.5).index] == [1]
    with pytest.raises(DataError, match="min_foreground"):
        SliceDataset(volumes, min_foreground=1.0)


def test_mask_file_selects_slices(tmp_path):
    write_nifti(tmp_path / "img.nii.gz", _ramp())
    mask = np.zeros((6, 8, 5), np.uint8)
    mask[:, :, 2:4] = 1
    write_nifti(tmp_path / "brainmask.nii.gz", mask)
    volumes = load_domain(tmp_path / "img.nii.gz", Percentiles(), mask="brainmask.nii.gz")
    assert [k for _, k in SliceDataset(volumes).index] == [2, 3]


def test_random_samplers_are_seeded(tmp_path):
    write_nifti(tmp_path / "img.nii.gz", np.random.default_rng(0).normal(size=(20, 20, 6)).astype(np.float32))
    volumes = load_domain(tmp_path / "img.nii.gz", ZScoreClip())
    dataset = SliceDataset(volumes, size=8)
    first = RandomSlices(dataset, 10, seed=3)
    second = RandomSlices(dataset, 10, seed=3)
    assert all(torch.equal(first[i]["image"], second[i]["image"]) for i in range(10))
    assert not all(torch.equal(first[i]["image"], RandomSlices(dataset, 10, seed=4)[i]["image"]) for i in range(10))
    pair = UnpairedSlices(dataset, dataset, 4, seed=0)[1]
    assert pair["a"]["image"].shape == pair["b"]["image"].shape == (1, 8, 8)


def test_map_slices_batches_and_restacks():
    volume = _ramp((3, 4, 7))
    calls = []

    def centre_plus_one(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape[0])
        return batch[:, 1:2] + 1

    result = map_slices(volume, centre_plus_one, context=1, batch_size=3)
    assert calls == [3, 3, 1]
    assert result.shape == volume.shape
    assert np.array_equal(result, volume + 1)

"""2D slices of 3D volumes: neighbour stacks, slice patches for training, slice-wise prediction stacked back to 3D."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from segment import PatchDataset
from segment.data import Case
from segment.slices import neighbour_indices, predict_slices, slice_channels, slice_stack, volume_to_slices


def _volume_case(case_id: str = "a", shape=(6, 7, 5), channels: int = 2) -> Case:
    """Image voxel value 100 * channel + slice index along the last axis; label = slice index % 3."""
    image = np.zeros((channels, *shape), dtype=np.float32)
    for channel in range(channels):
        image[channel] = 100 * channel + np.arange(shape[2])[None, None, :]
    label = (np.broadcast_to(np.arange(shape[2]) % 3, shape)[None]).astype(np.int64)
    return Case(case_id, image, label.copy(), np.diag([1.0, 2.0, 3.0, 1.0]), np.array([1.0, 2.0, 3.0]))


class CentreSign(nn.Module):
    """2D stand-in model: class 1 where the centre slice's first channel is positive, else class 0."""

    spatial_dims = 2
    divisor = 4

    def __init__(self, channels: int, context: int) -> None:
        super().__init__()
        self.centre = context * channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        assert image.shape[-2] % self.divisor == 0
        assert image.shape[-1] % self.divisor == 0
        foreground = image[:, self.centre]
        return torch.stack([-foreground, foreground], dim=1)


def test_neighbour_indices_clamp_at_edges():
    assert neighbour_indices(5, 0, 2).tolist() == [0, 0, 0, 1, 2]
    assert neighbour_indices(5, 4, 1).tolist() == [3, 4, 4]
    batch = neighbour_indices(3, torch.arange(3), 1)
    assert batch.tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 2]]


def test_slice_stack_channel_order():
    case = _volume_case()
    stack = slice_stack(case.image, axis=2, index=0, context=1)

    assert stack.shape == (slice_channels(2, 1), 6, 7)
    # Offset first, then channel: slices 0 (edge repeated), 0, 1.
    assert [float(stack[c, 0, 0]) for c in range(6)] == [0.0, 100.0, 0.0, 100.0, 1.0, 101.0]


def test_slice_stack_other_axes():
    image = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert slice_stack(image, axis=0, index=1, context=0).shape == (2, 4, 5)
    assert np.array_equal(slice_stack(image, axis=1, index=2, context=0), image[:, :, 2, :])
    assert np.array_equal(slice_stack(image, axis=0, index=2, context=1)[2:4], image[:, 2])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_volume_to_slices_matches_slice_stack(axis):
    image = np.random.default_rng(0).normal(size=(2, 5, 6, 7)).astype(np.float32)
    slices = volume_to_slices(torch.from_numpy(image), axis, context=2)

    assert slices.shape[0] == image.shape[axis + 1]
    for index in range(slices.shape[0]):
        assert np.array_equal(slices[index].numpy(), slice_stack(image, axis, index, 2)), index


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_predict_slices_stacks_back_to_volume(axis):
    image = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 1, 9, 6, 7)).astype(np.float32))
    model = CentreSign(channels=1, context=1)

    labels = predict_slices(model, image, model.divisor, axis=axis, context=1, slices_per_batch=4)

    assert labels.shape == (2, 9, 6, 7)
    assert torch.equal(labels, (image[:, 0] > 0).long())


def test_predict_slices_batching_does_not_matter():
    image = torch.from_numpy(np.random.default_rng(2).normal(size=(1, 2, 5, 6, 7)).astype(np.float32))
    torch.manual_seed(0)
    model = nn.Conv2d(6, 3, 3, padding=1)
    model.divisor = 4

    one = predict_slices(model, image, 4, axis=2, context=1, slices_per_batch=1)
    all_at_once = predict_slices(model, image, 4, axis=2, context=1, slices_per_batch=64)

    assert torch.equal(one, all_at_once)


def test_predict_slices_rejects_2d_input():
    with pytest.raises(ValueError, match="needs volumes"):
        predict_slices(CentreSign(1, 0), torch.zeros(1, 1, 8, 8), 4, axis=0)


def test_patch_dataset_yields_slice_patches():
    case = _volume_case()
    dataset = PatchDataset([case], (4, 6), length=12, seed=0, slice_axis=2, slice_context=1)

    for index in range(12):
        item = dataset[index]
        assert item["image"].shape == (6, 4, 6)
        assert item["label"].shape == (1, 4, 6)
        assert item["spacing"].tolist() == [1.0, 2.0]
        # The centre slice's first channel contains the slice index, and the label that index modulo 3.
        position = int(item["image"][2].max())
        assert item["label"].unique().tolist() == [position % 3], index
        below = max(position - 1, 0)
        assert int(item["image"][0].max()) == below, index


def test_slice_patch_padding_is_background():
    case = _volume_case()
    dataset = PatchDataset([case], (8, 8), length=10, seed=0, slice_axis=2)

    checked = 0
    for index in range(10):
        item = dataset[index]
        assert item["image"].shape == (2, 8, 8)
        value = int(item["image"][0].max()) % 3
        if value:
            # The 6 x 7 slice keeps its class; the 22 padded pixels are background.
            assert int((item["label"] == value).sum()) == 6 * 7, index
            assert int((item["label"] == 0).sum()) == 8 * 8 - 6 * 7, index
            checked += 1
    assert checked > 0


def test_slice_positions_cover_the_axis_reproducibly():
    case = _volume_case()
    first = PatchDataset([case], (6, 7), length=40, seed=3, slice_axis=2)
    second = PatchDataset([case], (6, 7), length=40, seed=3, slice_axis=2)

    positions = [int(first[i]["image"][0].max()) for i in range(40)]
    assert positions == [int(second[i]["image"][0].max()) for i in range(40)]
    assert set(positions) == set(range(5))


def test_slice_patch_dataset_checks_inputs():
    case = _volume_case()
    with pytest.raises(ValueError, match="must have 2 sizes"):
        PatchDataset([case], (4, 4, 4), length=1, seed=0, slice_axis=2)
    with pytest.raises(ValueError, match="slice_axis must be 0, 1 or 2"):
        PatchDataset([case], (4, 4), length=1, seed=0, slice_axis=3)
    flat = Case("flat", np.zeros((1, 6, 7), dtype=np.float32), np.zeros((1, 6, 7), dtype=np.int64), np.eye(4), np.ones(2))
    with pytest.raises(ValueError, match="case flat .* slice training needs 3D cases"):
        PatchDataset([flat], (4, 4), length=1, seed=0, slice_axis=0)

"""PatchDataset: reproducible items, patch size kept by padding, background label in the padding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from segment import PatchDataset
from segment.data import Case


def _case(case_id: str, shape: tuple[int, ...], seed: int = 0, label_value: int = 1) -> Case:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(2, *shape)).astype(np.float32)
    label = np.full((1, *shape), label_value, dtype=np.int64)
    return Case(case_id, image, label, np.eye(4), np.ones(3))


def test_item_reproducible():
    cases = [_case("a", (20, 22, 24), seed=0), _case("b", (18, 30, 21), seed=1)]
    first = PatchDataset(cases, (8, 8, 8), length=6, seed=3)
    second = PatchDataset(cases, (8, 8, 8), length=6, seed=3)

    for index in (0, 5, 3):
        item = first[index]
        again = first[index]
        fresh = second[index]
        assert item["case_id"] == fresh["case_id"], index
        assert torch.equal(item["image"], again["image"]), index
        assert torch.equal(item["image"], fresh["image"]), index
        assert torch.equal(item["label"], fresh["label"]), index


def test_seed_changes_patches():
    cases = [_case("a", (20, 22, 24))]

    first = PatchDataset(cases, (8, 8, 8), length=4, seed=3)
    other = PatchDataset(cases, (8, 8, 8), length=4, seed=4)

    assert any(not torch.equal(first[i]["image"], other[i]["image"]) for i in range(4))


def test_patch_size_kept_for_large_case():
    dataset = PatchDataset([_case("a", (20, 22, 24))], (8, 10, 12), length=3, seed=0)

    for index in range(3):
        item = dataset[index]
        assert item["image"].shape == (2, 8, 10, 12), index
        assert item["label"].shape == (1, 8, 10, 12), index


def test_small_case_padded_to_patch_size():
    case = _case("small", (5, 6, 7), label_value=2)
    dataset = PatchDataset([case], (8, 8, 8), length=4, seed=0)

    for index in range(4):
        item = dataset[index]
        image, label = item["image"].numpy(), item["label"].numpy()
        assert image.shape == (2, 8, 8, 8), index
        assert label.shape == (1, 8, 8, 8), index
        # Every case voxel has label 2, so the voxels with label 0 are exactly the padding.
        inside = label[0] == 2
        assert int(inside.sum()) == 5 * 6 * 7, index
        assert set(np.unique(label).tolist()) == {0, 2}, index
        for channel in range(2):
            assert np.all(image[channel][~inside] == case.image[channel].min()), (index, channel)
            np.testing.assert_array_equal(image[channel][inside], case.image[channel].ravel())


def test_axis_padded_only_where_shorter():
    case = _case("thin", (20, 3, 20))
    dataset = PatchDataset([case], (8, 8, 8), length=2, seed=0)

    label = dataset[0]["label"].numpy()[0]

    assert label.shape == (8, 8, 8)
    assert int((label == 1).sum()) == 8 * 3 * 8


def test_cases_visited_equally():
    cases = [_case(name, (10, 10, 10)) for name in ("a", "b", "c")]
    dataset = PatchDataset(cases, (8, 8, 8), length=9, seed=5)

    counts = Counter(dataset[index]["case_id"] for index in range(9))

    assert counts == {"a": 3, "b": 3, "c": 3}


def test_empty_case_list_rejected():
    with pytest.raises(ValueError, match="at least one case"):
        PatchDataset([], (8, 8, 8), length=1, seed=0)

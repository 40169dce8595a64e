"""TorchIO MRI artifacts in DataLoader workers: reproducible per (seed, index), image only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augment import MRIArtifacts, build_worker_transform
from segment import PatchDataset
from segment.data import Case

ALL_ARTIFACTS = [
    {"motion": {"degrees": 5.0, "translation": 5.0, "p": 1.0}},
    {"ghosting": {"p": 1.0}},
    {"spike": {"intensity": [0.1, 0.3], "p": 1.0}},
    {"bias_field": {"p": 1.0}},
]


def make_image(shape: tuple[int, ...] = (1, 12, 12, 12)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 100.0


@pytest.mark.parametrize("entry", ALL_ARTIFACTS, ids=lambda e: next(iter(e)))
def test_same_seed_and_index_reproduce_output(entry):
    artifacts = MRIArtifacts.from_config([entry])
    image = make_image()

    first = artifacts(image, spacing=[1.0, 1.0, 2.0], seed=4, index=7)
    second = artifacts(image, spacing=[1.0, 1.0, 2.0], seed=4, index=7)

    assert torch.equal(first, second)
    assert not torch.equal(first, image), "the artifact left the image unchanged"


@pytest.mark.parametrize("entry", ALL_ARTIFACTS, ids=lambda e: next(iter(e)))
def test_other_index_or_seed_changes_output(entry):
    artifacts = MRIArtifacts.from_config([entry])
    image = make_image()

    reference = artifacts(image, spacing=[1.0, 1.0, 1.0], seed=4, index=7)
    other_index = artifacts(image, spacing=[1.0, 1.0, 1.0], seed=4, index=8)
    other_seed = artifacts(image, spacing=[1.0, 1.0, 1.0], seed=5, index=7)

    assert not torch.equal(reference, other_index)
    assert not torch.equal(reference, other_seed)


def test_global_random_state_is_restored():
    artifacts = MRIArtifacts.from_config(ALL_ARTIFACTS)
    state = torch.random.get_rng_state()

    artifacts(make_image(), spacing=[1.0, 1.0, 1.0], seed=0, index=0)

    assert torch.equal(torch.random.get_rng_state(), state)


def test_two_dimensional_image():
    artifacts = MRIArtifacts.from_config(ALL_ARTIFACTS)
    image = make_image((2, 16, 16))

    out = artifacts(image, spacing=[0.5, 0.5], seed=0, index=3)

    assert out.shape == image.shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_spacing_length_must_match_image():
    artifacts = MRIArtifacts.from_config(ALL_ARTIFACTS)

    with pytest.raises(ValueError, match=r"spacing must have 3 values for image shape \(1, 12, 12, 12\), got \[1.0, 1.0\]"):
        artifacts(make_image(), spacing=[1.0, 1.0], seed=0, index=0)


def make_case() -> Case:
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 20.0, size=(1, 20, 20, 20)).astype(np.float32)
    label = rng.integers(0, 3, size=(1, 20, 20, 20)).astype(np.int64)
    return Case("case", image, label, np.eye(4), np.array([1.0, 1.0, 1.5]))


def test_patch_dataset_hook_changes_image_only():
    plain = PatchDataset([make_case()], (8, 8, 8), length=4, seed=2)
    augmented = PatchDataset([make_case()], (8, 8, 8), length=4, seed=2, worker_transform=build_worker_transform({"worker_transforms": ALL_ARTIFACTS}))

    for index in range(4):
        before, after = plain[index], augmented[index]
        assert torch.equal(after["label"], before["label"]), index
        assert after["label"].dtype == before["label"].dtype, index
        assert after["image"].shape == before["image"].shape, index
        assert after["image"].dtype == torch.float32, index
        assert not torch.equal(after["image"], before["image"]), index
        assert torch.equal(augmented[index]["image"], after["image"]), index


def test_patch_dataset_without_hook_is_unchanged():
    dataset = PatchDataset([make_case()], (8, 8, 8), length=1, seed=2, worker_transform=build_worker_transform("none"))

    assert dataset.worker_transform is None
    assert dataset[0]["image"].dtype == torch.float32

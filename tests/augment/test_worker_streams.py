"""Random draws differ between samples, DataLoader workers and epochs, and a rerun repeats them.

Forked DataLoader workers start with copies of the same random state, so an
augmentation that draws from global state repeats itself in every worker. medaug
draws from generators derived from (run seed, epoch or step, sample index) instead.
The dataset contains 8 identical volumes, so every difference between items comes
from the augmentation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from augment import MRIArtifacts, Pipeline, RandomAffine, RandomGaussianNoise, derive_generator
from segment import PatchDataset
from segment.data import Case

CASES = 8
WORKERS = 4
RUN_SEED = 31

# PyTorch warns when there are more workers than CPU cores. The test needs several
# forked workers, not speed.
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker processes")


def rotation_and_noise() -> Pipeline:
    return Pipeline([RandomAffine(degrees=30), RandomGaussianNoise(std=(0.0, 0.2))])


class SampledParameters(Dataset):
    """Item ``i`` of ``epoch``: the rotation angles and noise std drawn for one of 8 identical volumes."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.pipeline = rotation_and_noise()

    def __len__(self) -> int:
        return CASES

    def __getitem__(self, index: int) -> torch.Tensor:
        batch = {"image": torch.zeros(1, 1, 8, 8, 8)}
        params = self.pipeline.sample(batch, derive_generator(RUN_SEED, self.epoch, index))
        return torch.cat([params[0]["radians"][0], params[1]["std"][0]])


def load(dataset: Dataset) -> torch.Tensor:
    """Return the items of ``dataset`` loaded by 4 worker processes with batch size 1, stacked in index order."""
    loader = DataLoader(dataset, batch_size=1, num_workers=WORKERS, shuffle=False)
    return torch.cat([item if isinstance(item, torch.Tensor) else item["image"] for item in loader])


def assert_pairwise_distinct(items: torch.Tensor) -> None:
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            assert not torch.equal(items[i], items[j]), f"items {i} and {j} received the same draw"


def test_sampled_parameters_differ_across_workers_and_epochs():
    first_epoch = load(SampledParameters(epoch=0))
    second_epoch = load(SampledParameters(epoch=1))

    assert first_epoch.shape == (CASES, 4)
    assert_pairwise_distinct(first_epoch)
    assert_pairwise_distinct(second_epoch)
    for index in range(CASES):
        assert not torch.equal(first_epoch[index], second_epoch[index]), f"item {index} repeats its draw in epoch 2"
    assert torch.equal(load(SampledParameters(epoch=0)), first_epoch)
    assert torch.equal(load(SampledParameters(epoch=1)), second_epoch)


def identical_cases() -> list[Case]:
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 20.0, size=(1, 12, 12, 12)).astype(np.float32)
    label = (image > 100.0).astype(np.int64)
    return [Case(f"case_{i}", image, label, np.eye(4), np.array([1.0, 1.0, 1.0])) for i in range(CASES)]


def test_worker_artifacts_differ_across_workers_and_passes():
    # The patch covers the whole case, so cropping adds no randomness. Items 0-7 are the
    # first pass over the cases and items 8-15 the second, which an epoch of a run is.
    artifacts = MRIArtifacts.from_config([{"motion": {"degrees": 10.0, "translation": 3.0, "p": 1.0}}, {"bias_field": {"p": 1.0}}])
    dataset = PatchDataset(identical_cases(), (12, 12, 12), length=2 * CASES, seed=RUN_SEED, worker_transform=artifacts)

    images = load(dataset)

    first_pass, second_pass = images[:CASES], images[CASES:]
    assert_pairwise_distinct(first_pass)
    assert_pairwise_distinct(second_pass)
    for index in range(CASES):
        assert not torch.equal(first_pass[index], second_pass[index]), f"item {index} repeats its artifacts in the second pass"
    assert torch.equal(load(dataset), images)


def test_batch_pipeline_draws_differ_per_sample_and_step():
    # Training augments each batch on the device with the generator of (run seed, step).
    pipeline = rotation_and_noise()
    batch = {"image": torch.zeros(CASES, 1, 8, 8, 8)}

    def draws(step: int) -> torch.Tensor:
        params = pipeline.sample(batch, derive_generator(RUN_SEED, step))
        return torch.cat([params[0]["radians"], params[1]["std"]], dim=1)

    step_0, step_1 = draws(0), draws(1)

    assert_pairwise_distinct(step_0)
    for index in range(CASES):
        assert not torch.equal(step_0[index], step_1[index]), f"sample {index} repeats its draw at the next step"
    assert torch.equal(draws(0), step_0)

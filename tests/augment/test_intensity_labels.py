"""Intensity transforms change only the image: labels and label-like entries stay bit-identical.

The batch carries an integer label map with classes {0, 1, 2} under ``label`` and a
float probability map in [0, 1] under ``probability``. Only ``image`` may change.
"""

from __future__ import annotations

import pytest
import torch

from augment import Pipeline, build_strategy, derive_generator

from .intensity_cases import ALWAYS_APPLIED

SEEDS = range(3)


def make_batch(label_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    image = torch.rand(1, 1, 8, 8, 8, generator=generator) * 100.0
    label = torch.randint(0, 3, (1, 1, 8, 8, 8), generator=generator).to(label_dtype)
    probability = torch.rand(1, 1, 8, 8, 8, generator=generator)
    return {"image": image, "label": label, "probability": probability, "spacing": torch.tensor([[1.0, 1.5, 2.0]])}


def check_labels_unchanged(out: dict, batch: dict) -> None:
    assert out["label"].dtype == batch["label"].dtype
    assert torch.equal(out["label"], batch["label"])
    assert out["probability"].dtype == batch["probability"].dtype
    assert torch.equal(out["probability"], batch["probability"])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("label_dtype", [torch.int64, torch.uint8], ids=["int64", "uint8"])
@pytest.mark.parametrize("name", sorted(ALWAYS_APPLIED))
def test_transform_keeps_labels(name, label_dtype, seed):
    batch = make_batch(label_dtype)
    label_before = batch["label"].clone()
    probability_before = batch["probability"].clone()

    out = Pipeline([ALWAYS_APPLIED[name]()])(batch, derive_generator(seed))

    check_labels_unchanged(out, batch)
    assert torch.equal(batch["label"], label_before), "the input label was modified in place"
    assert torch.equal(batch["probability"], probability_before), "the input probability map was modified in place"
    assert not torch.equal(out["image"], batch["image"]), "the transform left the image unchanged"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("label_dtype", [torch.int64, torch.uint8], ids=["int64", "uint8"])
def test_all_transforms_composed_keep_labels(label_dtype, seed):
    batch = make_batch(label_dtype)
    pipeline = Pipeline([factory() for factory in ALWAYS_APPLIED.values()])

    out = pipeline(batch, derive_generator(seed))

    check_labels_unchanged(out, batch)
    assert torch.isfinite(out["image"]).all()


def test_intensity_preset_keeps_labels():
    batch = make_batch(torch.int64)

    out = build_strategy("intensity")(batch, derive_generator(0))

    check_labels_unchanged(out, batch)

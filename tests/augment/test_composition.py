"""Compositions choose per sample and record the choice. Spatial children still fuse into one warp, and replay is exact."""

from __future__ import annotations

import pytest
import torch

import augment.pipeline
from augment import (
    OneOf,
    Pipeline,
    RandomAdditiveBrightness,
    RandomAffine,
    RandomFlip,
    RandomMultiplicativeBrightness,
    RandomRot90,
    SomeOf,
    TransformSequence,
    build_strategy,
    derive_generator,
)


def shift(value: float) -> RandomAdditiveBrightness:
    return RandomAdditiveBrightness(shift=(value, value))


def test_one_of_chooses_per_sample():
    image = torch.ones(64, 1, 2, 2)
    pipeline = Pipeline([OneOf([shift(1.0), RandomMultiplicativeBrightness(factor=(3.0, 3.0))])])

    out = pipeline({"image": image}, derive_generator(0))

    selected = out["augmentation"][0]["selected"]
    assert selected.shape == (64, 2)
    assert torch.equal(selected.sum(dim=1), torch.ones(64, dtype=torch.long))
    assert selected[:, 0].any(), "the first transform was never chosen"
    assert selected[:, 1].any(), "the second transform was never chosen"
    # The record shows which child acted: +1 gives 2.0, x3 gives 3.0.
    expected = torch.where(selected[:, 0], 2.0, 3.0).view(64, 1, 1, 1).expand(64, 1, 2, 2)
    assert torch.equal(out["image"], expected)


def test_one_of_weights_pick_only_positive():
    pipeline = Pipeline([OneOf([shift(1.0), shift(2.0)], weights=[0.0, 1.0])])

    out = pipeline({"image": torch.zeros(32, 1, 2, 2)}, derive_generator(0))

    assert not out["augmentation"][0]["selected"][:, 0].any()
    assert torch.equal(out["image"], torch.full((32, 1, 2, 2), 2.0))


def test_some_of_chooses_n_per_sample():
    image = torch.zeros(64, 1, 2, 2)
    pipeline = Pipeline([SomeOf([shift(1.0), shift(2.0), shift(4.0)], n=2)])

    out = pipeline({"image": image}, derive_generator(0))

    selected = out["augmentation"][0]["selected"]
    assert torch.equal(selected.sum(dim=1), torch.full((64,), 2))
    pairs = {tuple(row.tolist()) for row in selected}
    assert len(pairs) == 3, f"only the subsets {pairs} were chosen"
    expected = (selected.to(torch.float32) @ torch.tensor([1.0, 2.0, 4.0])).view(64, 1, 1, 1).expand(64, 1, 2, 2)
    assert torch.equal(out["image"], expected)


def test_some_of_range_of_counts():
    pipeline = Pipeline([SomeOf([shift(1.0), shift(2.0), shift(4.0)], n=(0, 3))])

    out = pipeline({"image": torch.zeros(128, 1, 1, 1)}, derive_generator(0))

    counts = set(out["augmentation"][0]["selected"].sum(dim=1).tolist())
    assert counts == {0, 1, 2, 3}


def test_sequence_applies_all_or_none():
    pipeline = Pipeline([TransformSequence([shift(1.0), shift(2.0)], p=0.5)])

    out = pipeline({"image": torch.zeros(64, 1, 1, 1)}, derive_generator(0))

    selected = out["augmentation"][0]["selected"]
    assert torch.equal(selected[:, 0], selected[:, 1])
    assert selected[:, 0].any()
    assert not selected[:, 0].all()
    assert torch.equal(out["image"].flatten(), torch.where(selected[:, 0], 3.0, 0.0))


def test_composition_probability_zero_keeps_image():
    image = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    pipeline = Pipeline([OneOf([shift(1.0), RandomFlip(p=1.0)], p=0.0)])

    out = pipeline({"image": image, "label": (image > 0).to(torch.int64)}, derive_generator(0))

    assert not out["augmentation"][0]["selected"].any()
    assert torch.equal(out["image"], image)


def test_nested_composition_masks_children():
    pipeline = Pipeline([OneOf([TransformSequence([shift(1.0), shift(2.0)]), shift(10.0)])])

    out = pipeline({"image": torch.zeros(64, 1, 1, 1)}, derive_generator(0))

    outer = out["augmentation"][0]["selected"]
    assert outer[:, 0].any()
    assert outer[:, 1].any()
    assert torch.equal(out["image"].flatten(), torch.where(outer[:, 0], 3.0, 10.0))


def index_batch(batch_size: int) -> dict[str, torch.Tensor]:
    index = torch.arange(64).reshape(1, 1, 4, 4, 4).repeat(batch_size, 1, 1, 1, 1)
    return {"image": index.to(torch.float32), "label": index % 3}


def test_one_of_spatial_children_fuse(monkeypatch):
    calls = []
    original_warp = augment.pipeline.warp

    def counting_warp(*args, **kwargs):
        calls.append(1)
        return original_warp(*args, **kwargs)

    monkeypatch.setattr(augment.pipeline, "warp", counting_warp)
    batch = index_batch(32)
    pipeline = Pipeline([OneOf([RandomFlip(axes=(0,), p=1.0), RandomRot90(axes=(1, 2), p=1.0)]), RandomFlip(axes=(2,), p=1.0)])

    out = pipeline(batch, derive_generator(0))

    assert len(calls) == 1
    selected = out["augmentation"][0]["selected"]
    quarter_turns = out["augmentation"][0]["children"][1]["quarter_turns"]
    assert selected[:, 0].any()
    assert selected[:, 1].any()
    for b in range(32):
        # Forward maps compose in listed order, so the last flip acts after the chosen child.
        volume = batch["image"][b, 0]
        if selected[b, 0]:
            expected = volume.flip(0)
        else:
            expected = torch.rot90(volume, int(quarter_turns[b]), dims=(1, 2))
        expected = expected.flip(2)
        assert torch.equal(out["image"][b, 0], expected), f"sample {b}"
        assert torch.equal(out["label"][b, 0], expected.to(torch.int64) % 3), f"sample {b}"


def test_warp_runs_before_intensity_transforms():
    # Translating by one voxel along both axes with zero padding empties the first row and
    # column. The shift is listed first but acts after the warp, so it raises them to 1.
    pipeline = Pipeline([shift(1.0), RandomAffine(translation=(1.0, 1.0), p=1.0)], image_padding="zeros")

    out = pipeline({"image": torch.ones(1, 1, 4, 4)}, derive_generator(0))

    expected = torch.full((4, 4), 2.0)
    expected[0, :] = 1.0
    expected[:, 0] = 1.0
    assert torch.equal(out["image"][0, 0], expected)


def full_batch() -> dict[str, torch.Tensor]:
    image = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    return {"image": image, "label": (image > 0.5).to(torch.int64), "spacing": torch.tensor([[1.0, 1.0, 2.0], [0.8, 0.8, 1.5]])}


def always_applied_all() -> Pipeline:
    """Return the "all" preset with every top-level probability set to 1."""
    config = build_strategy("all")
    for node in config.transforms:
        node.p = 1.0
    return config


def test_replay_is_bit_exact():
    batch = full_batch()
    pipeline = always_applied_all()

    out = pipeline(batch, derive_generator(3))
    replayed = pipeline.apply(batch, out["augmentation"])

    assert torch.equal(replayed["image"], out["image"])
    assert torch.equal(replayed["label"], out["label"])
    assert not torch.equal(out["image"], batch["image"])


def assert_same_parameters(first, second) -> None:
    if isinstance(first, torch.Tensor):
        assert torch.equal(first, second)
    elif isinstance(first, dict):
        assert first.keys() == second.keys()
        for key in first:
            assert_same_parameters(first[key], second[key])
    else:
        assert len(first) == len(second)
        for a, b in zip(first, second):
            assert_same_parameters(a, b)


@pytest.mark.parametrize("preset", ["intensity", "nnunet", "all"])
def test_same_seed_gives_same_output(preset):
    batch = full_batch()

    first = build_strategy(preset)(batch, derive_generator(9))
    second = build_strategy(preset)(batch, derive_generator(9))

    assert torch.equal(first["image"], second["image"])
    assert torch.equal(first["label"], second["label"])
    assert_same_parameters(first["augmentation"], second["augmentation"])


def test_different_seeds_give_different_output():
    batch = full_batch()
    pipeline = always_applied_all()

    first = pipeline(batch, derive_generator(1))
    second = pipeline(batch, derive_generator(2))

    assert not torch.equal(first["image"], second["image"])


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: OneOf([]), "OneOf needs at least one transform, got an empty list"),
        (lambda: OneOf([shift(1.0)], weights=[1.0, 2.0]), "weights must have one value per transform (1), got [1.0, 2.0]"),
        (lambda: OneOf([shift(1.0)], weights=[0.0]), "weights must be finite non-negative numbers with a positive sum, got [0.0]"),
        (lambda: SomeOf([shift(1.0)], n=2), "n must satisfy 0 <= min <= max <= 1 (the number of transforms), got 2"),
        (lambda: SomeOf([shift(1.0)], n=1.5), "n must be an integer or a (min, max) pair of integers, got 1.5"),
        (lambda: TransformSequence([shift(1.0)], p=-1), "p must be a probability in [0, 1], got -1"),
        (lambda: TransformSequence(["flip"]), "transforms[0] must be a spatial, intensity or composed transform, got 'flip'"),
    ],
    ids=["empty", "weights_length", "weights_zero", "n_too_large", "n_float", "p", "child_type"],
)
def test_invalid_composition_rejected(factory, message):
    with pytest.raises(ValueError) as raised:
        factory()

    assert str(raised.value) == message

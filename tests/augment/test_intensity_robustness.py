"""Thin, tiny and integer-typed images go through every intensity transform and MRI artifact."""

from __future__ import annotations

import pytest
import torch

from augment import ARTIFACTS, MRIArtifacts, Pipeline, derive_generator

from .intensity_cases import ALWAYS_APPLIED, IDENTITY

SHAPES = [(1, 1, 1, 16, 16), (1, 1, 2, 3, 4), (1, 1, 16, 16, 1)]
SHAPE_IDS = ["one_slice_axis_0", "2x3x4", "one_slice_axis_2"]
SEEDS = range(2)


def uint8_ramp() -> torch.Tensor:
    return torch.arange(32 * 32).reshape(1, 1, 32, 32).remainder(256).to(torch.uint8)


def int16_volume() -> torch.Tensor:
    return torch.randint(-1024, 1501, (1, 1, 8, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.int16)


INTEGER_IMAGES = {"uint8_ramp_2d": uint8_ramp, "int16_volume_3d": int16_volume}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", sorted(ALWAYS_APPLIED))
def test_transform_handles_small_shapes(name, shape, seed):
    image = torch.randn(shape, generator=torch.Generator().manual_seed(seed))

    out = Pipeline([ALWAYS_APPLIED[name]()])({"image": image}, derive_generator(seed))

    assert out["image"].shape == image.shape
    assert out["image"].dtype == torch.float32
    assert torch.isfinite(out["image"]).all()


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", sorted(ARTIFACTS))
def test_artifact_handles_small_shapes(name, shape):
    image = torch.rand(shape[1:], generator=torch.Generator().manual_seed(0))
    artifacts = MRIArtifacts.from_config([{name: {"p": 1.0}}])

    out = artifacts(image, spacing=[1.0, 1.0, 1.0], seed=0, index=0)

    assert out.shape == image.shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(ALWAYS_APPLIED))
@pytest.mark.parametrize("image_name", sorted(INTEGER_IMAGES))
def test_integer_image_gives_float_output(image_name, name, seed):
    image = INTEGER_IMAGES[image_name]()

    out = Pipeline([ALWAYS_APPLIED[name]()])({"image": image}, derive_generator(seed))

    assert out["image"].dtype == torch.float32
    assert out["image"].shape == image.shape
    assert torch.isfinite(out["image"]).all()


@pytest.mark.parametrize("name", sorted(IDENTITY))
@pytest.mark.parametrize("image_name", sorted(INTEGER_IMAGES))
def test_identity_configuration_keeps_values(image_name, name):
    image = INTEGER_IMAGES[image_name]()

    out = Pipeline([IDENTITY[name]()])({"image": image}, derive_generator(0))

    assert out["image"].dtype == torch.float32
    assert torch.equal(out["image"], image.to(torch.float32))


# Clipping to the 0th and 100th percentile is applied, but keeps every value.
@pytest.mark.parametrize("name", sorted(set(IDENTITY) - {"percentile_clip"}))
def test_identity_configuration_applies_nothing(name):
    transform = IDENTITY[name]()

    params = transform.sample((4, 2, 5, 5), torch.ones(4, 2, dtype=torch.float64), derive_generator(0))

    assert not params["applied"].any()


@pytest.mark.parametrize("image_name", sorted(INTEGER_IMAGES))
def test_integer_image_through_direct_apply(image_name):
    image = INTEGER_IMAGES[image_name]()
    transform = ALWAYS_APPLIED["multiplicative_brightness"]()
    params = transform.sample(tuple(image.shape), torch.ones(1, image.ndim - 2, dtype=torch.float64), derive_generator(0))

    out = transform.apply(image, params)

    expected = image.to(torch.float32) * params["factor"].to(torch.float32).reshape(1, 1, *(1,) * (image.ndim - 2))
    assert out.dtype == torch.float32
    assert torch.equal(out, expected)


@pytest.mark.parametrize("value", [0.0, 7.0, -1024.0])
@pytest.mark.parametrize("name", sorted(ALWAYS_APPLIED))
def test_constant_image_stays_finite(name, value):
    image = torch.full((2, 1, 6, 7, 8), value)

    out = Pipeline([ALWAYS_APPLIED[name]()])({"image": image}, derive_generator(0))

    assert out["image"].dtype == torch.float32
    assert torch.isfinite(out["image"]).all()

"""Normalisation gives exact values on small inputs and finite values on constant images and empty masks."""

from __future__ import annotations

import pytest
import torch

from augment import MinMaxNormalize, PercentileClip, Pipeline, ZScoreNormalize, derive_generator

CONSTANT_IMAGES = {
    "sevens_3d": lambda: torch.full((1, 1, 4, 4, 4), 7.0),
    "zeros_3d": lambda: torch.zeros(1, 1, 4, 4, 4),
    "minus_1024_2d": lambda: torch.full((1, 1, 8, 8), -1024.0),
}


def normalise(transform, image: torch.Tensor) -> torch.Tensor:
    return Pipeline([transform])({"image": image}, derive_generator(0))["image"]


@pytest.mark.parametrize("image_name", sorted(CONSTANT_IMAGES))
@pytest.mark.parametrize("mask", ["none", "nonzero"])
def test_zscore_of_constant_is_zero(mask, image_name):
    image = CONSTANT_IMAGES[image_name]()

    out = normalise(ZScoreNormalize(mask=mask), image)

    assert out.shape == image.shape
    assert torch.isfinite(out).all()
    assert torch.equal(out, torch.zeros_like(image))


@pytest.mark.parametrize("image_name", sorted(CONSTANT_IMAGES))
def test_minmax_of_constant_is_zero(image_name):
    image = CONSTANT_IMAGES[image_name]()

    out = normalise(MinMaxNormalize(), image)

    assert torch.isfinite(out).all()
    assert torch.equal(out, torch.zeros_like(image))


@pytest.mark.parametrize("image_name", sorted(CONSTANT_IMAGES))
def test_percentile_clip_keeps_constant(image_name):
    image = CONSTANT_IMAGES[image_name]()

    out = normalise(PercentileClip(lower=1.0, upper=99.0), image)

    assert torch.equal(out, image)


def test_zscore_empty_mask_uses_all_voxels():
    # Channel 0 has no nonzero voxel, so its statistics fall back to every voxel (all 0).
    image = torch.zeros(1, 2, 2, 2)
    image[0, 1] = torch.tensor([[0.0, 0.0], [2.0, 4.0]])

    out = normalise(ZScoreNormalize(mask="nonzero"), image)

    assert torch.isfinite(out).all()
    assert torch.equal(out[0, 0], torch.zeros(2, 2))
    # Channel 1: statistics of [2, 4] are mean 3 and std 1, and masked-out voxels stay 0.
    assert torch.equal(out[0, 1], torch.tensor([[0.0, 0.0], [-1.0, 1.0]]))


def test_zscore_global_values():
    image = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    std = (1.25) ** 0.5

    out = normalise(ZScoreNormalize(), image)

    expected = (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / std
    torch.testing.assert_close(out.flatten(), expected, rtol=0.0, atol=1e-6)


def test_zscore_is_per_sample_and_channel():
    image = torch.stack([torch.arange(8.0), 10.0 * torch.arange(8.0) + 5.0]).reshape(1, 2, 2, 4)

    out = normalise(ZScoreNormalize(), image)

    torch.testing.assert_close(out[0, 0], out[0, 1], rtol=0.0, atol=1e-6)
    torch.testing.assert_close(out.flatten(2).mean(dim=-1), torch.zeros(1, 2), rtol=0.0, atol=1e-6)
    torch.testing.assert_close(out.flatten(2).std(dim=-1, correction=0), torch.ones(1, 2), rtol=0.0, atol=1e-6)


def test_minmax_values():
    image = torch.tensor([2.0, 4.0, 6.0, 3.0]).reshape(1, 1, 2, 2)

    out = normalise(MinMaxNormalize(), image)

    assert torch.equal(out.flatten(), torch.tensor([0.0, 0.5, 1.0, 0.25]))


def test_percentile_clip_matches_torch_quantile():
    image = torch.randn(1, 1, 9, 11, generator=torch.Generator().manual_seed(3))
    low, high = torch.quantile(image.flatten(), torch.tensor([0.1, 0.9]))

    out = normalise(PercentileClip(lower=10.0, upper=90.0), image)

    torch.testing.assert_close(out.amin(), low, rtol=0.0, atol=1e-6)
    torch.testing.assert_close(out.amax(), high, rtol=0.0, atol=1e-6)
    inside = (image > low) & (image < high)
    assert torch.equal(out[inside], image[inside])


def test_percentile_clip_ramp_values():
    image = torch.arange(101.0).reshape(1, 1, 101, 1)

    out = normalise(PercentileClip(lower=10.0, upper=90.0), image)

    assert torch.equal(out.flatten(), image.flatten().clamp(10.0, 90.0))


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: ZScoreNormalize(mask="brain"), "mask must be one of ('none', 'nonzero'), got 'brain'"),
        (lambda: PercentileClip(lower=-1.0), "lower must be a percentile in [0, 100], got -1.0"),
        (lambda: PercentileClip(upper=101), "upper must be a percentile in [0, 100], got 101"),
        (lambda: PercentileClip(lower=60.0, upper=40.0), "lower must not exceed upper, got lower=60.0 and upper=40.0"),
        (lambda: MinMaxNormalize(p=2.0), "p must be a probability in [0, 1], got 2.0"),
    ],
    ids=["zscore_mask", "clip_lower", "clip_upper", "clip_order", "minmax_p"],
)
def test_invalid_argument_rejected(factory, message):
    with pytest.raises(ValueError) as raised:
        factory()

    assert str(raised.value) == message

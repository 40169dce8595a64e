"""Gaussian smoothing of the elastic control grid keeps displacements within max_displacement."""

from __future__ import annotations

import pytest
import torch

from augment import RandomElastic, StrategyError, build_strategy

SHAPES = {"2d": (40, 30), "3d": (20, 16, 12)}


def sample_coarse(transform: RandomElastic, shape, seed: int, batch_size: int = 6) -> torch.Tensor:
    spacing = torch.ones(batch_size, len(shape), dtype=torch.float64)
    return transform.sample(batch_size, shape, spacing, torch.Generator().manual_seed(seed))["coarse_displacement"]


def roughness(coarse: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring control points, over all axes."""
    ndim = coarse.ndim - 2
    return torch.stack([coarse.diff(dim=2 + axis).abs().mean() for axis in range(ndim)]).mean()


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("shape_name", sorted(SHAPES))
def test_smoothed_field_stays_within_max_displacement(shape_name, sigma):
    shape = SHAPES[shape_name]
    limits = (3.0, 1.0, 2.0)[: len(shape)]
    transform = RandomElastic(max_displacement=limits, control_points=5, smoothing_sigma=sigma)

    params = sample_coarse(transform, shape, seed=1)
    field = transform.displacement({"coarse_displacement": params}, shape)

    for axis, limit in enumerate(limits):
        assert field[:, axis].abs().max() <= limit + 1e-9, f"axis {axis} moves beyond {limit} mm"


@pytest.mark.parametrize("shape_name", sorted(SHAPES))
def test_smoothing_keeps_peak_of_raw_draw(shape_name):
    # Both transforms draw the same random numbers from the same seed.
    shape = SHAPES[shape_name]
    raw = sample_coarse(RandomElastic(max_displacement=2.0, control_points=6), shape, seed=2)
    smoothed = sample_coarse(RandomElastic(max_displacement=2.0, control_points=6, smoothing_sigma=1.0), shape, seed=2)

    raw_peak = raw.abs().flatten(2).amax(dim=2)
    smoothed_peak = smoothed.abs().flatten(2).amax(dim=2)

    torch.testing.assert_close(smoothed_peak, raw_peak, rtol=1e-12, atol=0.0)
    assert roughness(smoothed) < 0.7 * roughness(raw), "smoothing did not make neighbouring control points more alike"


def test_zero_sigma_draws_previous_parameters():
    shape = SHAPES["3d"]
    default = sample_coarse(RandomElastic(max_displacement=2.0), shape, seed=3)
    unsmoothed = sample_coarse(RandomElastic(max_displacement=2.0, smoothing_sigma=0.0), shape, seed=3)

    assert torch.equal(default, unsmoothed)


def test_smoothing_keeps_unapplied_samples_at_zero():
    transform = RandomElastic(max_displacement=2.0, smoothing_sigma=1.0, p=0.5)

    coarse = sample_coarse(transform, SHAPES["2d"], seed=4, batch_size=16)

    peaks = coarse.abs().flatten(1).amax(dim=1)
    assert (peaks == 0).any(), "no sample was left undeformed at p=0.5"
    assert (peaks > 0).any(), "no sample was deformed at p=0.5"


@pytest.mark.parametrize("sigma", [-1.0, float("nan")])
def test_invalid_smoothing_sigma_is_rejected(sigma):
    with pytest.raises(ValueError, match="smoothing_sigma"):
        RandomElastic(smoothing_sigma=sigma)


def test_strategy_accepts_smoothing_sigma():
    pipeline = build_strategy({"transforms": [{"elastic": {"max_displacement": 1.5, "smoothing_sigma": 0.8}}]})

    (elastic,) = pipeline.spatial
    assert elastic.smoothing_sigma == 0.8


def test_strategy_rejects_negative_smoothing_sigma():
    with pytest.raises(StrategyError, match="smoothing_sigma"):
        build_strategy({"transforms": [{"elastic": {"smoothing_sigma": -0.5}}]})

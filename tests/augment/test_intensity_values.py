"""Intensity transforms give known values on small inputs, per sample and per channel."""

from __future__ import annotations

import math

import pytest
import torch

from augment import (
    Pipeline,
    RandomAdditiveBrightness,
    RandomBiasField,
    RandomContrast,
    RandomGamma,
    RandomGaussianBlur,
    RandomGaussianNoise,
    RandomLowResolution,
    RandomMultiplicativeBrightness,
    RandomRicianNoise,
    derive_generator,
)


def run(transform, image: torch.Tensor, seed: int = 0) -> dict:
    return Pipeline([transform])({"image": image}, derive_generator(seed))


def row(values: list[float]) -> torch.Tensor:
    """Return a ``(1, 1, 1, N)`` 2D image holding ``values``."""
    return torch.tensor(values).reshape(1, 1, 1, -1)


def test_multiplicative_brightness_values():
    out = run(RandomMultiplicativeBrightness(factor=(2.0, 2.0)), row([0.0, 1.5, -3.0]))

    assert torch.equal(out["image"], row([0.0, 3.0, -6.0]))


def test_additive_brightness_values():
    out = run(RandomAdditiveBrightness(shift=(0.5, 0.5)), row([0.0, 1.5, -3.0]))

    assert torch.equal(out["image"], row([0.5, 2.0, -2.5]))


def test_contrast_keeps_mean():
    # Mean 1.5: deviations [-1.5, -0.5, 0.5, 1.5] double.
    out = run(RandomContrast(factor=(2.0, 2.0), preserve_range=False), row([0.0, 1.0, 2.0, 3.0]))

    assert torch.equal(out["image"], row([-1.5, 0.5, 2.5, 4.5]))


def test_contrast_preserve_range_clips():
    out = run(RandomContrast(factor=(2.0, 2.0), preserve_range=True), row([0.0, 1.0, 2.0, 3.0]))

    assert torch.equal(out["image"], row([0.0, 0.5, 2.5, 3.0]))


def test_gamma_values():
    # Range [0, 4]: ((x / 4) ** 2) * 4.
    out = run(RandomGamma(gamma=(2.0, 2.0), retain_stats=False), row([0.0, 1.0, 2.0, 3.0, 4.0]))

    torch.testing.assert_close(out["image"], row([0.0, 0.25, 1.0, 2.25, 4.0]), rtol=0.0, atol=1e-6)


def test_inverted_gamma_values():
    # Negated values [0, -1, -2, -3, -4] have minimum -4 and range 4, so the power acts on the bright end.
    out = run(RandomGamma(gamma=(2.0, 2.0), invert=True, retain_stats=False), row([0.0, 1.0, 2.0, 3.0, 4.0]))

    torch.testing.assert_close(out["image"], row([0.0, 1.75, 3.0, 3.75, 4.0]), rtol=0.0, atol=1e-6)


@pytest.mark.parametrize("invert", [False, True])
def test_gamma_retains_mean_and_std(invert):
    image = torch.rand(3, 2, 6, 7, generator=torch.Generator().manual_seed(1)) * 5.0 - 1.0

    out = run(RandomGamma(gamma=(0.6, 1.6), invert=invert, retain_stats=True, per_channel=True), image)

    assert not torch.equal(out["image"], image)
    torch.testing.assert_close(out["image"].flatten(2).mean(-1), image.flatten(2).mean(-1), rtol=0.0, atol=1e-5)
    torch.testing.assert_close(out["image"].flatten(2).std(-1), image.flatten(2).std(-1), rtol=0.0, atol=1e-5)


def test_bias_field_values():
    # Order 1 in 2D: log field = c * x + c * y with x, y in {-1, 0, 1} on a 3x3 grid.
    out = run(RandomBiasField(coefficients=(0.5, 0.5), order=1), torch.ones(1, 1, 3, 3))

    coordinate = torch.tensor([-1.0, 0.0, 1.0])
    expected = torch.exp(0.5 * (coordinate[:, None] + coordinate[None, :]))
    torch.testing.assert_close(out["image"][0, 0], expected, rtol=1e-6, atol=0.0)


def test_low_resolution_values():
    # Columns 0..3 keep every other value under nearest-exact (columns 1 and 3), then linear
    # interpolation with align_corners=False returns [1, 1.5, 2.5, 3].
    image = torch.tensor([0.0, 1.0, 2.0, 3.0]).expand(2, 4).reshape(1, 1, 2, 4)

    out = run(RandomLowResolution(scale=(0.5, 0.5)), image)

    expected = torch.tensor([1.0, 1.5, 2.5, 3.0]).expand(2, 4).reshape(1, 1, 2, 4)
    assert torch.equal(out["image"], expected)


def test_gaussian_noise_statistics():
    out = run(RandomGaussianNoise(std=(0.1, 0.1)), torch.zeros(2, 1, 64, 64))

    noise = out["image"]
    assert abs(float(noise.mean())) < 0.01
    assert abs(float(noise.std()) - 0.1) < 0.01
    assert not torch.equal(noise[0], noise[1]), "two samples received the same noise field"


def test_rician_noise_of_zero_image():
    # The magnitude of complex Gaussian noise is Rayleigh distributed with mean std * sqrt(pi / 2).
    out = run(RandomRicianNoise(std=(0.1, 0.1)), torch.zeros(1, 1, 128, 128))

    assert (out["image"] >= 0).all()
    assert abs(float(out["image"].mean()) - 0.1 * math.sqrt(math.pi / 2)) < 0.005


def test_probability_decides_per_sample():
    image = torch.zeros(64, 1, 2, 2)

    out = run(RandomAdditiveBrightness(shift=(1.0, 1.0), p=0.5), image)

    applied = out["augmentation"][0]["applied"][:, 0]
    assert applied.any()
    assert not applied.all()
    assert torch.equal(out["image"][applied], torch.ones(int(applied.sum()), 1, 2, 2))
    assert torch.equal(out["image"][~applied], torch.zeros(int((~applied).sum()), 1, 2, 2))


def test_probability_per_channel_decides_per_channel():
    image = torch.zeros(16, 4, 2, 2)

    out = run(RandomAdditiveBrightness(shift=(1.0, 1.0), p_per_channel=0.5), image)

    applied = out["augmentation"][0]["applied"]
    mixed = applied.any(dim=1) & ~applied.all(dim=1)
    assert mixed.any(), "no sample has both changed and unchanged channels"
    assert torch.equal(out["image"][:, :, 0, 0], applied.to(torch.float32))


def test_per_channel_draws_differ_between_channels():
    out = run(RandomMultiplicativeBrightness(factor=(0.5, 1.5), per_channel=True), torch.ones(1, 3, 2, 2))

    factor = out["augmentation"][0]["factor"][0]
    assert len(set(factor.tolist())) == 3
    torch.testing.assert_close(out["image"][0, :, 0, 0], factor.to(torch.float32), rtol=0.0, atol=0.0)


def test_shared_draw_is_same_for_channels():
    out = run(RandomMultiplicativeBrightness(factor=(0.5, 1.5), per_channel=False), torch.ones(1, 3, 2, 2))

    factor = out["augmentation"][0]["factor"][0]
    assert len(set(factor.tolist())) == 1


def test_split_at_one_balances_factors():
    transform = RandomGamma(gamma=(0.5, 3.0), split_at_one=True)

    gamma = transform.sample((2000, 1, 2, 2), torch.ones(2000, 2, dtype=torch.float64), derive_generator(0))["gamma"]

    below = float((gamma < 1).to(torch.float64).mean())
    assert 0.45 < below < 0.55, f"{below:.3f} of the exponents are below 1"


def test_uniform_factors_without_split():
    transform = RandomGamma(gamma=(0.5, 3.0), split_at_one=False)

    gamma = transform.sample((2000, 1, 2, 2), torch.ones(2000, 2, dtype=torch.float64), derive_generator(0))["gamma"]

    below = float((gamma < 1).to(torch.float64).mean())
    # Uniform over [0.5, 3]: P(gamma < 1) = 0.5 / 2.5 = 0.2.
    assert 0.15 < below < 0.25, f"{below:.3f} of the exponents are below 1"


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: RandomGaussianNoise(std=-0.1), "std must be non-negative when given as one number, got -0.1"),
        (lambda: RandomRicianNoise(std=(0.2, 0.1)), "std must have min <= max, got (0.2, 0.1)"),
        (lambda: RandomGamma(gamma=(0.0, 1.5)), "gamma must be greater than 0.0, got (0.0, 1.5)"),
        (lambda: RandomGamma(invert="yes"), "invert must be true or false, got 'yes'"),
        (lambda: RandomMultiplicativeBrightness(factor=(1, 2, 3)), "factor must be a number or a (min, max) pair, got (1, 2, 3)"),
        (lambda: RandomAdditiveBrightness(shift=float("nan")), "shift must be finite, got nan"),
        (lambda: RandomContrast(factor=(-0.5, 1.0)), "factor must be at least 0.0, got (-0.5, 1.0)"),
        (lambda: RandomGaussianBlur(units="cm"), "units must be one of ('mm', 'voxel'), got 'cm'"),
        (lambda: RandomBiasField(order=0), "order must be an integer of at least 1, got 0"),
        (lambda: RandomLowResolution(scale=(0.5, 1.5)), "scale must be at most 1.0, got (0.5, 1.5)"),
        (lambda: RandomLowResolution(scale=0.0), "scale must be greater than 0.0, got 0.0"),
        (lambda: RandomLowResolution(downsample_mode="cubic"), "downsample_mode must be one of ('nearest', 'linear'), got 'cubic'"),
        (lambda: RandomGaussianNoise(p=1.5), "p must be a probability in [0, 1], got 1.5"),
        (lambda: RandomGaussianBlur(p_per_channel=-0.1), "p_per_channel must be a probability in [0, 1], got -0.1"),
    ],
    ids=[
        "noise_std",
        "rician_order",
        "gamma_zero",
        "gamma_invert",
        "brightness_length",
        "shift_nan",
        "contrast_negative",
        "blur_units",
        "bias_order",
        "lowres_above_one",
        "lowres_zero",
        "lowres_mode",
        "p",
        "p_per_channel",
    ],
)
def test_invalid_argument_rejected(factory, message):
    with pytest.raises(ValueError) as raised:
        factory()

    assert str(raised.value) == message


def test_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        RandomGaussianNoise((0.0, 0.1))

"""Batched intensity transforms against TorchIO's per-image versions, and Rician noise against SciPy.

Where TorchIO has the same transform, both get the same parameters and the outputs
are compared value by value. Noise is random in both, so it is compared in
distribution with a two-sample Kolmogorov-Smirnov test. Every seed is fixed, so
each test gives the same p-value on every run. The power checks show that noise
5 to 10 % louder is detected at the same sample size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
import torchio as tio

from augment import (
    MinMaxNormalize,
    PercentileClip,
    Pipeline,
    RandomBiasField,
    RandomGamma,
    RandomGaussianBlur,
    RandomGaussianNoise,
    RandomRicianNoise,
    ZScoreNormalize,
    derive_generator,
)

# A test of matching distributions fails below this p-value. The power checks need
# their mismatched distribution to fall below POWER_P_VALUE at the same sample size.
SAME_DISTRIBUTION_P_VALUE = 0.01
POWER_P_VALUE = 1e-3


def run(transforms: list, image: torch.Tensor, spacing: tuple[float, ...] | None = None) -> torch.Tensor:
    batch = {"image": image}
    if spacing is not None:
        batch["spacing"] = torch.tensor([spacing] * image.shape[0], dtype=torch.float64)
    return Pipeline(transforms)(batch, derive_generator(0))["image"]


def random_volume(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(seed))


def torchio_noise(image: torch.Tensor, std: float, seed: int) -> np.ndarray:
    noisy = tio.Noise(mean=0.0, std=std, seed=seed)(tio.ScalarImage(tensor=image[0])).data
    return (noisy - image[0]).flatten().numpy()


def test_gaussian_noise_matches_torchio_distribution():
    image = torch.zeros(1, 1, 32, 32, 32)

    ours = (run([RandomGaussianNoise(std=(0.1, 0.1))], image) - image).flatten().numpy()

    theirs = torchio_noise(image, 0.1, seed=1)
    assert scipy.stats.ks_2samp(ours, theirs).pvalue > SAME_DISTRIBUTION_P_VALUE
    # 32768 values estimate a standard deviation to about 0.4 %.
    assert ours.std() == pytest.approx(0.1, rel=0.015)
    assert abs(float(ours.mean())) < 0.003
    louder = torchio_noise(image, 0.11, seed=2)
    assert scipy.stats.ks_2samp(ours, louder).pvalue < POWER_P_VALUE, "the test cannot tell a 10 % louder noise apart"


def test_noise_std_draws_are_uniform_like_torchio():
    # TorchIO's RandomNoise draws its standard deviation uniformly from its range, once per image.
    transform = RandomGaussianNoise(std=(0.02, 0.1))

    std = transform.sample((2000, 1, 2, 2), torch.ones(2000, 2, dtype=torch.float64), derive_generator(0))["std"][:, 0]

    uniform = scipy.stats.uniform(loc=0.02, scale=0.08)
    assert scipy.stats.kstest(std.numpy(), uniform.cdf).pvalue > SAME_DISTRIBUTION_P_VALUE
    narrower = scipy.stats.uniform(loc=0.02, scale=0.07)
    assert scipy.stats.kstest(std.numpy(), narrower.cdf).pvalue < POWER_P_VALUE


def test_rician_noise_matches_scipy_rice():
    # The magnitude of a signal v with complex Gaussian noise of standard deviation s
    # follows the Rice distribution with shape v / s and scale s.
    signal, std = 0.2, 0.1
    image = torch.full((1, 1, 32, 32, 32), signal)

    ours = run([RandomRicianNoise(std=(std, std))], image).flatten().numpy()

    assert scipy.stats.kstest(ours, scipy.stats.rice(b=signal / std, scale=std).cdf).pvalue > SAME_DISTRIBUTION_P_VALUE
    louder = scipy.stats.rice(b=signal / (1.05 * std), scale=1.05 * std)
    assert scipy.stats.kstest(ours, louder.cdf).pvalue < POWER_P_VALUE


@pytest.mark.parametrize("gamma", [0.6, 1.7])
def test_gamma_matches_torchio(gamma):
    # TorchIO raises the raw values to the power gamma. medaug rescales each sample to
    # [0, 1] first, which changes nothing for an image whose minimum is 0 and maximum 1.
    image = torch.rand(1, 1, 8, 9, 10, generator=torch.Generator().manual_seed(3))
    image.view(-1)[0] = 0.0
    image.view(-1)[1] = 1.0

    ours = run([RandomGamma(gamma=(gamma, gamma), retain_stats=False)], image)

    theirs = tio.Gamma(gamma=gamma)(tio.ScalarImage(tensor=image[0])).data
    # The rescaling divides by a range of exactly 1, so only float32 power rounding differs.
    torch.testing.assert_close(ours[0], theirs, rtol=0.0, atol=1e-6)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_bias_field_matches_torchio(order):
    # Both use every monomial of the voxel coordinates scaled to [-1, 1], in the same
    # order. TorchIO's list starts with the constant term, which medaug leaves out, so
    # TorchIO gets 0 for it.
    image = torch.rand(1, 1, 9, 8, 7, generator=torch.Generator().manual_seed(4)) + 0.5
    transform = RandomBiasField(coefficients=0.4, order=order)
    params = transform.sample(tuple(image.shape), torch.ones(1, 3, dtype=torch.float64), derive_generator(4))

    ours = transform.apply(image, params)

    coefficients = [0.0] + params["coefficients"][0, 0].tolist()
    theirs = tio.BiasField(coefficients=coefficients, order=order)(tio.ScalarImage(tensor=image[0])).data
    # TorchIO sums the polynomial in float64 and medaug in float32: the fields differ by
    # about 1e-7 relative, on values up to 1.5 times exp(3 * 0.4 * order).
    torch.testing.assert_close(ours[0], theirs, rtol=1e-5, atol=0.0)
    assert not torch.equal(ours, image), "the bias field left the image unchanged"


def test_zscore_matches_torchio_up_to_bessel_correction():
    # medaug divides by the population standard deviation, as nnU-Net v2 does; TorchIO's
    # ZNormalization by the sample one (torch.std's default). They differ by sqrt((n - 1) / n).
    image = random_volume((8, 9, 10), seed=5) * 3.0 + 5.0
    count = image.numel()

    ours = run([ZScoreNormalize()], image)

    theirs = tio.ZNormalization()(tio.ScalarImage(tensor=image[0])).data
    torch.testing.assert_close(ours[0] * math.sqrt((count - 1) / count), theirs, rtol=0.0, atol=1e-5)


def test_masked_zscore_matches_torchio_inside_mask():
    # With a nonzero mask TorchIO normalises every voxel by the statistics inside the mask,
    # and medaug keeps the voxels outside it at 0. The voxels inside must agree.
    image = random_volume((8, 9, 10), seed=6) * 2.0 + 1.0
    image[..., :3] = 0.0
    inside = image[0] != 0
    count = int(inside.sum())

    ours = run([ZScoreNormalize(mask="nonzero")], image)

    theirs = tio.ZNormalization(masking_method=lambda tensor: tensor != 0)(tio.ScalarImage(tensor=image[0])).data
    torch.testing.assert_close(ours[0][inside] * math.sqrt((count - 1) / count), theirs[inside], rtol=0.0, atol=1e-5)
    assert torch.equal(ours[0][~inside], torch.zeros(int((~inside).sum())))


def test_minmax_matches_torchio_rescale():
    image = random_volume((8, 9, 10), seed=7)

    ours = run([MinMaxNormalize()], image)

    theirs = tio.RescaleIntensity(out_min_max=(0, 1))(tio.ScalarImage(tensor=image[0])).data
    torch.testing.assert_close(ours[0], theirs, rtol=0.0, atol=1e-6)


@pytest.mark.parametrize("percentiles", [(0.5, 99.5), (2.0, 97.0)])
def test_percentile_clip_and_minmax_match_torchio_rescale(percentiles):
    # RescaleIntensity with percentiles clips to NumPy's linearly interpolated
    # percentiles and rescales the clipped image to [0, 1].
    image = random_volume((8, 9, 10), seed=8)

    ours = run([PercentileClip(lower=percentiles[0], upper=percentiles[1]), MinMaxNormalize()], image)

    theirs = tio.RescaleIntensity(out_min_max=(0, 1), percentiles=percentiles)(tio.ScalarImage(tensor=image[0])).data
    torch.testing.assert_close(ours[0], theirs, rtol=0.0, atol=1e-6)


def test_blur_in_mm_matches_torchio_blur():
    # 1 mm at spacing (1, 2, 0.5) mm is sigma (1, 0.5, 2) voxels. For these sigmas
    # SciPy's kernel radius int(4 * sigma + 0.5) equals medaug's ceil(4 * sigma), so the
    # kernels are the same. SciPy reflects the border about the edge of the last voxel
    # and Kornia about its centre, so voxels within one radius of a border are left out.
    spacing = (1.0, 2.0, 0.5)
    image = random_volume((20, 18, 32), seed=9)

    ours = run([RandomGaussianBlur(sigma=(1.0, 1.0), units="mm")], image, spacing=spacing)

    theirs = tio.Blur(std=(1.0, 1.0, 1.0))(tio.ScalarImage(tensor=image[0], affine=np.diag([*spacing, 1.0]))).data
    interior = (slice(None), slice(4, -4), slice(2, -2), slice(8, -8))
    torch.testing.assert_close(ours[0][interior], theirs[interior], rtol=0.0, atol=1e-5)

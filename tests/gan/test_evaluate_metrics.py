"""Masked SSIM, PSNR and MAE in a stated intensity range, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gan.errors import GanError
from gan.evaluate import default_intensity_range, image_metrics, masked_mae, masked_psnr, masked_ssim


def random_image(shape=(32, 32), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=shape)


def test_psnr_of_known_mse():
    real = random_image() * 0.5
    synthetic = real + 0.1  # MSE 0.01 with data range 1: PSNR = 10 * log10(1 / 0.01) = 20 dB
    assert masked_psnr(synthetic, real, None, (0.0, 1.0)) == pytest.approx(20.0, abs=1e-9)


def test_psnr_uses_the_stated_range():
    real = np.zeros((16, 16))
    synthetic = np.full((16, 16), 10.0)  # MSE 100 with data range 3000: 10 * log10(3000 ** 2 / 100)
    assert masked_psnr(synthetic, real, None, (-1000.0, 2000.0)) == pytest.approx(10 * math.log10(3000.0**2 / 100.0))


def test_mae_of_known_difference():
    real = np.zeros((4, 4, 3))
    synthetic = real.copy()
    synthetic[0] = 0.4  # 12 of 48 voxels differ by 0.4
    assert masked_mae(synthetic, real, None, (0.0, 1.0)) == pytest.approx(0.1)


def test_values_outside_range_are_clipped():
    real = np.full((4, 4), 1.0)
    synthetic = np.full((4, 4), 5.0)
    assert masked_mae(synthetic, real, None, (0.0, 1.0)) == 0.0


def test_metrics_only_inside_mask():
    real = random_image()
    synthetic = real.copy()
    synthetic[:, 16:] = random_image(seed=1)[:, 16:]
    mask = np.zeros(real.shape, dtype=bool)
    # Columns 0..10 lie at least 6 pixels from the changed half, beyond the
    # Gaussian SSIM window's radius of 5 pixels.
    mask[:, :11] = True

    assert masked_mae(synthetic, real, mask, (0.0, 1.0)) == 0.0
    assert masked_psnr(synthetic, real, mask, (0.0, 1.0)) == math.inf
    assert masked_ssim(synthetic, real, mask, (0.0, 1.0)) == pytest.approx(1.0, abs=1e-12)
    assert masked_ssim(synthetic, real, None, (0.0, 1.0)) < 0.9
    assert masked_mae(synthetic, real, None, (0.0, 1.0)) > 0.1


@pytest.mark.parametrize("mode, shape", [("2d", (16, 16, 5)), ("3d", (16, 16, 12)), ("2d", (16, 16))])
def test_ssim_of_identical_images_is_one(mode, shape):
    volume = random_image(shape)
    assert masked_ssim(volume, volume.copy(), None, (0.0, 1.0), mode=mode) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_constant_images():
    # With zero variance SSIM reduces to the luminance term (2 a b + C1) / (a^2 + b^2 + C1),
    # C1 = (0.01 * data_range)^2 = 1e-4 for the range [0, 1].
    synthetic = np.full((16, 16), 0.2)
    real = np.full((16, 16), 0.4)
    expected = (2 * 0.2 * 0.4 + 1e-4) / (0.2**2 + 0.4**2 + 1e-4)
    assert masked_ssim(synthetic, real, None, (0.0, 1.0)) == pytest.approx(expected, rel=1e-9)


def test_ssim_two_dimensional_mode_compares_slices():
    real = random_image((16, 16, 2))
    synthetic = real.copy()
    synthetic[..., 1] = random_image((16, 16), seed=3)
    mask = np.zeros(real.shape, dtype=bool)
    mask[..., 0] = True
    # Slice 0 is identical, and per-slice SSIM does not see slice 1.
    assert masked_ssim(synthetic, real, mask, (0.0, 1.0), mode="2d") == pytest.approx(1.0, abs=1e-12)


def test_image_metrics_returns_all_three():
    real = random_image()
    metrics = image_metrics(real + 0.1, real, None, (0.0, 2.0))
    assert set(metrics) == {"ssim", "psnr", "mae"}
    assert metrics["mae"] == pytest.approx(0.1)


def test_small_images_are_rejected_for_ssim():
    with pytest.raises(GanError, match="at least 11 voxels"):
        masked_ssim(np.zeros((8, 8)), np.zeros((8, 8)), None, (0.0, 1.0))
    with pytest.raises(GanError, match="at least 11 voxels"):
        masked_ssim(np.zeros((16, 16, 4)), np.zeros((16, 16, 4)), None, (0.0, 1.0), mode="3d")


def test_invalid_inputs_are_rejected():
    with pytest.raises(GanError, match="low < high"):
        masked_mae(np.zeros((4, 4)), np.zeros((4, 4)), None, (1.0, 1.0))
    with pytest.raises(GanError, match="co-registered"):
        masked_mae(np.zeros((4, 4)), np.zeros((4, 5)), None, (0.0, 1.0))
    with pytest.raises(GanError, match="mask is empty"):
        masked_mae(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4), dtype=bool), (0.0, 1.0))


def test_default_range_from_output_mapping():
    assert default_intensity_range({"intensity": {"name": "ct", "low": -1000.0, "high": 2000.0}}) == (-1000.0, 2000.0)
    assert default_intensity_range({"intensity": {"name": "zscore", "limit": 5.0}}) == (-5.0, 5.0)
    assert default_intensity_range({"intensity": {"name": "mr", "lower": 0.5, "upper": 99.5, "low": 3.0, "high": 900.0}}) is None
    assert default_intensity_range({}) is None

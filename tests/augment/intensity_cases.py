"""Every intensity transform in an always-applied and in an identity configuration, shared by the tests."""

from __future__ import annotations

from augment import (
    MinMaxNormalize,
    PercentileClip,
    RandomAdditiveBrightness,
    RandomBiasField,
    RandomContrast,
    RandomGamma,
    RandomGaussianBlur,
    RandomGaussianNoise,
    RandomLowResolution,
    RandomMultiplicativeBrightness,
    RandomRicianNoise,
    ZScoreNormalize,
)

# p=1 and strengths that change every input, so a test can check that the transform acted.
ALWAYS_APPLIED = {
    "gaussian_noise": lambda: RandomGaussianNoise(std=(0.05, 0.1), p=1.0),
    "rician_noise": lambda: RandomRicianNoise(std=(0.05, 0.1), per_channel=True, p=1.0),
    "gamma": lambda: RandomGamma(gamma=(0.5, 0.8), p=1.0),
    "gamma_inverted": lambda: RandomGamma(gamma=(1.2, 2.0), invert=True, retain_stats=False, p=1.0),
    "multiplicative_brightness": lambda: RandomMultiplicativeBrightness(factor=(1.1, 1.3), p=1.0),
    "additive_brightness": lambda: RandomAdditiveBrightness(shift=(0.1, 0.2), p=1.0),
    "contrast": lambda: RandomContrast(factor=(1.2, 1.5), preserve_range=False, p=1.0),
    "contrast_preserve_range": lambda: RandomContrast(factor=(1.2, 1.5), preserve_range=True, p=1.0),
    "gaussian_blur_mm": lambda: RandomGaussianBlur(sigma=(0.8, 1.5), p=1.0),
    "gaussian_blur_voxel_per_axis": lambda: RandomGaussianBlur(sigma=(0.5, 1.0), units="voxel", per_axis=True, p=1.0),
    "bias_field": lambda: RandomBiasField(coefficients=(0.2, 0.5), order=3, p=1.0),
    "low_resolution_nearest": lambda: RandomLowResolution(scale=(0.3, 0.6), p=1.0),
    "low_resolution_linear_per_axis": lambda: RandomLowResolution(scale=(0.3, 0.6), downsample_mode="linear", per_axis=True, p=1.0),
    "zscore": lambda: ZScoreNormalize(p=1.0),
    "zscore_nonzero": lambda: ZScoreNormalize(mask="nonzero", p=1.0),
    "percentile_clip": lambda: PercentileClip(lower=5.0, upper=95.0, p=1.0),
    "minmax": lambda: MinMaxNormalize(p=1.0),
}

# Configurations that must return the input values: zero strength, factors of
# exactly 1, the full percentile range, or p=0 for deterministic transforms.
IDENTITY = {
    "gaussian_noise": lambda: RandomGaussianNoise(std=0.0, p=1.0),
    "rician_noise": lambda: RandomRicianNoise(std=0.0, p=1.0),
    "gamma": lambda: RandomGamma(gamma=(1.0, 1.0), p=1.0),
    "gamma_inverted": lambda: RandomGamma(gamma=(1.0, 1.0), invert=True, p=1.0),
    "multiplicative_brightness": lambda: RandomMultiplicativeBrightness(factor=0.0, p=1.0),
    "additive_brightness": lambda: RandomAdditiveBrightness(shift=0.0, p=1.0),
    "contrast": lambda: RandomContrast(factor=0.0, p=1.0),
    "gaussian_blur": lambda: RandomGaussianBlur(sigma=0.0, p=1.0),
    "bias_field": lambda: RandomBiasField(coefficients=0.0, p=1.0),
    "low_resolution": lambda: RandomLowResolution(scale=(1.0, 1.0), p=1.0),
    "zscore": lambda: ZScoreNormalize(p=0.0),
    "percentile_clip": lambda: PercentileClip(lower=0.0, upper=100.0, p=1.0),
    "minmax": lambda: MinMaxNormalize(p=0.0),
}

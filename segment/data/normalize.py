"""Per-volume intensity normalisation."""

from __future__ import annotations

import numpy as np


def normalize_intensity(image: np.ndarray, *, lower_percentile: float = 0.5, upper_percentile: float = 99.5) -> np.ndarray:
    """Clip each channel to its own percentiles, then z-score it; returns ``float32``.

    Args:
        image: ``(C, *S)`` array of any real dtype (uint8, int16, float32, ...).
        lower_percentile: lower clipping percentile, in percent.
        upper_percentile: upper clipping percentile, in percent.

    Each volume and channel is scaled on its own because intensity ranges of
    the same modality can differ by orders of magnitude between cases.
    Statistics are computed in float64, so maxima around 1e6 lose no precision.
    A constant channel becomes all zeros instead of NaN.
    """
    out = np.empty(image.shape, dtype=np.float32)
    for channel in range(image.shape[0]):
        values = image[channel].astype(np.float64)
        low, high = np.percentile(values, [lower_percentile, upper_percentile])
        values = np.clip(values, low, high)
        mean, std = values.mean(), values.std()
        out[channel] = 0.0 if std < 1e-8 * max(1.0, abs(mean)) else (values - mean) / std
    return out

"""Intensity normalisation of image batches: z-score, percentile clipping and min-max.

Statistics are computed per sample and channel. Every transform returns finite
values for constant images and empty masks: a constant image becomes all 0.0
under z-score and min-max, and percentile clipping leaves it unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .intensity import IntensityTransform, check_choice

__all__ = ["MinMaxNormalize", "PercentileClip", "ZScoreNormalize"]

MASK_MODES = ("none", "nonzero")

# Lower bound of the standard deviation that z-scoring divides by, as nnU-Net v2's
# ZScoreNormalization uses max(std, 1e-8).
_MIN_STD = 1e-8


class _NormalizeTransform(IntensityTransform):
    """Deterministic transform: only the probability ``p`` is random."""

    def __init__(self, *, p: float) -> None:
        super().__init__(p=p, p_per_channel=1.0)


class ZScoreNormalize(_NormalizeTransform):
    """Subtract the mean and divide by the standard deviation, per sample and channel.

    Args:
        mask: ``"none"`` uses every voxel. ``"nonzero"`` computes the statistics
            from voxels whose value is not 0 and keeps the other voxels at 0, as
            nnU-Net v2 does with ``use_mask_for_norm``. A sample and channel with no
            nonzero voxel uses every voxel instead.
        p: probability of normalising a sample.

    The standard deviation is the population one, bounded below by 1e-8. A sample
    and channel whose values (inside the mask) are all equal becomes 0.0.
    """

    def __init__(self, *, mask: str = "none", p: float = 1.0) -> None:
        super().__init__(p=p)
        self.mask = check_choice(mask, "mask", MASK_MODES)

    def _transform(self, image, params, spacing, applied):
        flat = image.flatten(2)
        if self.mask == "nonzero":
            inside = flat != 0
            empty = ~inside.any(dim=-1, keepdim=True)
            inside = inside | empty
        else:
            inside = torch.ones_like(flat, dtype=torch.bool)

        count = inside.sum(dim=-1, keepdim=True).to(flat.dtype)
        mean = torch.where(inside, flat, 0.0).sum(dim=-1, keepdim=True) / count
        centred = flat - mean
        variance = torch.where(inside, centred.square(), 0.0).sum(dim=-1, keepdim=True) / count
        std = variance.sqrt().clamp(min=_MIN_STD)

        # Compare the extreme values rather than the variance, so a constant image is
        # recognised exactly even when its mean is not representable.
        largest = torch.where(inside, flat, -torch.inf).amax(dim=-1, keepdim=True)
        smallest = torch.where(inside, flat, torch.inf).amin(dim=-1, keepdim=True)
        constant = largest == smallest

        out = torch.where(constant, 0.0, centred / std)
        out = torch.where(inside, out, 0.0)
        return out.reshape(image.shape)


def _percentiles(flat: Tensor, percents: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Per-row percentiles of ``(B, C, N)`` values with linear interpolation between order statistics.

    This matches ``torch.quantile(..., interpolation="linear")``, which rejects
    inputs of more than 2**24 values, hence the explicit sort.
    """
    ordered = flat.sort(dim=-1).values
    last = ordered.shape[-1] - 1
    results = []
    for percent in percents:
        position = percent / 100.0 * last
        below = int(position)
        above = min(below + 1, last)
        weight = position - below
        results.append(ordered[..., below : below + 1] * (1.0 - weight) + ordered[..., above : above + 1] * weight)
    return results[0], results[1]


class PercentileClip(_NormalizeTransform):
    """Clip each sample and channel to its ``lower`` and ``upper`` percentiles.

    Args:
        lower: lower percentile in percent, in [0, 100].
        upper: upper percentile in percent, in [lower, 100].
        p: probability of clipping a sample.
    """

    def __init__(self, *, lower: float = 0.5, upper: float = 99.5, p: float = 1.0) -> None:
        super().__init__(p=p)
        for name, value in (("lower", lower), ("upper", upper)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 100.0:
                raise ValueError(f"{name} must be a percentile in [0, 100], got {value!r}")
        if lower > upper:
            raise ValueError(f"lower must not exceed upper, got lower={lower!r} and upper={upper!r}")
        self.lower = float(lower)
        self.upper = float(upper)

    def _transform(self, image, params, spacing, applied):
        flat = image.flatten(2)
        low, high = _percentiles(flat, (self.lower, self.upper))
        return torch.minimum(torch.maximum(flat, low), high).reshape(image.shape)


class MinMaxNormalize(_NormalizeTransform):
    """Rescale each sample and channel linearly to [0, 1], mapping a constant image to 0.0.

    Args:
        p: probability of rescaling a sample.
    """

    def __init__(self, *, p: float = 1.0) -> None:
        super().__init__(p=p)

    def _transform(self, image, params, spacing, applied):
        flat = image.flatten(2)
        minimum = flat.amin(dim=-1, keepdim=True)
        value_range = flat.amax(dim=-1, keepdim=True) - minimum
        out = (flat - minimum) / torch.where(value_range > 0, value_range, 1.0)
        return out.clamp(0.0, 1.0).reshape(image.shape)

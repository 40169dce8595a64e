"""Whole-volume and sliding-window prediction with padding, Gaussian weighting and flip test-time augmentation.

Every function takes images ``(B, C, *S)`` of any spatial size and returns a
prediction for exactly ``S``: inputs are padded at their ends and predictions
cropped back, never resized. The model runs as it is, so call ``model.eval()``
first. A model that returns a list (deep supervision in training mode) is read
through its first, full-resolution output.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _pad_at_end(image: Tensor, target_shape: Sequence[int], value: float | None) -> tuple[Tensor, tuple[slice, ...]]:
    shape = image.shape[2:]
    pad: list[int] = []
    for size, target in zip(reversed(shape), reversed(target_shape)):
        pad += [0, target - size]
    fill = float(image.min()) if value is None else value
    crop = (slice(None), slice(None)) + tuple(slice(0, n) for n in shape)
    if not any(pad):
        return image, crop
    return F.pad(image, pad, value=fill), crop


def pad_to_multiple(image: Tensor, divisor: int, *, value: float | None = None) -> tuple[Tensor, tuple[slice, ...]]:
    """Pad the spatial axes of ``(B, C, *S)`` at their ends up to multiples of ``divisor``.

    Args:
        image: batch to pad.
        divisor: every spatial size becomes a multiple of this.
        value: fill; ``None`` uses the minimum of the whole batch, which is
            background for normalised images.

    Returns:
        The padded batch and the slices that crop a prediction back to ``S``.
    """
    padded = [math.ceil(n / divisor) * divisor for n in image.shape[2:]]
    return _pad_at_end(image, padded, value)


def pad_to_size(image: Tensor, size: Sequence[int], *, value: float | None = None) -> tuple[Tensor, tuple[slice, ...]]:
    """Pad the spatial axes of ``(B, C, *S)`` at their ends so that each is at least ``size``.

    Axes already at least as large are left unchanged. ``value`` and the
    returned crop are as in ``pad_to_multiple``.
    """
    target = [max(n, minimum) for n, minimum in zip(image.shape[2:], size)]
    return _pad_at_end(image, target, value)


def _main_output(model: nn.Module, image: Tensor) -> Tensor:
    output = model(image)
    if isinstance(output, (list, tuple)):
        return output[0]
    return output


@torch.no_grad()
def predict_logits(model: nn.Module, image: Tensor, divisor: int) -> Tensor:
    """Logits ``(B, K, *S)`` for images ``(B, C, *S)`` of any size: pad, predict, crop."""
    padded, crop = pad_to_multiple(image, divisor)
    return _main_output(model, padded)[crop]


def gaussian_importance_map(
    patch_size: Sequence[int], *, sigma_scale: float = 0.125, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Weights of shape ``patch_size`` that fall off from the patch centre as a Gaussian, with maximum 1.

    The standard deviation along each axis is ``sigma_scale`` times the patch
    size along it (1/8 by default, as in nnU-Net v2's ``compute_gaussian``).
    The centre is the midpoint ``(n - 1) / 2``, so the map is exactly symmetric
    under a flip of any axis, and for even sizes the central voxels share the
    maximum. nnU-Net centres at ``n // 2`` instead. Zeros from underflow are
    raised to the smallest positive weight, so every voxel keeps some weight.
    """
    if not sigma_scale > 0:
        raise ValueError(f"sigma_scale must be positive, got {sigma_scale}")
    weights = torch.ones((), dtype=torch.float64)
    for size in patch_size:
        position = torch.arange(size, dtype=torch.float64)
        sigma = size * sigma_scale
        profile = torch.exp(-((position - (size - 1) / 2) ** 2) / (2 * sigma**2))
        weights = weights[..., None] * profile
    weights = weights / weights.max()
    weights = weights.clamp_min(weights[weights > 0].min())
    return weights.to(device=device, dtype=dtype)


def flip_axes_sets(spatial_dims: int) -> list[tuple[int, ...]]:
    """Return every subset of the spatial axes ``2 .. spatial_dims + 1``, the empty one (no flip) first."""
    axes = range(2, 2 + spatial_dims)
    return [subset for count in range(spatial_dims + 1) for subset in itertools.combinations(axes, count)]


def _flip_averaged_probabilities(model: nn.Module, image: Tensor, flip_tta: bool) -> Tensor:
    """Softmax of the model output, averaged over all axis flips when ``flip_tta`` is set."""
    axes_sets = flip_axes_sets(image.ndim - 2) if flip_tta else [()]
    total = None
    for axes in axes_sets:
        flipped = image.flip(axes) if axes else image
        probabilities = _main_output(model, flipped).float().softmax(dim=1)
        if axes:
            probabilities = probabilities.flip(axes)
        total = probabilities if total is None else total + probabilities
    return total / len(axes_sets)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Return the start indices of windows of length ``patch`` that cover ``size`` voxels.

    Neighbouring windows overlap by at least ``overlap`` times the patch, and
    the windows are spread evenly from 0 to ``size - patch``. A ``size`` that
    is not larger than ``patch`` gets one window at 0.
    """
    if size <= patch:
        return [0]
    step = patch * (1.0 - overlap)
    count = math.ceil((size - patch) / step) + 1
    spread = (size - patch) / (count - 1)
    return [round(index * spread) for index in range(count)]


def _sliding_window_probabilities(
    model: nn.Module, image: Tensor, divisor: int, patch_size: Sequence[int], overlap: float, sigma_scale: float, flip_tta: bool
) -> Tensor:
    patch = tuple(int(size) for size in patch_size)
    if len(patch) != image.ndim - 2:
        raise ValueError(f"patch_size {list(patch_size)} must have one size per spatial axis of the image shape {tuple(image.shape)}")
    if any(size < 1 or size % divisor for size in patch):
        raise ValueError(f"patch_size {list(patch)} must be positive multiples of the model's divisor {divisor}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")

    padded, crop = pad_to_size(image, patch)
    spatial = padded.shape[2:]
    importance = gaussian_importance_map(patch, sigma_scale=sigma_scale, device=image.device)
    starts = [window_starts(size, length, overlap) for size, length in zip(spatial, patch)]

    summed = None
    weight_sum = torch.zeros(spatial, device=image.device, dtype=torch.float32)
    for corner in itertools.product(*starts):
        window = tuple(slice(start, start + length) for start, length in zip(corner, patch))
        probabilities = _flip_averaged_probabilities(model, padded[(slice(None), slice(None), *window)], flip_tta)
        if summed is None:
            summed = probabilities.new_zeros((*probabilities.shape[:2], *spatial))
        summed[(slice(None), slice(None), *window)] += probabilities * importance
        weight_sum[window] += importance

    return (summed / weight_sum)[crop]


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    image: Tensor,
    divisor: int,
    *,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    sigma_scale: float = 0.125,
    flip_tta: bool = False,
) -> Tensor:
    """Softmax probabilities ``(B, K, *S)`` for images ``(B, C, *S)`` of any size.

    Args:
        model: network whose input sizes must be multiples of ``divisor``.
        image: batch to predict.
        divisor: the model's ``divisor``.
        patch_size: ``None`` predicts the whole volume at once, padded to
            multiples of ``divisor``. Otherwise windows of this size (each a
            multiple of ``divisor``) slide over the volume, padded at its ends
            up to the patch where smaller, and overlapping predictions are
            averaged with ``gaussian_importance_map`` weights.
        overlap: fraction of the patch that neighbouring windows share at
            least, in ``[0, 1)``.
        sigma_scale: Gaussian standard deviation as a fraction of the patch.
        flip_tta: average the softmax over all ``2 ** len(S)`` combinations
            of flipped spatial axes, each flipped back before averaging.
    """
    if patch_size is None:
        padded, crop = pad_to_multiple(image, divisor)
        return _flip_averaged_probabilities(model, padded, flip_tta)[crop]
    return _sliding_window_probabilities(model, image, divisor, patch_size, overlap, sigma_scale, flip_tta)


def predict_labels(
    model: nn.Module,
    image: Tensor,
    divisor: int,
    *,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    sigma_scale: float = 0.125,
    flip_tta: bool = False,
) -> Tensor:
    """Integer label maps ``(B, *S)``: the argmax of the prediction.

    Without ``patch_size`` and ``flip_tta`` this is the argmax of
    ``predict_logits``. Otherwise it is the argmax of ``predict_probabilities``
    with the same arguments.
    """
    if patch_size is None and not flip_tta:
        return predict_logits(model, image, divisor).argmax(dim=1)
    probabilities = predict_probabilities(
        model, image, divisor, patch_size=patch_size, overlap=overlap, sigma_scale=sigma_scale, flip_tta=flip_tta
    )
    return probabilities.argmax(dim=1)

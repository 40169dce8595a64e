"""2D slices of 3D volumes: slice stacks with neighbouring slices as channels, and slice-wise prediction.

A 2D model trained on slices along ``axis`` receives, for slice ``k``, the image
slices ``k - context .. k + context`` stacked as channels, offset first: channel
``o * C + c`` is image channel ``c`` of slice ``k - context + o``. Neighbours
beyond the first or last slice repeat the edge slice. ``axis`` counts the
spatial axes of the volume, so ``axis=2`` of a ``(C, X, Y, Z)`` image gives
``(X, Y)`` slices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .inference import pad_to_multiple, predict_labels


def slice_channels(in_channels: int, context: int) -> int:
    """Input channels of a 2D model that receives ``context`` neighbouring slices on each side."""
    return in_channels * (2 * context + 1)


def neighbour_indices(size: int, index: int | Tensor, context: int) -> np.ndarray | Tensor:
    """Slice indices ``index - context .. index + context`` clamped to ``[0, size - 1]``.

    ``index`` may be an int (returns a NumPy array of ``2 * context + 1`` indices)
    or a 1D tensor of slice indices (returns a ``(N, 2 * context + 1)`` tensor).
    """
    if isinstance(index, Tensor):
        offsets = torch.arange(-context, context + 1, device=index.device)
        return (index[:, None] + offsets[None]).clamp(0, size - 1)
    return np.clip(np.arange(index - context, index + context + 1), 0, size - 1)


def slice_stack(image: np.ndarray, axis: int, index: int, context: int) -> np.ndarray:
    """Slice ``index`` along spatial ``axis`` of a ``(C, *S)`` image with its neighbours as channels.

    Returns:
        ``(C * (2 * context + 1), *S without axis)``, channels ordered as the module docstring describes.
    """
    moved = np.moveaxis(image, axis + 1, 0)
    neighbours = moved[neighbour_indices(moved.shape[0], index, context)]
    return neighbours.reshape(-1, *neighbours.shape[2:])


def volume_to_slices(image: Tensor, axis: int, context: int) -> Tensor:
    """Every slice of a ``(C, *S)`` volume along ``axis`` as a batch ``(N, C * (2 * context + 1), *S2)``."""
    moved = image.movedim(axis + 1, 0)
    count = moved.shape[0]
    indices = neighbour_indices(count, torch.arange(count, device=image.device), context)
    stacked = moved[indices]
    return stacked.reshape(count, -1, *stacked.shape[3:])


@torch.no_grad()
def predict_slices(
    model: nn.Module,
    image: Tensor,
    divisor: int,
    *,
    axis: int,
    context: int = 0,
    slices_per_batch: int = 32,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    flip_tta: bool = False,
) -> Tensor:
    """Predict label maps ``(B, *S)`` of 3D volumes ``(B, C, *S)`` with a 2D model, slice by slice.

    Args:
        model: 2D network with ``C * (2 * context + 1)`` input channels.
        image: batch of 3D volumes.
        divisor: the model's ``divisor``.
        axis: spatial axis the slices are taken along (0, 1 or 2).
        context: neighbouring slices on each side, as in training.
        slices_per_batch: slices passed to the model at once; the result does
            not depend on it, because every slice is padded with the volume's
            minimum before it is split into batches.
        patch_size, overlap, flip_tta: in-plane sliding window and flip
            test-time augmentation, as in ``predict_labels``.
    """
    if image.ndim != 5:
        raise ValueError(f"predict_slices needs volumes (B, C, X, Y, Z), got shape {tuple(image.shape)}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    if slices_per_batch < 1:
        raise ValueError(f"slices_per_batch must be at least 1, got {slices_per_batch}")

    results = []
    for volume in image:
        slices = volume_to_slices(volume, axis, context)
        # One fill value for the whole volume, so splitting into batches changes nothing.
        padded, crop = pad_to_multiple(slices, divisor, value=float(volume.min()))
        labels = torch.cat(
            [
                predict_labels(model, padded[start : start + slices_per_batch], divisor, patch_size=patch_size, overlap=overlap, flip_tta=flip_tta)
                for start in range(0, padded.shape[0], slices_per_batch)
            ]
        )
        results.append(labels[crop[1:]].movedim(0, axis))
    return torch.stack(results)


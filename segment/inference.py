"""Whole-volume prediction for networks that need sizes divisible by a fixed number."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
    shape = image.shape[2:]
    padded = [math.ceil(n / divisor) * divisor for n in shape]
    pad: list[int] = []
    for size, target in zip(reversed(shape), reversed(padded)):
        pad += [0, target - size]
    fill = float(image.min()) if value is None else value
    crop = (slice(None), slice(None)) + tuple(slice(0, n) for n in shape)
    if not any(pad):
        return image, crop
    return F.pad(image, pad, value=fill), crop


@torch.no_grad()
def predict_logits(model: nn.Module, image: Tensor, divisor: int) -> Tensor:
    """Logits ``(B, K, *S)`` for images ``(B, C, *S)`` of any size: pad, predict, crop."""
    padded, crop = pad_to_multiple(image, divisor)
    return model(padded)[crop]


def predict_labels(model: nn.Module, image: Tensor, divisor: int) -> Tensor:
    """Integer label maps ``(B, *S)``: the argmax of ``predict_logits``."""
    return predict_logits(model, image, divisor).argmax(dim=1)

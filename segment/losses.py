"""Segmentation losses on logits ``(B, K, *S)`` and integer targets ``(B, 1, *S)`` or ``(B, *S)``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def _target_indices(target: Tensor, logits: Tensor) -> Tensor:
    """Return the ``(B, *S)`` class indices of a ``(B, 1, *S)`` or ``(B, *S)`` target.

    The layout is determined by comparing the number of dimensions with the
    logits, because a ``(B, *S)`` target whose first spatial size is 1 has the
    shape of a ``(B, 1, *S)`` target.
    """
    if target.ndim != logits.ndim:
        return target
    if target.shape[1] != 1:
        raise ValueError(
            f"target shape {tuple(target.shape)} has {target.shape[1]} channels; "
            "expected class indices of shape (B, 1, *S) or (B, *S), not one-hot"
        )
    return target[:, 0]


class DiceLoss(nn.Module):
    """One minus the soft Dice of the foreground classes, per sample and class, then averaged.

    Computing Dice per sample (not pooled over the batch) keeps small structures
    in one sample from being swamped by large ones in another. ``smooth`` keeps
    classes absent from both prediction and target at a loss near 0.
    """

    def __init__(self, *, include_background: bool = False, smooth: float = 1e-5) -> None:
        super().__init__()
        self.include_background = include_background
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target = _target_indices(target, logits).long()
        probabilities = logits.softmax(dim=1)
        onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(probabilities.dtype)
        if not self.include_background:
            probabilities, onehot = probabilities[:, 1:], onehot[:, 1:]
        dims = tuple(range(2, logits.ndim))
        intersection = (probabilities * onehot).sum(dims)
        total = probabilities.sum(dims) + onehot.sum(dims)
        dice = (2 * intersection + self.smooth) / (total + self.smooth)
        return 1.0 - dice.mean()


class DiceCELoss(nn.Module):
    """Sum of ``DiceLoss`` and cross-entropy, each with weight one (as nnU-Net does)."""

    def __init__(self, *, dice_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice = DiceLoss()
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        indices = _target_indices(target, logits).long()
        return self.dice_weight * self.dice(logits, indices) + self.ce_weight * F.cross_entropy(logits, indices)


__all__ = ["DiceCELoss", "DiceLoss"]

"""Segmentation losses on logits ``(B, K, *S)`` and integer targets ``(B, 1, *S)`` or ``(B, *S)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TARGET_DOWNSAMPLING = ("nearest", "max")


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


def deep_supervision_weights(count: int) -> list[float]:
    """Return weights ``1, 1/2, 1/4, ...`` for ``count`` outputs, finest first, normalised to sum 1.

    nnU-Net v2 (``nnUNetTrainer._build_loss``) halves the weights the same way
    but also sets the coarsest one to 0. Pass explicit weights to
    ``DeepSupervisionLoss`` to reproduce that.
    """
    if count < 1:
        raise ValueError(f"deep supervision needs at least one output, got {count}")
    raw = [0.5**index for index in range(count)]
    return [weight / sum(raw) for weight in raw]


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of a loss over the outputs of a deeply supervised network.

    Args:
        loss: loss on one output, called as ``loss(logits, target)``.
        weights: one weight per output, finest first, normalised to sum 1.
            ``None`` uses ``deep_supervision_weights``, which halves per output.
        target_downsampling: how the target reaches an output of lower
            resolution. ``"nearest"`` takes the nearest voxel, which for an
            integer factor ``f`` is the slice ``target[..., ::f]``. ``"max"``
            max-pools the class indices over each ``f``-window, which keeps
            thin structures at low resolution. It equals max-pooling the
            one-hot channels and keeping the highest class present, so it
            suits labels whose higher indices are nested inside lower ones.

    A single tensor is passed to ``loss`` unchanged, so one instance serves
    networks with and without deep supervision. A list is weighted per
    output. Outputs at the target's resolution (as UNet++ returns them) use
    the target as it is. Outputs of lower resolution get a downsampled target.
    """

    def __init__(self, loss: nn.Module, *, weights: Sequence[float] | None = None, target_downsampling: str = "nearest") -> None:
        super().__init__()
        if target_downsampling not in TARGET_DOWNSAMPLING:
            raise ValueError(f"target_downsampling must be one of {TARGET_DOWNSAMPLING}, got {target_downsampling!r}")
        if weights is not None and (any(weight < 0 for weight in weights) or sum(weights) <= 0):
            raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
        self.loss = loss
        self.weights = None if weights is None else [weight / sum(weights) for weight in weights]
        self.target_downsampling = target_downsampling

    def forward(self, outputs: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        if isinstance(outputs, Tensor):
            return self.loss(outputs, target)

        weights = deep_supervision_weights(len(outputs)) if self.weights is None else self.weights
        if len(weights) != len(outputs):
            raise ValueError(f"got {len(outputs)} outputs but {len(weights)} deep supervision weights")

        total = outputs[0].new_zeros(())
        for weight, output in zip(weights, outputs):
            # Zero-weight outputs are skipped, so they need no target of their size.
            if weight == 0:
                continue
            total = total + weight * self.loss(output, self.resize_target(target, output))
        return total

    def resize_target(self, target: Tensor, output: Tensor) -> Tensor:
        """Return ``target`` as ``(B, *S_out)`` class indices at the spatial size of ``output``."""
        indices = _target_indices(target, output)
        source_shape = tuple(indices.shape[1:])
        output_shape = tuple(output.shape[2:])
        if source_shape == output_shape:
            return indices
        if len(source_shape) != len(output_shape) or any(out > src for out, src in zip(output_shape, source_shape)):
            raise ValueError(f"output spatial shape {output_shape} must not exceed the target's {source_shape}")

        as_float = indices[:, None].to(torch.float32)
        if self.target_downsampling == "nearest":
            resized = F.interpolate(as_float, size=output_shape, mode="nearest")
        else:
            if any(src % out for src, out in zip(source_shape, output_shape)):
                raise ValueError(f"max-pooling needs the target shape {source_shape} to be a multiple of the output shape {output_shape}")
            factors = [src // out for src, out in zip(source_shape, output_shape)]
            pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[len(output_shape)]
            resized = pool(as_float, kernel_size=factors, stride=factors)
        return resized[:, 0].to(indices.dtype)


__all__ = ["DeepSupervisionLoss", "DiceCELoss", "DiceLoss", "deep_supervision_weights"]

"""Invert the spatial part of an augmentation on predictions, and test-time augmentation built on it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .pipeline import NodeParameters, Pipeline
from .warp import warp


def invert_spatial(pipeline: Pipeline, predictions: Tensor, params: Sequence[NodeParameters], spacing: Tensor | None = None) -> Tensor:
    """Map predictions made on augmented images back onto the grid of the original images.

    Args:
        pipeline: the pipeline that produced ``params``.
        predictions: ``(B, K, *S)`` floating-point maps, e.g. softmax probabilities.
        params: parameters recorded by that pipeline (``batch["augmentation"]``).
        spacing: ``(B, D)`` voxel spacing in millimetres; 1 mm when ``None``.

    Returns:
        ``(B, K, *S)`` maps; voxels that the augmentation had moved out of the
        field of view are 0.

    Raises:
        ValueError: when a sample was deformed elastically, because an elastic
            displacement field has no exact inverse.
    """
    batch_size, ndim = predictions.shape[0], predictions.ndim - 2
    fields = pipeline._displacement(params, predictions) or []
    if any(bool(field.abs().amax() > 0) for field in fields):
        raise ValueError("cannot invert an elastic deformation exactly; use a strategy without elastic transforms for test-time augmentation")
    if spacing is None:
        spacing = torch.ones(batch_size, ndim, dtype=torch.float64)
    forward = pipeline.forward_matrices(params, batch_size, ndim)
    # warp samples its input at forward^-1(x); sampling the prediction at forward(x) undoes the augmentation.
    inverted, _ = warp(predictions, None, spacing.to(torch.float64).cpu(), torch.linalg.inv(forward), image_padding="zeros")
    return inverted


def tta_predict(
    predict: Callable[[Tensor], Tensor],
    batch: Mapping[str, Any],
    pipeline: Pipeline,
    *,
    draws: int,
    generator: torch.Generator,
) -> Tensor:
    """Average ``predict`` over the original batch and ``draws`` augmented copies mapped back.

    Args:
        predict: maps images ``(B, C, *S)`` to probabilities ``(B, K, *S)``.
        batch: mapping with ``image`` and optionally ``spacing``.
        pipeline: augmentation whose spatial part must be invertible (no elastic).
        draws: number of augmented copies.
        generator: source of the augmentation parameters.

    Each voxel is averaged over the predictions that cover it: a copy whose
    augmentation moved that voxel out of the field of view does not count there.
    The unaugmented prediction covers every voxel.
    """
    if draws < 0:
        raise ValueError(f"draws must be non-negative, got {draws}")
    image = batch["image"]
    spacing = batch.get("spacing")
    total = predict(image).to(torch.float32)
    coverage = torch.ones_like(total[:, :1])
    for _ in range(draws):
        augmented = pipeline({"image": image, **({"spacing": spacing} if spacing is not None else {})}, generator)
        params = augmented["augmentation"]
        probabilities = predict(augmented["image"]).to(torch.float32)
        total = total + invert_spatial(pipeline, probabilities, params, spacing)
        ones = torch.ones_like(probabilities[:, :1])
        coverage = coverage + invert_spatial(pipeline, ones, params, spacing)
    return total / coverage

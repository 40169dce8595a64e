"""A pipeline of random spatial transforms applied to whole batches with one resample."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .spatial import SpatialTransform
from .warp import IMAGE_PADDING_MODES, LABEL_MODES, warp

Batch = dict[str, Any]


class Pipeline:
    """Sequence of spatial transforms, composed per sample and applied in one warp.

    A batch is a mapping with ``image`` ``(B, C, *S)`` float, optionally
    ``label`` ``(B, 1, *S)`` integer and ``spacing`` ``(B, D)`` in millimetres
    (1 mm when absent). Integer images are returned as float32. Other keys pass
    through unchanged.

    Args:
        spatial: transforms in the order they act on the anatomy.
        image_padding: fill of the image outside the field of view, see ``warp``.
        label_mode: ``"nearest"`` or ``"onehot"``, see ``warp``.
    """

    def __init__(
        self,
        spatial: Sequence[SpatialTransform] = (),
        *,
        image_padding: str = "minimum",
        label_mode: str = "nearest",
    ) -> None:
        if image_padding not in IMAGE_PADDING_MODES:
            raise ValueError(f"image_padding must be one of {IMAGE_PADDING_MODES}, got {image_padding!r}")
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
        self.spatial = list(spatial)
        self.image_padding = image_padding
        self.label_mode = label_mode

    def __repr__(self) -> str:
        return f"Pipeline(spatial={self.spatial!r}, image_padding={self.image_padding!r}, label_mode={self.label_mode!r})"

    @staticmethod
    def _spacing(batch: Mapping[str, Any]) -> Tensor:
        image = batch["image"]
        spacing = batch.get("spacing")
        if spacing is None:
            return torch.ones(image.shape[0], image.ndim - 2, dtype=torch.float64)
        spacing = torch.as_tensor(spacing, dtype=torch.float64).cpu()
        if spacing.shape != (image.shape[0], image.ndim - 2):
            raise ValueError(f"spacing must have shape {(image.shape[0], image.ndim - 2)}, got {tuple(spacing.shape)}")
        return spacing

    def sample(self, batch: Mapping[str, Any], generator: torch.Generator) -> list[dict[str, Tensor]]:
        """Draw the parameters of every transform for every sample of ``batch``."""
        image = batch["image"]
        if image.ndim not in (4, 5):
            raise ValueError(f"image must be (B, C, X, Y) or (B, C, X, Y, Z), got shape {tuple(image.shape)}")
        shape = tuple(image.shape[2:])
        spacing = self._spacing(batch)
        return [t.sample(image.shape[0], shape, spacing, generator) for t in self.spatial]

    def forward_matrices(self, params: Sequence[Mapping[str, Tensor]], batch_size: int, ndim: int) -> Tensor:
        """Composed forward maps ``(B, D + 1, D + 1)`` in centred millimetres."""
        total = torch.eye(ndim + 1, dtype=torch.float64).repeat(batch_size, 1, 1)
        for transform, p in zip(self.spatial, params):
            matrix = transform.matrix(p, ndim)
            if matrix is not None:
                total = matrix @ total
        return total

    def apply(self, batch: Mapping[str, Any], params: Sequence[Mapping[str, Tensor]]) -> Batch:
        """Apply recorded parameters to ``batch``; the same parameters give the same output."""
        out = dict(batch)
        image = batch["image"]
        # Integer images become float32 whether or not a transform runs, so every strategy
        # returns the same image dtype.
        if not image.is_floating_point():
            image = image.to(torch.float32)
            out["image"] = image
        if not self.spatial:
            return out
        label = batch.get("label")
        shape = tuple(image.shape[2:])
        forward = self.forward_matrices(params, image.shape[0], len(shape))

        displacement = None
        for transform, p in zip(self.spatial, params):
            field = transform.displacement({k: v.to(image.device, torch.float32) for k, v in p.items()}, shape)
            if field is not None:
                displacement = field if displacement is None else displacement + field

        out["image"], out["label"] = warp(
            image,
            label,
            self._spacing(batch),
            forward,
            displacement,
            image_padding=self.image_padding,
            label_mode=self.label_mode,
        )
        if label is None:
            del out["label"]
        return out

    def __call__(self, batch: Mapping[str, Any], generator: torch.Generator) -> Batch:
        """Sample parameters from ``generator``, apply them and record them under ``augmentation``."""
        params = self.sample(batch, generator)
        out = self.apply(batch, params)
        out["augmentation"] = params
        return out

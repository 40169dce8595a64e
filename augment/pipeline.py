"""A pipeline of random transforms applied to whole batches with one resample.

Order of operations: all spatial transforms, wherever they are listed (compositions
included), are composed per sample into one warp that resamples image and label
once. The intensity transforms then act on the warped image in their listed
order. Writing an intensity transform before a spatial one therefore does not
make it act first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .compose import Composition
from .intensity import IntensityTransform
from .spatial import SpatialTransform
from .warp import LABEL_MODES, check_image_padding, warp

Batch = dict[str, Any]
Transform = SpatialTransform | IntensityTransform | Composition

# Parameters of one node: a transform's tensors, or a composition's
# {"selected": (B, children) bool, "children": [parameters of each child]}.
NodeParameters = dict[str, Any]


def _walk(
    nodes: Sequence[Transform], params: Sequence[NodeParameters], active: Tensor | None
) -> Iterator[tuple[SpatialTransform | IntensityTransform, NodeParameters, Tensor | None]]:
    """Yield every leaf transform with its parameters and the ``(B,)`` mask of samples it acts on.

    ``active`` is ``None`` where no composition restricts the samples.
    """
    if len(nodes) != len(params):
        raise ValueError(f"parameters are for {len(params)} transforms, but the pipeline has {len(nodes)}")
    for node, node_params in zip(nodes, params):
        if isinstance(node, Composition):
            selected = node_params["selected"]
            for index, child in enumerate(node.transforms):
                child_active = selected[:, index] if active is None else active & selected[:, index]
                yield from _walk([child], [node_params["children"][index]], child_active)
        else:
            yield node, node_params, active


def _leaves(nodes: Sequence[Transform]) -> Iterator[SpatialTransform | IntensityTransform]:
    for node in nodes:
        if isinstance(node, Composition):
            yield from _leaves(node.transforms)
        else:
            yield node


class Pipeline:
    """Random spatial and intensity transforms, sampled per sample and applied to a whole batch.

    A batch is a mapping with ``image`` ``(B, C, *S)`` float, optionally ``label``
    ``(B, 1, *S)`` integer and ``spacing`` ``(B, D)`` in millimetres (1 mm when
    absent). Integer images are returned as float32. Spatial transforms change
    ``image`` and ``label``; intensity transforms change ``image`` only. Every
    other key passes through unchanged, so a second label-like entry such as a
    probability map is neither warped nor changed.

    Args:
        transforms: spatial transforms (``augment.spatial``), intensity transforms
            (``augment.intensity``, ``augment.smoothing``, ``augment.normalize``) and
            compositions (``augment.compose``). Spatial transforms are listed in the
            order they act on the anatomy. All of them are fused into one warp,
            which runs before every intensity transform.
        image_padding: fill of the image outside the field of view, a mode name or
            a number, see ``warp``.
        label_mode: ``"nearest"`` or ``"onehot"``, see ``warp``.
    """

    def __init__(
        self,
        transforms: Sequence[Transform] = (),
        *,
        image_padding: str | float = "minimum",
        label_mode: str = "nearest",
    ) -> None:
        image_padding = check_image_padding(image_padding)
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
        transforms = list(transforms)
        for position, node in enumerate(transforms):
            if not isinstance(node, (SpatialTransform, IntensityTransform, Composition)):
                raise ValueError(f"transforms[{position}] must be a spatial, intensity or composed transform, got {node!r}")
        self.transforms = transforms
        self.image_padding = image_padding
        self.label_mode = label_mode

    @property
    def spatial(self) -> list[SpatialTransform]:
        """Spatial transforms in the order they are listed, compositions included."""
        return [t for t in _leaves(self.transforms) if isinstance(t, SpatialTransform)]

    @property
    def intensity(self) -> list[IntensityTransform]:
        """Intensity transforms in the order they are listed, compositions included."""
        return [t for t in _leaves(self.transforms) if isinstance(t, IntensityTransform)]

    def __repr__(self) -> str:
        return f"Pipeline(transforms={self.transforms!r}, image_padding={self.image_padding!r}, label_mode={self.label_mode!r})"

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

    def _sample_node(self, node: Transform, image_shape: tuple[int, ...], spacing: Tensor, generator: torch.Generator) -> NodeParameters:
        if isinstance(node, SpatialTransform):
            return node.sample(image_shape[0], image_shape[2:], spacing, generator)
        if isinstance(node, IntensityTransform):
            return node.sample(image_shape, spacing, generator)
        # The choice is drawn before the children, and every child draws its parameters
        # for every sample, so the random stream does not depend on which children are selected.
        selected = node.select(image_shape[0], generator)
        children = [self._sample_node(child, image_shape, spacing, generator) for child in node.transforms]
        return {"selected": selected, "children": children}

    def sample(self, batch: Mapping[str, Any], generator: torch.Generator) -> list[NodeParameters]:
        """Draw the parameters of every transform for every sample of ``batch``, one entry per listed transform."""
        image = batch["image"]
        if image.ndim not in (4, 5):
            raise ValueError(f"image must be (B, C, X, Y) or (B, C, X, Y, Z), got shape {tuple(image.shape)}")
        image_shape = tuple(int(n) for n in image.shape)
        spacing = self._spacing(batch)
        return [self._sample_node(node, image_shape, spacing, generator) for node in self.transforms]

    def forward_matrices(self, params: Sequence[NodeParameters], batch_size: int, ndim: int) -> Tensor:
        """Composed forward maps ``(B, D + 1, D + 1)`` in centred millimetres.

        A spatial transform counts as the identity for samples that its compositions
        did not select.
        """
        identity = torch.eye(ndim + 1, dtype=torch.float64).repeat(batch_size, 1, 1)
        total = identity
        for transform, transform_params, active in _walk(self.transforms, params, None):
            if not isinstance(transform, SpatialTransform):
                continue
            matrix = transform.matrix(transform_params, ndim)
            if matrix is None:
                continue
            if active is not None:
                matrix = torch.where(active[:, None, None], matrix, identity)
            total = matrix @ total
        return total

    def _displacement(self, params: Sequence[NodeParameters], image: Tensor) -> list[Tensor] | None:
        """Displacement fields of the spatial transforms, at their control points where a transform gives them.

        ``warp`` interpolates control-point fields tile by tile, which avoids
        building a full-resolution field for the whole batch.
        """
        shape = tuple(image.shape[2:])
        fields = []
        for transform, transform_params, active in _walk(self.transforms, params, None):
            if not isinstance(transform, SpatialTransform):
                continue
            device_params = {k: v.to(image.device, torch.float32) for k, v in transform_params.items()}
            field = transform.control_point_displacement(device_params)
            if field is None:
                field = transform.displacement(device_params, shape)
            if field is None:
                continue
            if active is not None:
                field = field * active.to(field.device, field.dtype).view(-1, *(1,) * (field.ndim - 1))
            fields.append(field)
        return fields or None

    def apply(self, batch: Mapping[str, Any], params: Sequence[NodeParameters]) -> Batch:
        """Apply recorded parameters to ``batch``. The same parameters give the same output."""
        out = dict(batch)
        image = batch["image"]
        # Integer images become float32 whether or not a transform runs, so every strategy
        # returns the same image dtype.
        if not image.is_floating_point():
            image = image.to(torch.float32)
            out["image"] = image
        spacing = self._spacing(batch)
        leaves = list(_walk(self.transforms, params, None))

        if any(isinstance(transform, SpatialTransform) for transform, _, _ in leaves):
            label = batch.get("label")
            forward = self.forward_matrices(params, image.shape[0], image.ndim - 2)
            image, warped_label = warp(
                image,
                label,
                spacing,
                forward,
                self._displacement(params, image),
                image_padding=self.image_padding,
                label_mode=self.label_mode,
            )
            out["image"] = image
            if label is not None:
                # Lateralised classes exchange where a flip with a label-swap map acted.
                for transform, transform_params, active in leaves:
                    if isinstance(transform, SpatialTransform):
                        warped_label = transform.relabel(warped_label, transform_params, active)
                out["label"] = warped_label

        for transform, transform_params, active in leaves:
            if not isinstance(transform, IntensityTransform):
                continue
            if active is not None:
                transform_params = dict(transform_params, applied=transform_params["applied"] & active[:, None])
            image = transform.apply(image, transform_params, spacing)
        out["image"] = image
        return out

    def __call__(self, batch: Mapping[str, Any], generator: torch.Generator) -> Batch:
        """Sample parameters from ``generator``, apply them and record them under ``augmentation``."""
        params = self.sample(batch, generator)
        out = self.apply(batch, params)
        out["augmentation"] = params
        return out

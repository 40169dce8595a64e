"""Random spatial transforms whose per-sample parameters are composed into one warp.

Coordinates: every transform works in physical space, in millimetres, centred on
the middle of the field of view, with axes in tensor order (the voxel order of
the file). A transform describes what happens to the anatomy (the forward map);
the warp samples the input at the inverse of the composed forward map, so the
spacing of anisotropic volumes is honoured (a 10 degree rotation turns the
anatomy by 10 degrees, whatever the voxel size).

Each transform samples its parameters for a whole batch from an explicit
``torch.Generator`` on the CPU, so the same seed gives the same parameters on
any device, and returns them as tensors that can be stored and replayed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "SpatialTransform",
    "RandomFlip",
    "RandomRot90",
    "RandomAffine",
    "RandomElastic",
]


def _uniform(generator: torch.Generator, shape: Sequence[int], low: Tensor | float, high: Tensor | float) -> Tensor:
    draw = torch.rand(*shape, generator=generator, dtype=torch.float64)
    return low + (high - low) * draw


def _as_range(value: float | Sequence[float], name: str, *, centre: float = 0.0, minimum: float | None = None) -> tuple[float, float]:
    """Turn ``v`` into ``(centre - v, centre + v)`` and ``(a, b)`` into itself, validating both."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{name} must be non-negative when given as one number, got {value}")
        low, high = centre - value, centre + value
    else:
        if len(value) != 2:
            raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}")
        low, high = float(value[0]), float(value[1])
    if low > high:
        raise ValueError(f"{name} must have min <= max, got ({low}, {high})")
    if minimum is not None and low <= minimum:
        raise ValueError(f"{name} must be greater than {minimum}, got ({low}, {high})")
    return low, high


def _check_probability(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability p must be in [0, 1], got {p}")
    return float(p)


class SpatialTransform:
    """Base class of random spatial transforms.

    Subclasses implement ``sample``, which draws the parameters of every sample
    of a batch, and either ``matrix`` (a forward homogeneous matrix in centred
    millimetre coordinates, shape ``(B, D + 1, D + 1)``) or ``displacement``.
    Samples not selected by the probability ``p`` get identity parameters.
    """

    def __init__(self, *, p: float = 1.0) -> None:
        self.p = _check_probability(p)

    def _applied(self, batch_size: int, generator: torch.Generator) -> Tensor:
        return torch.rand(batch_size, generator=generator, dtype=torch.float64) < self.p

    def sample(self, batch_size: int, shape: Sequence[int], spacing: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        raise NotImplementedError

    def matrix(self, params: dict[str, Tensor], ndim: int) -> Tensor | None:
        return None

    def displacement(self, params: dict[str, Tensor], shape: Sequence[int]) -> Tensor | None:
        return None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class RandomFlip(SpatialTransform):
    """Mirror each of the given spatial axes independently with probability ``p``.

    Args:
        axes: spatial axes (0-based, tensor order) that may flip; ``None`` means all.
        p: probability of flipping each axis, decided per sample and per axis.
    """

    def __init__(self, *, axes: Sequence[int] | None = None, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.axes = None if axes is None else tuple(int(a) for a in axes)

    def sample(self, batch_size, shape, spacing, generator):
        ndim = len(shape)
        axes = range(ndim) if self.axes is None else self.axes
        for axis in axes:
            if not 0 <= axis < ndim:
                raise ValueError(f"flip axis {axis} is out of range for {ndim}D data")
        draws = torch.rand(batch_size, ndim, generator=generator, dtype=torch.float64) < self.p
        allowed = torch.zeros(ndim, dtype=torch.bool)
        allowed[list(axes)] = True
        return {"flip": draws & allowed}

    def matrix(self, params, ndim):
        flip = params["flip"]
        signs = 1.0 - 2.0 * flip.to(torch.float64)
        matrix = torch.diag_embed(torch.cat([signs, torch.ones(len(flip), 1, dtype=torch.float64)], dim=1))
        return matrix


def _rotation_2d(angle: Tensor) -> Tensor:
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def _rotation_3d(angles: Tensor) -> Tensor:
    """Rotation matrices ``R0 @ R1 @ R2`` about tensor axes 0, 1 and 2; angles in radians, ``(B, 3)``."""
    batch = angles.shape[0]
    result = torch.eye(3, dtype=torch.float64).repeat(batch, 1, 1)
    for axis in range(3):
        i, j = [a for a in range(3) if a != axis]
        rotation = torch.eye(3, dtype=torch.float64).repeat(batch, 1, 1)
        cos, sin = torch.cos(angles[:, axis]), torch.sin(angles[:, axis])
        rotation[:, i, i] = cos
        rotation[:, i, j] = -sin
        rotation[:, j, i] = sin
        rotation[:, j, j] = cos
        result = result @ rotation
    return result


def _homogeneous(linear: Tensor, translation: Tensor | None = None) -> Tensor:
    batch, ndim = linear.shape[0], linear.shape[-1]
    matrix = torch.eye(ndim + 1, dtype=torch.float64).repeat(batch, 1, 1)
    matrix[:, :ndim, :ndim] = linear
    if translation is not None:
        matrix[:, :ndim, ndim] = translation
    return matrix


class RandomRot90(SpatialTransform):
    """Rotate by a random multiple of 90 degrees in the plane of two spatial axes.

    The rotation is exact (an index operation) when the plane is square in
    voxels and in spacing; otherwise it is resampled like any other rotation.
    """

    def __init__(self, *, axes: tuple[int, int] = (0, 1), p: float = 0.5) -> None:
        super().__init__(p=p)
        if len(axes) != 2 or axes[0] == axes[1]:
            raise ValueError(f"rot90 axes must be two different spatial axes, got {axes!r}")
        self.axes = (int(axes[0]), int(axes[1]))

    def sample(self, batch_size, shape, spacing, generator):
        if max(self.axes) >= len(shape):
            raise ValueError(f"rot90 axes {self.axes} are out of range for {len(shape)}D data")
        quarter_turns = torch.randint(1, 4, (batch_size,), generator=generator)
        return {"quarter_turns": torch.where(self._applied(batch_size, generator), quarter_turns, 0)}

    def matrix(self, params, ndim):
        turns = params["quarter_turns"].to(torch.float64)
        angle = turns * (math.pi / 2)
        cos, sin = torch.cos(angle).round(), torch.sin(angle).round()
        linear = torch.eye(ndim, dtype=torch.float64).repeat(len(turns), 1, 1)
        i, j = self.axes
        linear[:, i, i] = cos
        linear[:, i, j] = -sin
        linear[:, j, i] = sin
        linear[:, j, j] = cos
        return _homogeneous(linear)


class RandomAffine(SpatialTransform):
    """Random rotation, scaling, shearing and translation about the centre of the field of view.

    Args:
        degrees: rotation range in degrees about each spatial axis (about the
            plane's normal in 2D); ``d`` means ``(-d, d)``.
        scale: zoom factor range; ``s`` means ``(1 - s, 1 + s)``. Factors above 1
            make the anatomy larger.
        isotropic: one zoom factor for all axes if true, one per axis otherwise.
        shear: range of the off-diagonal shear coefficients; ``s`` means ``(-s, s)``.
        translation: translation range in millimetres along each axis.
        p: probability of applying the transform to a sample.

    The forward map is ``translate @ rotate @ shear @ scale``.
    """

    def __init__(
        self,
        *,
        degrees: float | Sequence[float] = 0.0,
        scale: float | Sequence[float] = 0.0,
        isotropic: bool = True,
        shear: float | Sequence[float] = 0.0,
        translation: float | Sequence[float] = 0.0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.degrees = _as_range(degrees, "degrees")
        self.scale = _as_range(scale, "scale", centre=1.0, minimum=0.0)
        self.isotropic = bool(isotropic)
        self.shear = _as_range(shear, "shear")
        self.translation = _as_range(translation, "translation")

    def sample(self, batch_size, shape, spacing, generator):
        ndim = len(shape)
        applied = self._applied(batch_size, generator)
        n_angles = 1 if ndim == 2 else 3
        radians = _uniform(generator, (batch_size, n_angles), *map(math.radians, self.degrees))
        n_scales = 1 if self.isotropic else ndim
        scales = _uniform(generator, (batch_size, n_scales), *self.scale).expand(batch_size, ndim)
        shears = _uniform(generator, (batch_size, ndim, ndim), *self.shear)
        shears = shears * (1 - torch.eye(ndim, dtype=torch.float64))
        translation = _uniform(generator, (batch_size, ndim), *self.translation)

        identity = ~applied
        radians[identity] = 0.0
        scales = torch.where(identity[:, None], 1.0, scales)
        shears[identity] = 0.0
        translation[identity] = 0.0
        return {"radians": radians, "scales": scales.contiguous(), "shears": shears, "translation": translation}

    def matrix(self, params, ndim):
        radians = params["radians"]
        rotation = _rotation_2d(radians[:, 0]) if ndim == 2 else _rotation_3d(radians)
        shear = torch.eye(ndim, dtype=torch.float64) + params["shears"]
        scale = torch.diag_embed(params["scales"])
        return _homogeneous(rotation @ shear @ scale, params["translation"])


class RandomElastic(SpatialTransform):
    """Elastic deformation from random displacements on a coarse grid of control points.

    Displacements are drawn uniformly in ``[-max_displacement, max_displacement]``
    millimetres per axis at each control point and interpolated (linearly) to
    every voxel, so the field is smooth at the scale of the control-point spacing.

    Args:
        max_displacement: largest displacement in millimetres, one number or one per axis.
        control_points: number of control points along each axis (at least 2).
        p: probability of deforming a sample.
    """

    def __init__(self, *, max_displacement: float | Sequence[float] = 2.0, control_points: int = 5, p: float = 1.0) -> None:
        super().__init__(p=p)
        values = [max_displacement] if isinstance(max_displacement, (int, float)) else list(max_displacement)
        if any(v < 0 for v in values):
            raise ValueError(f"max_displacement must be non-negative millimetres, got {max_displacement!r}")
        if control_points < 2:
            raise ValueError(f"control_points must be at least 2, got {control_points}")
        self.max_displacement = tuple(float(v) for v in values)
        self.control_points = int(control_points)

    def sample(self, batch_size, shape, spacing, generator):
        ndim = len(shape)
        if len(self.max_displacement) not in (1, ndim):
            raise ValueError(f"max_displacement has {len(self.max_displacement)} values for {ndim}D data")
        applied = self._applied(batch_size, generator)
        limit = torch.tensor(self.max_displacement, dtype=torch.float64).expand(ndim)
        grid_shape = (batch_size, ndim) + (self.control_points,) * ndim
        coarse = _uniform(generator, grid_shape, -1.0, 1.0) * limit.view(1, ndim, *(1,) * ndim)
        coarse[~applied] = 0.0
        return {"coarse_displacement": coarse}

    def displacement(self, params, shape):
        coarse = params["coarse_displacement"]
        mode = "bilinear" if len(shape) == 2 else "trilinear"
        return torch.nn.functional.interpolate(coarse, size=tuple(shape), mode=mode, align_corners=True)

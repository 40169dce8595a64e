"""Random spatial transforms whose per-sample parameters are composed into one warp.

Coordinates: every transform works in physical space, in millimetres, centred on
the middle of the field of view, with axes in tensor order (the voxel order of
the file). A transform describes what happens to the anatomy (the forward map).
The warp samples the input at the inverse of the composed forward map. Because
this happens in millimetres, the spacing of anisotropic volumes is honoured: a
10 degree rotation turns the anatomy by 10 degrees, whatever the voxel size.

Each transform samples its parameters for a whole batch from an explicit
``torch.Generator`` on the CPU, so the same seed gives the same parameters on
any device, and returns them as tensors that can be stored and replayed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import kornia
import torch
from torch import Tensor

from .warp import upsample_linear

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
    A displacement may also be given at control points by
    ``control_point_displacement``, which ``warp`` interpolates more cheaply than
    a per-voxel field, and ``relabel`` may change label values after the warp.
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
        """Displacement in millimetres of every voxel, ``(B, D, *shape)``, or ``None``."""
        return None

    def control_point_displacement(self, params: dict[str, Tensor]) -> Tensor | None:
        """Displacement in millimetres at control points, ``(B, D, *P)``, or ``None``.

        The control points span the field of view from the first to the last voxel
        centre, as ``warp`` reads them. Interpolated linearly, they give ``displacement``.
        """
        return None

    def relabel(self, label: Tensor, params: dict[str, Tensor], active: Tensor | None = None) -> Tensor:
        """Change label values after the warp. The default returns ``label`` unchanged.

        Args:
            label: ``(B, 1, *S)`` warped label map.
            params: this transform's parameters.
            active: ``(B,)`` bool mask of the samples the transform acts on, or
                ``None`` for all of them.
        """
        return label

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def _check_label_swap(label_swap: Mapping[int, int] | None) -> dict[int, int] | None:
    """Validate a ``{left_label: right_label}`` mapping: integer labels, each in at most one pair."""
    if label_swap is None:
        return None
    if not isinstance(label_swap, Mapping):
        raise ValueError(f"label_swap must be a mapping {{left_label: right_label}}, got {label_swap!r}")
    seen: set[int] = set()
    pairs = {}
    for left, right in label_swap.items():
        for value in (left, right):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"label_swap labels must be integers, got {value!r} in {label_swap!r}")
        if left == right:
            raise ValueError(f"label_swap pairs must name two different labels, got {left}: {right}")
        for value in (left, right):
            if value in seen:
                raise ValueError(f"label {value} appears in more than one label_swap pair: {label_swap!r}")
            seen.add(value)
        pairs[int(left)] = int(right)
    return pairs


class RandomFlip(SpatialTransform):
    """Mirror each of the given spatial axes independently with probability ``p``.

    Args:
        axes: spatial axes (0-based, tensor order) that may flip; ``None`` means all.
        p: probability of flipping each axis, decided per sample and per axis.
        label_swap: ``{left_label: right_label}`` pairs of lateralised classes (for
            example left and right hippocampus). In samples whose ``left_right_axis``
            flips, each pair exchanges values in the label map, so a structure mirrored
            onto the other side is labelled as that side's class. ``Pipeline.apply``
            calls ``relabel`` on the warped label.
        left_right_axis: spatial axis (tensor order) along which left and right lie.
            Required with ``label_swap``.
    """

    def __init__(
        self,
        *,
        axes: Sequence[int] | None = None,
        p: float = 0.5,
        label_swap: Mapping[int, int] | None = None,
        left_right_axis: int | None = None,
    ) -> None:
        super().__init__(p=p)
        self.axes = None if axes is None else tuple(int(a) for a in axes)
        self.label_swap = _check_label_swap(label_swap)
        if self.label_swap and left_right_axis is None:
            raise ValueError("label_swap needs left_right_axis, the spatial axis along which left and right lie")
        self.left_right_axis = None if left_right_axis is None else int(left_right_axis)
        if self.left_right_axis is not None and self.axes is not None and self.left_right_axis not in self.axes:
            raise ValueError(f"left_right_axis {self.left_right_axis} is not one of the flip axes {self.axes}, so it never flips")

    def sample(self, batch_size, shape, spacing, generator):
        ndim = len(shape)
        axes = range(ndim) if self.axes is None else self.axes
        for axis in axes:
            if not 0 <= axis < ndim:
                raise ValueError(f"flip axis {axis} is out of range for {ndim}D data")
        if self.left_right_axis is not None and not 0 <= self.left_right_axis < ndim:
            raise ValueError(f"left_right_axis {self.left_right_axis} is out of range for {ndim}D data")
        draws = torch.rand(batch_size, ndim, generator=generator, dtype=torch.float64) < self.p
        allowed = torch.zeros(ndim, dtype=torch.bool)
        allowed[list(axes)] = True
        return {"flip": draws & allowed}

    def matrix(self, params, ndim):
        flip = params["flip"]
        signs = 1.0 - 2.0 * flip.to(torch.float64)
        matrix = torch.diag_embed(torch.cat([signs, torch.ones(len(flip), 1, dtype=torch.float64)], dim=1))
        return matrix

    def relabel(self, label, params, active=None):
        """Exchange the ``label_swap`` pairs in samples whose left-right axis flipped."""
        if not self.label_swap:
            return label
        flipped = params["flip"][:, self.left_right_axis].to(torch.bool)
        if active is not None:
            flipped = flipped & active.to(torch.bool)
        if not bool(flipped.any()):
            return label
        swapped_samples = flipped.to(label.device).view(-1, *(1,) * (label.ndim - 1))
        # Every comparison reads the input label, so a value swapped once is not swapped back.
        out = label
        for left, right in self.label_swap.items():
            out = torch.where(swapped_samples & (label == left), right, out)
            out = torch.where(swapped_samples & (label == right), left, out)
        return out


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


# Radius of the smoothing kernel in standard deviations, as scipy.ndimage.gaussian_filter's
# default truncate=4.0.
_SMOOTHING_TRUNCATE = 4.0


def _smooth_control_grid(coarse: Tensor, sigma: float) -> Tensor:
    """Smooth ``(B, D, *P)`` control-point displacements and keep each sample's and axis's peak size.

    The Gaussian kernel comes from Kornia; borders repeat the edge control points.
    Smoothing averages neighbouring draws and so shrinks them; rescaling restores
    the largest absolute value of each sample and axis to that of the raw draw.
    """
    ndim = coarse.ndim - 2
    size = 2 * math.ceil(_SMOOTHING_TRUNCATE * sigma) + 1
    if ndim == 2:
        kernel = kornia.filters.get_gaussian_kernel2d((size, size), (sigma, sigma), dtype=coarse.dtype)
        smoothed = kornia.filters.filter2d(coarse, kernel, border_type="replicate")
    else:
        kernel = kornia.filters.get_gaussian_kernel3d((size, size, size), (sigma, sigma, sigma), dtype=coarse.dtype)
        smoothed = kornia.filters.filter3d(coarse, kernel, border_type="replicate")

    raw_peak = coarse.abs().flatten(2).amax(dim=2)
    smoothed_peak = smoothed.abs().flatten(2).amax(dim=2)
    scale = torch.where(smoothed_peak > 0, raw_peak / smoothed_peak.clamp(min=torch.finfo(coarse.dtype).tiny), 0.0)
    return smoothed * scale.view(*scale.shape, *(1,) * ndim)


class RandomElastic(SpatialTransform):
    """Elastic deformation from a coarse grid of random displacements at control points.

    Displacements are drawn uniformly in ``[-max_displacement, max_displacement]``
    millimetres per axis at each control point, optionally smoothed across control
    points with a Gaussian, and interpolated linearly to every voxel, so the field
    is smooth at the scale of the control-point spacing. The control points span
    the field of view from the first to the last voxel centre along each axis.

    Args:
        max_displacement: largest displacement in millimetres, one number or one per
            axis. No voxel moves further than this along that axis, with or without
            smoothing.
        control_points: number of control points along each axis (at least 2).
        smoothing_sigma: standard deviation of the Gaussian smoothing of the control
            grid, in control-point spacings; 0 turns smoothing off. Smoothing
            correlates neighbouring control points, for broader and gentler bends.
            Each sample's smoothed grid is rescaled so its largest absolute value per
            axis equals that of the raw draw, so smoothing changes the shape of the
            field and not its size in millimetres.
        p: probability of deforming a sample.
    """

    def __init__(
        self,
        *,
        max_displacement: float | Sequence[float] = 2.0,
        control_points: int = 5,
        smoothing_sigma: float = 0.0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        values = [max_displacement] if isinstance(max_displacement, (int, float)) else list(max_displacement)
        if any(v < 0 for v in values):
            raise ValueError(f"max_displacement must be non-negative millimetres, got {max_displacement!r}")
        if control_points < 2:
            raise ValueError(f"control_points must be at least 2, got {control_points}")
        if not smoothing_sigma >= 0:
            raise ValueError(f"smoothing_sigma must be a non-negative number of control-point spacings, got {smoothing_sigma!r}")
        self.max_displacement = tuple(float(v) for v in values)
        self.control_points = int(control_points)
        self.smoothing_sigma = float(smoothing_sigma)

    def sample(self, batch_size, shape, spacing, generator):
        ndim = len(shape)
        if len(self.max_displacement) not in (1, ndim):
            raise ValueError(f"max_displacement has {len(self.max_displacement)} values for {ndim}D data")
        applied = self._applied(batch_size, generator)
        limit = torch.tensor(self.max_displacement, dtype=torch.float64).expand(ndim)
        grid_shape = (batch_size, ndim) + (self.control_points,) * ndim
        coarse = _uniform(generator, grid_shape, -1.0, 1.0) * limit.view(1, ndim, *(1,) * ndim)
        if self.smoothing_sigma > 0:
            coarse = _smooth_control_grid(coarse, self.smoothing_sigma)
        coarse[~applied] = 0.0
        return {"coarse_displacement": coarse}

    def control_point_displacement(self, params):
        return params["coarse_displacement"]

    def displacement(self, params, shape):
        return upsample_linear(params["coarse_displacement"], shape)

"""Compose sampled spatial parameters into one grid and resample image and label once.

Shapes: images ``(B, C, *S)`` float, labels ``(B, 1, *S)`` integer class indices,
spacing ``(B, D)`` in millimetres, with ``S`` of length ``D`` (2 or 3).

Samples whose composed map sends voxel centres onto voxel centres (flips, exact
90 degree rotations, whole-voxel translations, identity) are copied by index, so
their values are bit-exact. Every other sample is resampled with ``grid_sample``.

The sampling grid is never built for the whole batch at once. It is kept in a
separable form (see ``_SamplingGrid``) and built one tile of output voxels at a
time, by linear interpolation between precomputed planes, right before the image
and label of that tile are sampled. On the CPU a tile is small enough that the
grid, the input samples and the outputs of one tile stay in cache, which makes the
warp cost little more than the two ``grid_sample`` calls themselves. Every grid
value is computed elementwise, so the output does not depend on the tile size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# Named image fills outside the field of view. A number is a constant fill.
IMAGE_PADDING_MODES = ("zeros", "minimum", "mean", "border", "otsu")
LABEL_MODES = ("nearest", "onehot")

# Tolerance, in voxels, below which a composed map counts as an exact index map.
_INTEGER_TOLERANCE = 1e-6

# Output voxels per tile and CPU thread. A tile's float32 grid then takes 1 MB (2D) to
# 1.5 MB (3D). NOTE: chosen on an Intel Xeon with 2 MB of L2 cache per core. On an AMD
# EPYC (Zen 4) with 1 MB per core, tiles of 2**17 and 2**18 voxels ran fastest and 2**15
# about 15 % slower in 2D. Other CPUs may prefer another size.
_TILE_VOXELS_PER_THREAD = 1 << 17


def _half_extent(shape: Sequence[int]) -> Tensor:
    """Half the distance between the first and last voxel centre, per axis, in voxels.

    Axes of size one get 0.5 so the normalisation below stays invertible; any
    normalised coordinate maps onto their only voxel.
    """
    return torch.tensor([max((n - 1) / 2.0, 0.5) for n in shape], dtype=torch.float64)


def normalised_affine(forward: Tensor, shape: Sequence[int], spacing: Tensor) -> Tensor:
    """Turn forward maps in centred millimetres into sampling maps in ``[-1, 1]`` coordinates.

    Args:
        forward: ``(B, D + 1, D + 1)`` forward homogeneous matrices (anatomy motion).
        shape: spatial shape ``S`` of input and output.
        spacing: ``(B, D)`` voxel spacing in millimetres.

    Returns:
        ``(B, D, D + 1)`` matrices mapping output coordinates to input coordinates,
        both normalised as ``grid_sample`` expects with ``align_corners=True``, in
        tensor axis order.
    """
    ndim = len(shape)
    backward = torch.linalg.inv(forward)
    millimetres_per_unit = spacing.to(torch.float64) * _half_extent(shape)  # (B, D)
    to_mm = torch.diag_embed(millimetres_per_unit)
    from_mm = torch.diag_embed(1.0 / millimetres_per_unit)
    linear = from_mm @ backward[:, :ndim, :ndim] @ to_mm
    offset = (from_mm @ backward[:, :ndim, ndim:]).squeeze(-1)
    return torch.cat([linear, offset[..., None]], dim=-1)


def linear_interpolation_weights(size: int, points: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Return the ``(size, points)`` matrix of linear interpolation from ``points`` samples onto ``size`` voxels.

    The samples are evenly spaced, the first on the first voxel centre and the last
    on the last one, as in ``F.interpolate(..., align_corners=True)``. As there, an
    output axis of size one takes the first sample, and a single sample is copied to
    every voxel.
    """
    weights = torch.zeros(size, points, dtype=torch.float64)
    if size == 1 or points == 1:
        weights[:, 0] = 1.0
        return weights.to(dtype)
    position = torch.arange(size, dtype=torch.float64) * ((points - 1) / (size - 1))
    left = position.floor().clamp(max=points - 2).to(torch.long)
    fraction = position - left
    rows = torch.arange(size)
    weights[rows, left] = 1.0 - fraction
    weights[rows, left + 1] = fraction
    return weights.to(dtype)


def _upsample_trailing_axes(values: Tensor, trailing_shape: Sequence[int]) -> Tensor:
    """Interpolate ``(B, C, P0, *P)`` linearly onto ``(B, C, P0, *trailing_shape)``, leaving axis ``P0`` as it is."""
    out = values
    for axis in range(len(trailing_shape), 0, -1):
        weights = linear_interpolation_weights(trailing_shape[axis - 1], out.shape[2 + axis], values.dtype).to(values.device)
        out = torch.matmul(out.movedim(2 + axis, -1), weights.T).movedim(-1, 2 + axis)
    return out


def upsample_linear(values: Tensor, shape: Sequence[int]) -> Tensor:
    """Interpolate ``(B, C, *P)`` values at evenly spaced points linearly onto ``(B, C, *shape)`` voxels.

    Gives the result of ``F.interpolate(values, size=shape, mode="bilinear"`` or
    ``"trilinear", align_corners=True)`` up to float rounding, one axis at a time,
    so the cost is close to one write of the output.
    """
    batch, channels, first_points = values.shape[:3]
    partial = _upsample_trailing_axes(values, shape[1:])
    weights = linear_interpolation_weights(shape[0], first_points, values.dtype).to(values.device)
    out = torch.matmul(weights, partial.reshape(batch, channels, first_points, -1))
    return out.reshape(batch, channels, *shape)


def _normalised_coordinates(size: int) -> Tensor:
    """Normalised coordinates of the voxel centres along one axis, as ``F.affine_grid`` uses them."""
    if size == 1:
        return torch.zeros(1, dtype=torch.float64)
    return torch.linspace(-1.0, 1.0, size, dtype=torch.float64)


def _control_point_coordinates(points: int, size: int) -> Tensor:
    """Return the normalised coordinates at which the control points along one axis are interpolated onto its voxels.

    Control points span the first to the last voxel centre. An axis of one voxel
    takes its first control point at the voxel, whose normalised coordinate is 0.
    """
    if size == 1:
        return torch.zeros(points, dtype=torch.float64)
    return torch.linspace(-1.0, 1.0, points, dtype=torch.float64)


def _represents_affine(points: Sequence[int], shape: Sequence[int]) -> bool:
    """Return whether linear interpolation from control points of shape ``points`` onto ``shape`` reproduces an affine map.

    That needs two or more control points along every axis of more than one voxel,
    because a single control point is copied to every voxel.
    """
    return all(p >= 2 or n == 1 for p, n in zip(points, shape))


def _plane_positions(size: int, points: int) -> Tensor:
    """Return the position of each of ``size`` voxels in units of ``points`` evenly spaced planes, first and last on the end voxels.

    As ``linear_interpolation_weights``, a single voxel takes the first plane.
    """
    if size == 1 or points == 1:
        return torch.zeros(size, dtype=torch.float64)
    return torch.arange(size, dtype=torch.float64) * ((points - 1) / (size - 1))


class _PlaneStack:
    """Grid values on planes across the first spatial axis, interpolated linearly onto the rows between them.

    Args:
        planes: ``(R, P, N)`` grid values of ``R`` samples on ``P`` planes, each plane
            holding ``N = prod(S[1:]) * D`` values.
        position: ``(S[0],)`` float64 position of each output row in plane units, from
            0 (first plane) to ``P - 1`` (last plane).
    """

    def __init__(self, planes: Tensor, position: Tensor) -> None:
        points = planes.shape[1]
        left = position.floor().clamp(0, max(points - 2, 0)).to(torch.long)
        self.planes = planes
        self.points = points
        self.fraction = (position - left).to(planes.device, planes.dtype).view(1, -1, 1)
        # Rows between the same two planes form one run, so one lerp call fills them all.
        self.runs: list[tuple[int, int, int]] = []
        for row, plane in enumerate(left.tolist()):
            if self.runs and self.runs[-1][0] == plane:
                self.runs[-1] = (plane, self.runs[-1][1], row + 1)
            else:
                self.runs.append((plane, row, row + 1))

    def interpolate(self, members: slice, rows: slice, out: Tensor) -> None:
        """Write rows ``rows`` of samples ``members`` into ``out``, ``(G, len(rows), N)``."""
        for plane, first, end in self.runs:
            first, end = max(first, rows.start), min(end, rows.stop)
            if first >= end:
                continue
            right = min(plane + 1, self.points - 1)
            # lerp is exact at fractions 0 and 1, and elementwise, so the values do not depend on the tile size.
            torch.lerp(
                self.planes[members, plane : plane + 1],
                self.planes[members, right : right + 1],
                self.fraction[:, first:end],
                out=out[:, first - rows.start : end - rows.start],
            )


class _SamplingGrid:
    """Sampling grid of the resampled samples in separable form, built one tile at a time.

    The grid of output rows ``r0:r1`` (along the first spatial axis) is a sum of
    plane stacks (``_PlaneStack``), each interpolated linearly between its planes,
    with the channel of each output voxel last and in ``grid_sample``'s
    ``x, y(, z)`` order:

    - Each control-point displacement field enters as its values on its own
      control planes, already interpolated along the other axes.
    - The affine part is added to the first field at its control points, because
      linear interpolation reproduces an affine map exactly. The common affine +
      elastic case then needs one stack. Without a field whose control points can
      do that, the affine part enters as its values on the two end planes of the
      first axis (``-1`` and ``+1``).

    Per-voxel displacement fields cannot be factored that way and are added to each
    tile.

    Args:
        theta: ``(R, D, D + 1)`` normalised sampling maps of the resampled samples.
        shape: spatial shape ``S``.
        unit: ``(R, D)`` millimetres per normalised unit of each sample.
        control_fields: ``(R, D, *P)`` displacements in millimetres at control points.
        voxel_fields: ``(B, D, *S)`` displacements in millimetres of the whole batch,
            indexed by batch position when a tile is built.
    """

    def __init__(
        self,
        theta: Tensor,
        shape: Sequence[int],
        unit: Tensor,
        control_fields: Sequence[Tensor],
        voxel_fields: Sequence[Tensor],
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.shape = tuple(shape)
        self.dtype = dtype
        ndim = len(shape)
        self.stacks = []
        fold = bool(control_fields) and _represents_affine(tuple(control_fields[0].shape[2:]), self.shape)
        if not fold:
            axes = [torch.tensor([-1.0, 1.0], dtype=torch.float64)] + [_normalised_coordinates(n) for n in shape[1:]]
            self._add_stack(self._affine_values(theta, axes).to(device, dtype), (_normalised_coordinates(shape[0]) + 1.0) / 2.0)
        for index, field in enumerate(control_fields):
            normalised = field.to(dtype) / unit.to(field.device, dtype).view(-1, ndim, *(1,) * ndim)
            points = tuple(field.shape[2:])
            if index == 0 and fold:
                # Linear interpolation between control points reproduces an affine map
                # exactly, so the affine part joins the first field at its control points
                # and the common affine + elastic case needs one stack.
                coordinates = [_control_point_coordinates(p, n) for p, n in zip(points, shape)]
                normalised = normalised + self._affine_values(theta, coordinates).to(normalised.device, dtype)
            partial = _upsample_trailing_axes(normalised, shape[1:])
            self._add_stack(partial.to(device), _plane_positions(shape[0], points[0]))

        self.voxel_fields = list(voxel_fields)
        # Millimetres to normalised units, in grid channel order.
        self.inverse_unit = (1.0 / unit).flip(-1).to(device, dtype).view(-1, *(1,) * ndim, ndim)

    def _add_stack(self, values: Tensor, position: Tensor) -> None:
        """Add a stack from ``(R, D, P, *S[1:])`` values, channels in tensor axis order."""
        # One copy puts the channel last, in grid_sample's reversed order, and makes the planes contiguous.
        planes = values.flip(1).movedim(1, -1).contiguous()
        self.stacks.append(_PlaneStack(planes.reshape(planes.shape[0], planes.shape[1], -1), position))

    @staticmethod
    def _affine_values(theta: Tensor, axes: Sequence[Tensor]) -> Tensor:
        """Compute the normalised sampling positions ``(R, D, *points)`` of the affine maps at the grid of normalised ``axes``."""
        count, ndim = theta.shape[0], theta.shape[1]
        coordinates = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).reshape(ndim, -1)
        positions = theta[:, :, :ndim] @ coordinates + theta[:, :, ndim:]
        return positions.reshape(count, ndim, *(len(a) for a in axes))

    def new_buffer(self, samples: int, rows: int) -> Tensor:
        """Allocate storage for the grid of tiles of up to ``samples`` samples and ``rows`` rows, for ``tile`` to reuse."""
        return self.stacks[0].planes.new_empty(samples * rows * self.stacks[0].planes.shape[2])

    def tile(self, members: slice, batch: slice | Tensor, rows: slice, buffer: Tensor | None = None) -> Tensor:
        """Build the grid ``(G, rows, *S[1:], D)`` of the resampled samples ``members`` (batch positions ``batch``).

        The grid is written into ``buffer`` (from ``new_buffer``) when one is given,
        so a tile loop allocates and first touches its grid memory once.
        """
        ndim = len(self.shape)
        first = self.stacks[0]
        tile_shape = (members.stop - members.start, rows.stop - rows.start, first.planes.shape[2])
        grid = first.planes.new_empty(tile_shape) if buffer is None else buffer[: math.prod(tile_shape)].view(tile_shape)
        first.interpolate(members, rows, grid)
        for stack in self.stacks[1:]:
            term = torch.empty_like(grid)
            stack.interpolate(members, rows, term)
            grid += term
        grid = grid.view(grid.shape[0], grid.shape[1], *self.shape[1:], ndim)
        inverse_unit = self.inverse_unit[members]
        for field in self.voxel_fields:
            tile_field = field[batch, :, rows].to(grid.dtype)
            # Channel k of the field (tensor axis k) is grid channel ndim - 1 - k.
            for axis in range(ndim):
                channel = ndim - 1 - axis
                grid[..., channel].addcmul_(tile_field[:, axis], inverse_unit[..., channel])
        return grid


def _voxel_map(theta: Tensor, shape: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Express normalised sampling maps in voxel indices: ``i_in = linear @ i_out + offset``."""
    ndim = len(shape)
    half = _half_extent(shape)
    centre = torch.tensor([(n - 1) / 2.0 for n in shape], dtype=torch.float64)
    linear = half[:, None] * theta[:, :, :ndim] / half[None, :]
    offset = centre - linear @ centre + half * theta[:, :, ndim]
    return linear, offset


def _is_integer(x: Tensor) -> Tensor:
    flat = x.flatten(1)
    return (flat - flat.round()).abs().amax(dim=1) < _INTEGER_TOLERANCE


def _is_zero(field: Tensor) -> Tensor:
    """``(B,)`` bool on the CPU: whether each sample's field is zero everywhere."""
    flat = field.flatten(1)
    # Separate amax and amin are several times faster than aminmax along a dimension on the CPU.
    return ((flat.amax(dim=1) == 0) & (flat.amin(dim=1) == 0)).cpu()


def check_image_padding(value: str | float) -> str | float:
    """Return a valid image padding: a name from ``IMAGE_PADDING_MODES`` or a finite number, else raise ``ValueError``."""
    if isinstance(value, str):
        if value in IMAGE_PADDING_MODES:
            return value
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ValueError(f"image_padding must be one of {IMAGE_PADDING_MODES} or a finite number, got {value!r}")


def _border_values(image: Tensor) -> Tensor:
    """Gather the voxels on the faces of the field of view, ``(B, C, N)``. Edge voxels appear once per face."""
    batch, channels = image.shape[:2]
    faces = []
    for dim in range(2, image.ndim):
        faces.append(image.select(dim, 0).reshape(batch, channels, -1))
        faces.append(image.select(dim, image.shape[dim] - 1).reshape(batch, channels, -1))
    return torch.cat(faces, dim=-1)


def otsu_border_mean(image: Tensor) -> Tensor:
    """Compute the mean of the darker of two Otsu classes of the border voxels, ``(B, C)``.

    This is TorchIO's ``default_pad_value="otsu"``: the border of the field of view
    is split at the threshold that maximises the between-class variance, and the
    darker class fills, so bright anatomy cut by the border does not raise the fill.
    The split is exact, over the sorted values, where SimpleITK's filter that
    TorchIO uses bins them into a histogram first. A border of a single value fills
    with that value.
    """
    values = _border_values(image).to(torch.float64).sort(dim=-1).values
    count = values.shape[-1]
    dark_count = torch.arange(1, count, dtype=torch.float64, device=image.device)
    cumulative = values.cumsum(dim=-1)
    total = cumulative[..., -1:]
    dark_mean = cumulative[..., :-1] / dark_count
    bright_mean = (total - cumulative[..., :-1]) / (count - dark_count)
    dark_weight = dark_count / count
    between = dark_weight * (1.0 - dark_weight) * (dark_mean - bright_mean).square()

    # A threshold can only lie between two different values, so -1 marks the other positions.
    between = torch.where(values[..., 1:] > values[..., :-1], between, -1.0)
    best = between.argmax(dim=-1, keepdim=True)
    split = between.gather(-1, best) >= 0
    fill = torch.where(split, dark_mean.gather(-1, best), total / count)
    return fill[..., 0].to(image.dtype)


def _image_padding(image: Tensor, mode: str | float) -> Tensor | None:
    """Return the value per sample and channel, ``(B, C, 1, ...)``, that fills voxels sampled from outside the field of view.

    Returns ``None`` for ``"zeros"``, ``0`` and ``"border"``, which ``grid_sample`` pads by itself.
    """
    reduce_dims = tuple(range(2, image.ndim))
    view = (*image.shape[:2], *(1,) * (image.ndim - 2))
    if mode == "minimum":
        return image.amin(dim=reduce_dims, keepdim=True)
    if mode == "mean":
        return image.mean(dim=reduce_dims, keepdim=True)
    if mode == "otsu":
        return otsu_border_mean(image).view(view)
    if isinstance(mode, float) and mode != 0.0:
        return torch.full(view, mode, dtype=image.dtype, device=image.device)
    return None


def _source_indices(shape: Sequence[int], linear: Tensor, offset: Tensor, device: torch.device) -> Tensor:
    """Input voxel index of every output voxel, ``(prod(S), D)``, for an integer voxel map."""
    axes = [torch.arange(n, device=device) for n in shape]
    out_index = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))
    linear_int = linear.round().to(torch.long).to(device)
    offset_int = offset.round().to(torch.long).to(device)
    return out_index @ linear_int.T + offset_int


def _flat_index(in_index: Tensor, shape: Sequence[int]) -> Tensor:
    strides = [1] * len(shape)
    for k in range(len(shape) - 2, -1, -1):
        strides[k] = strides[k + 1] * shape[k + 1]
    return (in_index * torch.tensor(strides, device=in_index.device)).sum(dim=1)


def _index_copy(tensor: Tensor, linear: Tensor, offset: Tensor, fill: Tensor | float | None) -> Tensor:
    """Gather one sample ``(C, *S)`` through an integer voxel map.

    Voxels mapped from outside the field of view get ``fill``, or repeat the
    nearest border voxel when ``fill`` is ``None``. Along an axis of size one
    every index maps onto its only voxel, as ``grid_sample`` does in the
    resampled path, so a translation along that axis never empties the slice.
    """
    shape = tuple(tensor.shape[1:])
    in_index = _source_indices(shape, linear, offset, tensor.device)
    sizes = torch.tensor(shape, device=tensor.device)
    inside = (((in_index >= 0) & (in_index < sizes)) | (sizes == 1)).all(dim=1)
    clamped = torch.minimum(in_index.clamp(min=0), sizes - 1)

    flat = tensor.reshape(tensor.shape[0], -1)
    gathered = flat[:, _flat_index(clamped, shape)]
    if fill is not None:
        fill_values = torch.as_tensor(fill, dtype=tensor.dtype, device=tensor.device).reshape(-1, 1).expand_as(gathered)
        gathered = torch.where(inside[None, :], gathered, fill_values)
    return gathered.reshape(tensor.shape)


def _class_index(label: Tensor) -> tuple[Tensor, Tensor]:
    """Map label values to class indices ``(B, *S)``, background 0 first.

    Returns the indices and the class values they stand for. Index 0 is always
    background (value 0), because ``grid_sample`` pads with 0 outside the field of
    view and an all-zero one-hot vector has its argmax at index 0.
    """
    present = torch.unique(label)
    classes = torch.cat([present.new_zeros(1), present[present != 0]])
    sorted_classes, order = torch.sort(classes)
    index = order[torch.searchsorted(sorted_classes, label[:, 0])]
    return index, classes


def _exact_integer_limit(dtype: torch.dtype) -> int:
    """Smallest magnitude from which integers are no longer all exact in floating ``dtype`` (2**24 for float32)."""
    return round(2.0 / torch.finfo(dtype).eps)


def _label_values_may_be_inexact(label_dtype: torch.dtype, grid_dtype: torch.dtype) -> bool:
    if label_dtype == torch.bool:
        return False
    if label_dtype.is_floating_point:
        return True
    info = torch.iinfo(label_dtype)
    return max(-info.min, info.max) >= _exact_integer_limit(grid_dtype)


@dataclass
class _LabelSource:
    """Tensor that ``grid_sample`` resamples for a group of labels, with its class values.

    ``values`` is ``(G, K, *S)`` in the grid dtype: the label values themselves
    (then ``classes`` is ``None``), their class indices (``K == 1``) or one-hot
    channels of the class indices. ``classes`` maps an index back to its label value.
    """

    values: Tensor
    classes: Tensor | None


def _label_source(label: Tensor, mode: str, dtype: torch.dtype) -> _LabelSource:
    if mode == "onehot":
        index, classes = _class_index(label)
        return _LabelSource(F.one_hot(index, len(classes)).movedim(-1, 1).to(dtype), classes)

    values = label.to(dtype)
    if _label_values_may_be_inexact(label.dtype, dtype):
        low, high = torch.aminmax(values)
        # Values at or beyond the limit may have been rounded by the conversion, so
        # nearest-neighbour sampling goes through exact class indices instead.
        if max(-float(low), float(high)) >= _exact_integer_limit(dtype):
            index, classes = _class_index(label)
            return _LabelSource(index[:, None].to(dtype), classes)
    return _LabelSource(values, None)


def _sample_label(source: _LabelSource, grid: Tensor, mode: str) -> Tensor:
    if mode == "onehot":
        warped = F.grid_sample(source.values, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        # Outside the field of view every channel is 0, so argmax picks index 0: background.
        return source.classes[warped.argmax(dim=1, keepdim=True)]

    # Zero padding is background whatever the image padding is. Nearest-neighbour
    # sampling only copies values, so the result contains input values and 0 only.
    warped = F.grid_sample(source.values, grid, mode="nearest", padding_mode="zeros", align_corners=True)
    if source.classes is None:
        return warped
    return source.classes[warped.to(torch.long)]


@dataclass
class _Group:
    """Resampled samples processed together: positions ``members`` in the resampled list, ``batch`` in the batch."""

    members: slice
    batch: slice | Tensor


def _groups(resampled: list[int], size: int, device: torch.device) -> Iterator[_Group]:
    for start in range(0, len(resampled), size):
        indices = resampled[start : start + size]
        consecutive = indices == list(range(indices[0], indices[0] + len(indices)))
        batch = slice(indices[0], indices[-1] + 1) if consecutive else torch.tensor(indices, device=device)
        yield _Group(slice(start, start + len(indices)), batch)


def _store(out: Tensor, batch: slice | Tensor, rows: slice, value: Tensor) -> None:
    """Write ``value`` into ``out[batch, :, rows]``, converting it to the dtype of ``out``."""
    if isinstance(batch, slice):
        # copy_ converts while writing, so no converted temporary is made.
        out[batch, :, rows].copy_(value)
    else:
        out[batch, :, rows] = value.to(out.dtype)


def _tile_layout(shape: Sequence[int], device: torch.device) -> tuple[int, int]:
    """Samples per group and output rows (along the first axis) per tile."""
    voxels = math.prod(shape)
    if device.type != "cpu":
        # One tile: cache-sized tiles are for CPU caches, and each tile costs kernel launches.
        # NOTE: never run on a GPU. CPU tests cover the same one-tile layout with small batches.
        return 1 << 30, shape[0]
    tile_voxels = _TILE_VOXELS_PER_THREAD * torch.get_num_threads()
    if voxels >= tile_voxels:
        return 1, max(1, tile_voxels // (voxels // shape[0]))
    return tile_voxels // voxels, shape[0]


def _resample(
    image: Tensor,
    label: Tensor | None,
    grid: _SamplingGrid,
    resampled: list[int],
    fill: Tensor | None,
    image_padding: str | float,
    label_mode: str,
    out_image: Tensor,
    out_label: Tensor | None,
) -> None:
    """Resample the samples at batch positions ``resampled`` into ``out_image`` and ``out_label``, tile by tile."""
    shape = tuple(image.shape[2:])
    samples_per_group, rows_per_tile = _tile_layout(shape, image.device)
    padding_mode = "border" if image_padding == "border" else "zeros"

    buffer = grid.new_buffer(min(samples_per_group, len(resampled)), min(rows_per_tile, shape[0]))
    for group in _groups(resampled, samples_per_group, image.device):
        group_image = image[group.batch]
        group_fill = None if fill is None else fill[group.batch]
        if group_fill is not None:
            # Sampling image - fill with zero padding, then adding fill back, pads with fill.
            group_image = group_image - group_fill
        elif image.device.type == "cpu" and isinstance(group.batch, slice):
            # grid_sample reads its input in rotated order, which is slow from main memory.
            # One sequential copy first brings the group into cache (indexing by a tensor
            # has copied it already). NOTE: measured on a shared 2-core AMD EPYC, the 2D
            # warp of 32x256x256 took about a third less CPU time, the 3D warp of
            # 8x64x64x64 about the same.
            group_image = group_image.clone()
        source = None if label is None else _label_source(label[group.batch], label_mode, grid.dtype)

        for start in range(0, shape[0], rows_per_tile):
            rows = slice(start, min(shape[0], start + rows_per_tile))
            tile_grid = grid.tile(group.members, group.batch, rows, buffer)
            warped = F.grid_sample(group_image, tile_grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
            if group_fill is not None:
                warped.add_(group_fill)
            _store(out_image, group.batch, rows, warped)
            if source is not None:
                _store(out_label, group.batch, rows, _sample_label(source, tile_grid, label_mode))


def _split_fields(
    displacement: Tensor | Sequence[Tensor] | None, batch_size: int, shape: tuple[int, ...]
) -> tuple[list[Tensor], list[Tensor]]:
    """Validate displacement fields and split them into control-point and per-voxel fields."""
    if displacement is None:
        return [], []
    fields = [displacement] if isinstance(displacement, Tensor) else list(displacement)
    ndim = len(shape)
    control, voxel = [], []
    for field in fields:
        if field.ndim != ndim + 2 or field.shape[0] != batch_size or field.shape[1] != ndim or min(field.shape[2:]) < 1:
            raise ValueError(
                f"displacement must have shape (B, D, *P) = ({batch_size}, {ndim}, ...) with {ndim} spatial axes, "
                f"got {tuple(field.shape)}"
            )
        (voxel if tuple(field.shape[2:]) == shape else control).append(field)
    return control, voxel


def warp(
    image: Tensor,
    label: Tensor | None,
    spacing: Tensor,
    forward: Tensor,
    displacement: Tensor | Sequence[Tensor] | None = None,
    *,
    image_padding: str | float = "minimum",
    label_mode: str = "nearest",
) -> tuple[Tensor, Tensor | None]:
    """Resample image and label through composed forward maps and optional displacements.

    Args:
        image: ``(B, C, *S)`` floating-point images.
        label: ``(B, 1, *S)`` integer label maps, or ``None``.
        spacing: ``(B, D)`` voxel spacing in millimetres.
        forward: ``(B, D + 1, D + 1)`` forward maps in centred millimetres.
        displacement: displacement in millimetres added to the sampling position of
            each output voxel, or ``None``. Either ``(B, D, *S)``, one vector per
            voxel, or ``(B, D, *P)`` with another shape ``P``: vectors at control
            points spaced evenly from the first to the last voxel centre along each
            axis, interpolated linearly (as ``F.interpolate`` with
            ``align_corners=True``). Control points are cheaper, because the field
            is interpolated inside the sampling grid instead of being stored per
            voxel. A sequence of such fields is summed.
        image_padding: fill of the image outside the field of view: ``"zeros"``,
            ``"minimum"`` or ``"mean"`` of each sample and channel, ``"otsu"`` (the
            mean of the darker Otsu class of the border voxels, see
            ``otsu_border_mean``), ``"border"`` (the nearest border voxel) or a
            number. Labels are padded with 0 whatever this is.
        label_mode: ``"nearest"`` neighbour, or ``"onehot"`` (linear
            interpolation of one-hot channels, then argmax).

    Returns:
        The warped image and label, with the input shapes and dtypes. Labels only
        take values of the input label or 0 (outside the field of view).
    """
    image_padding = check_image_padding(image_padding)
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    shape = tuple(image.shape[2:])
    ndim = len(shape)
    batch_size = image.shape[0]
    control_fields, voxel_fields = _split_fields(displacement, batch_size, shape)

    spacing = spacing.cpu()
    theta = normalised_affine(forward, shape, spacing)
    linear, offset = _voxel_map(theta, shape)
    exact = _is_integer(linear) & _is_integer(offset)
    if exact.any():
        # Only samples with an integer affine map can be exact, so only their fields are read.
        candidates = torch.nonzero(exact).flatten()
        for field in control_fields + voxel_fields:
            exact[candidates] &= _is_zero(field[candidates.to(field.device)])

    fill = _image_padding(image, image_padding)
    out_image = torch.empty_like(image)
    out_label = None if label is None else torch.empty_like(label)

    for b in torch.nonzero(exact).flatten().tolist():
        if image_padding == "border":
            image_fill = None
        else:
            image_fill = 0.0 if fill is None else fill[b]
        out_image[b] = _index_copy(image[b], linear[b], offset[b], image_fill)
        if label is not None:
            out_label[b] = _index_copy(label[b], linear[b], offset[b], 0)

    resampled = torch.nonzero(~exact).flatten().tolist()
    if resampled:
        selection = torch.tensor(resampled)
        unit = spacing[selection].to(torch.float64) * _half_extent(shape)
        selected_fields = [field[selection.to(field.device)] for field in control_fields]
        # Grids are built in the image dtype, and only the small matrices above in float64.
        grid = _SamplingGrid(theta[selection], shape, unit, selected_fields, voxel_fields, image.dtype, image.device)
        _resample(image, label, grid, resampled, fill, image_padding, label_mode, out_image, out_label)
    return out_image, out_label

"""Compose sampled spatial parameters into one grid and resample image and label once.

Shapes: images ``(B, C, *S)`` float, labels ``(B, 1, *S)`` integer class indices,
spacing ``(B, D)`` in millimetres, with ``S`` of length ``D`` (2 or 3).

Samples whose composed map sends voxel centres onto voxel centres (flips, exact
90 degree rotations, whole-voxel translations, identity) are copied by index, so
their values are bit-exact; every other sample is resampled with one
``grid_sample`` call per tensor.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

IMAGE_PADDING_MODES = ("zeros", "minimum", "mean", "border")
LABEL_MODES = ("nearest", "onehot")

# Tolerance, in voxels, below which a composed map counts as an exact index map.
_INTEGER_TOLERANCE = 1e-6


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


def _image_padding(image: Tensor, mode: str) -> Tensor:
    """Value per sample and channel that fills voxels sampled from outside the field of view."""
    reduce_dims = tuple(range(2, image.ndim))
    if mode == "minimum":
        return image.amin(dim=reduce_dims, keepdim=True)
    if mode == "mean":
        return image.mean(dim=reduce_dims, keepdim=True)
    return torch.zeros((image.shape[0], image.shape[1]) + (1,) * (image.ndim - 2), dtype=image.dtype, device=image.device)


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


def _resample_label(label: Tensor, grid: Tensor, mode: str) -> Tensor:
    if mode == "nearest":
        # Zero padding is background whatever the image padding is.
        warped = F.grid_sample(label.to(grid.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=True)
        return warped.round().to(label.dtype)

    classes = torch.unique(label)
    if classes[0] != 0:
        classes = torch.cat([classes.new_zeros(1), classes])
    index = torch.searchsorted(classes, label[:, 0])
    onehot = F.one_hot(index, len(classes)).movedim(-1, 1).to(grid.dtype)
    warped = F.grid_sample(onehot, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    # Outside the field of view every channel is 0, so argmax picks channel 0: background.
    return classes[warped.argmax(dim=1, keepdim=True)].to(label.dtype)


def warp(
    image: Tensor,
    label: Tensor | None,
    spacing: Tensor,
    forward: Tensor,
    displacement: Tensor | None = None,
    *,
    image_padding: str = "minimum",
    label_mode: str = "nearest",
) -> tuple[Tensor, Tensor | None]:
    """Resample image and label through composed forward maps and an optional displacement.

    Args:
        image: ``(B, C, *S)`` floating-point images.
        label: ``(B, 1, *S)`` integer label maps, or ``None``.
        spacing: ``(B, D)`` voxel spacing in millimetres.
        forward: ``(B, D + 1, D + 1)`` forward maps in centred millimetres.
        displacement: ``(B, D, *S)`` displacement in millimetres added to the
            sampling position of each output voxel, or ``None``.
        image_padding: fill of the image outside the field of view: ``"zeros"``,
            ``"minimum"`` or ``"mean"`` of each sample and channel, or ``"border"``.
        label_mode: ``"nearest"`` neighbour, or ``"onehot"`` (linear
            interpolation of one-hot channels, then argmax).

    Returns:
        The warped image and label, with the input shapes and dtypes.
    """
    if image_padding not in IMAGE_PADDING_MODES:
        raise ValueError(f"image_padding must be one of {IMAGE_PADDING_MODES}, got {image_padding!r}")
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    shape = tuple(image.shape[2:])
    ndim = len(shape)

    theta = normalised_affine(forward, shape, spacing.cpu())
    linear, offset = _voxel_map(theta, shape)
    exact = _is_integer(linear) & _is_integer(offset)
    if displacement is not None:
        exact &= displacement.flatten(1).abs().amax(dim=1).cpu() == 0

    fill = _image_padding(image, image_padding)
    out_image = torch.empty_like(image)
    out_label = None if label is None else torch.empty_like(label)

    for b in torch.nonzero(exact).flatten().tolist():
        image_fill = None if image_padding == "border" else fill[b]
        out_image[b] = _index_copy(image[b], linear[b], offset[b], image_fill)
        if label is not None:
            out_label[b] = _index_copy(label[b], linear[b], offset[b], 0)

    resampled = torch.nonzero(~exact).flatten()
    if len(resampled):
        index = resampled.to(image.device)
        # Grids are built in the image dtype; float64 only for the small matrices above.
        reversed_axes = list(reversed(range(ndim)))
        theta_xyz = theta[resampled][:, reversed_axes][:, :, reversed_axes + [ndim]]
        size = (len(resampled), 1) + shape
        with warnings.catch_warnings():
            # torch warns on every size-1 axis that such grids changed in 1.3; the
            # current behaviour (every position maps onto the only voxel) is intended.
            warnings.filterwarnings("ignore", message=".*unit-size grids.*")
            grid = F.affine_grid(theta_xyz.to(image.dtype).to(image.device), size, align_corners=True)
        if displacement is not None:
            unit = (spacing[resampled].to(torch.float64) * _half_extent(shape)).to(image.device)
            normalised = displacement.index_select(0, index).to(image.dtype) / unit.to(image.dtype).view(-1, ndim, *(1,) * ndim)
            grid = grid + normalised.flip(1).movedim(1, -1)
        sub_image = image.index_select(0, index)
        if image_padding == "border":
            warped = F.grid_sample(sub_image, grid, mode="bilinear", padding_mode="border", align_corners=True)
        else:
            sub_fill = fill.index_select(0, index)
            warped = F.grid_sample(sub_image - sub_fill, grid, mode="bilinear", padding_mode="zeros", align_corners=True) + sub_fill
        out_image[index] = warped
        if label is not None:
            out_label[index] = _resample_label(label.index_select(0, index), grid, label_mode)
    return out_image, out_label

"""Random transforms that remove fine detail: Gaussian blur and low-resolution simulation.

Both act on the image only, on its device, with the sampling and recording rules
of ``augment.intensity.IntensityTransform``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

from .intensity import IntensityTransform, check_bool, check_choice, parse_range, uniform, zero_to

__all__ = ["RandomGaussianBlur", "RandomLowResolution", "gaussian_blur"]

SIGMA_UNITS = ("mm", "voxel")
DOWNSAMPLE_MODES = ("nearest", "linear")

# Kernel radius in standard deviations, as in scipy.ndimage.gaussian_filter's default truncate=4.0.
KERNEL_TRUNCATE = 4.0

# Standard deviation, in voxels, given to kornia for entries that must not blur along
# an axis. At this width every kernel tap but the centre is exactly 0.0 in float64,
# so the convolution copies the input.
_DELTA_SIGMA = 1e-3


def _axis_kernel(kernel_1d: Tensor, axis: int, ndim: int) -> Tensor:
    """Reshape ``(N, K)`` kernels to ``(N, 1, .., K, .., 1)``, with ``K`` on spatial ``axis``, as kornia's filters expect."""
    shape = [kernel_1d.shape[0]] + [1] * ndim
    shape[1 + axis] = kernel_1d.shape[1]
    return kernel_1d.reshape(shape)


def gaussian_blur(image: Tensor, sigma_voxels: Tensor) -> Tensor:
    """Blur each sample and channel with its own separable Gaussian, ``sigma`` in voxels.

    Args:
        image: ``(B, C, *S)`` floating-point image, ``S`` of length 2 or 3.
        sigma_voxels: ``(B, C, D)`` standard deviations per axis, in voxels. A value
            of 0 leaves that axis unblurred.

    Returns:
        The blurred image, same shape and dtype. Kernels come from
        ``kornia.filters.get_gaussian_kernel1d`` with radius ``ceil(4 * sigma)`` of the
        largest ``sigma`` along the axis, and borders are reflected (kornia's
        ``filter2d``/``filter3d`` with ``border_type="reflect"``). Axes of size one are
        not blurred.

    NOTE: reflection needs a radius below the axis size, so along an axis shorter than
    the kernel the kernel is cut to ``2 * size - 1`` taps and renormalised, which blurs
    less than the requested sigma.
    """
    batch, channels = image.shape[:2]
    shape = tuple(image.shape[2:])
    ndim = len(shape)
    flat = image.reshape(batch * channels, 1, *shape)
    sigma = sigma_voxels.reshape(batch * channels, ndim).to(torch.float64)
    filter_nd = kornia.filters.filter2d if ndim == 2 else kornia.filters.filter3d

    for axis, size in enumerate(shape):
        axis_sigma = sigma[:, axis]
        largest = float(axis_sigma.max())
        if size == 1 or largest == 0.0:
            continue
        radius = min(math.ceil(KERNEL_TRUNCATE * largest), size - 1)
        kernel = kornia.filters.get_gaussian_kernel1d(2 * radius + 1, axis_sigma.clamp(min=_DELTA_SIGMA)[:, None])
        kernel = _axis_kernel(kernel.to(image.device, image.dtype), axis, ndim)
        flat = filter_nd(flat, kernel, border_type="reflect")
    return flat.reshape(image.shape)


class RandomGaussianBlur(IntensityTransform):
    """Blur with a Gaussian kernel of random width, separably along each axis.

    Args:
        sigma: range of the standard deviation. One number ``s`` means ``(0, s)``.
        units: ``"mm"`` (divided by each sample's spacing, so anisotropic volumes
            get the same physical blur along every axis) or ``"voxel"``.
        per_axis: draw one sigma per axis instead of one per sample.
        per_channel: draw sigmas per channel instead of per sample.
        p_per_channel: probability of blurring each channel of a selected sample.
        p: probability of blurring a sample.
    """

    def __init__(
        self,
        *,
        sigma: float | Sequence[float] = (0.5, 1.0),
        units: str = "mm",
        per_axis: bool = False,
        per_channel: bool = False,
        p_per_channel: float = 1.0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p, p_per_channel=p_per_channel)
        self.sigma = parse_range(sigma, "sigma", from_number=zero_to, minimum=0.0)
        self.units = check_choice(units, "units", SIGMA_UNITS)
        self.per_axis = check_bool(per_axis, "per_axis")
        self.per_channel = check_bool(per_channel, "per_channel")

    def _sample_parameters(self, batch_size, channels, spatial_shape, spacing, generator):
        ndim = len(spatial_shape)
        draw_shape = (batch_size, channels if self.per_channel else 1, ndim if self.per_axis else 1)
        sigma = uniform(generator, draw_shape, *self.sigma)
        return {"sigma": sigma.expand(batch_size, channels, ndim).contiguous()}

    def _identity(self, params):
        return (params["sigma"] == 0).all(dim=-1)

    def _transform(self, image, params, spacing, applied):
        sigma = params["sigma"]
        if self.units == "mm":
            sigma = sigma / spacing[:, None, :]
        # Entries left out by ``applied`` are not blurred, so they do not widen the kernel.
        sigma = torch.where(applied[..., None], sigma, 0.0)
        return gaussian_blur(image, sigma)


class RandomLowResolution(IntensityTransform):
    """Downsample by a random factor and upsample back to the original grid.

    Each selected sample and channel is resized to ``round(size * scale)`` voxels per
    axis (at least 1) with ``downsample_mode``, then back with linear
    interpolation (``align_corners=False``), as nnU-Net v2's
    ``SimulateLowResolutionTransform`` does. A scale that rounds to the original
    size leaves the entry unchanged.

    Args:
        scale: range of the fraction of voxels kept per axis, in (0, 1]. One
            number ``s`` means ``(s, 1)``.
        downsample_mode: ``"nearest"`` (PyTorch's ``nearest-exact``) or ``"linear"``.
        per_axis: draw one scale per axis instead of one per sample.
        per_channel: draw scales per channel instead of per sample.
        p_per_channel: probability of changing each channel of a selected sample.
        p: probability of changing a sample.
    """

    def __init__(
        self,
        *,
        scale: float | Sequence[float] = (0.5, 1.0),
        downsample_mode: str = "nearest",
        per_axis: bool = False,
        per_channel: bool = False,
        p_per_channel: float = 1.0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p, p_per_channel=p_per_channel)
        self.scale = parse_range(scale, "scale", from_number=lambda s: (s, 1.0), minimum=0.0, exclusive_minimum=True, maximum=1.0)
        self.downsample_mode = check_choice(downsample_mode, "downsample_mode", DOWNSAMPLE_MODES)
        self.per_axis = check_bool(per_axis, "per_axis")
        self.per_channel = check_bool(per_channel, "per_channel")

    def _sample_parameters(self, batch_size, channels, spatial_shape, spacing, generator):
        ndim = len(spatial_shape)
        draw_shape = (batch_size, channels if self.per_channel else 1, ndim if self.per_axis else 1)
        scale = uniform(generator, draw_shape, *self.scale)
        return {"scale": scale.expand(batch_size, channels, ndim).contiguous()}

    def _identity(self, params):
        return (params["scale"] == 1.0).all(dim=-1)

    def _transform(self, image, params, spacing, applied):
        shape = tuple(image.shape[2:])
        linear = "bilinear" if len(shape) == 2 else "trilinear"
        down_mode = "nearest-exact" if self.downsample_mode == "nearest" else linear
        down_kwargs = {} if self.downsample_mode == "nearest" else {"align_corners": False}
        out = image.clone()

        # Every entry may have its own low-resolution shape, so entries are resized one at a time.
        for b, c in torch.nonzero(applied).tolist():
            low_shape = tuple(max(1, round(size * float(s))) for size, s in zip(shape, params["scale"][b, c]))
            if low_shape == shape:
                continue
            entry = image[b : b + 1, c : c + 1]
            low = F.interpolate(entry, size=low_shape, mode=down_mode, **down_kwargs)
            out[b, c] = F.interpolate(low, size=shape, mode=linear, align_corners=False)[0, 0]
        return out

"""Building blocks shared by the segmentation networks: convolutions, norms, residual, SE and attention."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

NORMS = ("instance", "batch", "none")


def conv_class(spatial_dims: int) -> type[nn.Module]:
    """Return ``nn.Conv2d`` or ``nn.Conv3d`` for ``spatial_dims``."""
    return nn.Conv3d if spatial_dims == 3 else nn.Conv2d


def transposed_conv_class(spatial_dims: int) -> type[nn.Module]:
    """Return ``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d`` for ``spatial_dims``."""
    return nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d


class SingleValueSafeNorm(nn.Module):
    """Batch or instance normalisation that also accepts one value per channel.

    A normalised single value is 0 by definition, so the layer's output is then
    its bias. PyTorch raises instead, which crashes deep U-Nets whose bottleneck
    is one voxel (instance norm, or batch norm on a last batch of one sample).
    """

    def __init__(self, norm: nn.modules.batchnorm._NormBase) -> None:
        super().__init__()
        self.norm = norm

    def _values_per_channel(self, x: Tensor) -> int:
        spatial = x[0, 0].numel()
        uses_batch_statistics = isinstance(self.norm, nn.modules.batchnorm._BatchNorm) and (self.training or not self.norm.track_running_stats)
        return spatial * x.shape[0] if uses_batch_statistics else spatial

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.norm, nn.modules.batchnorm._BatchNorm) and not self.training and self.norm.track_running_stats:
            return self.norm(x)
        if self._values_per_channel(x) > 1:
            return self.norm(x)
        bias = self.norm.bias if self.norm.bias is not None else torch.zeros(x.shape[1], device=x.device, dtype=x.dtype)
        return x * 0 + bias.view(1, -1, *(1,) * (x.ndim - 2))


def make_norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    """Build an ``"instance"``, ``"batch"`` or ``"none"`` normalisation layer that accepts 1-voxel inputs."""
    if kind == "instance":
        cls = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d
        return SingleValueSafeNorm(cls(channels, affine=True))
    if kind == "batch":
        cls = nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d
        return SingleValueSafeNorm(cls(channels))
    return nn.Identity()


def check_options(model_name: str, spatial_dims: int, features: Sequence[int], norm: str) -> None:
    """Raise ``ValueError`` naming the model when an option every network shares is invalid."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"{model_name}: spatial_dims must be 2 or 3, got {spatial_dims}")
    if norm not in NORMS:
        raise ValueError(f"{model_name}: norm must be one of {NORMS}, got {norm!r}")
    if len(features) < 2 or any(f < 1 for f in features):
        raise ValueError(f"{model_name}: features must list at least two positive channel counts, got {list(features)}")


def check_input(x: Tensor, *, model_name: str, spatial_dims: int, divisor: int) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, C, *S)`` with every size in ``S`` a multiple of ``divisor``."""
    if x.ndim != spatial_dims + 2:
        axes = ", ".join("XYZ"[:spatial_dims])
        raise ValueError(f"{spatial_dims}D {model_name} expects input (B, C, {axes}), got shape {tuple(x.shape)}")
    if any(n % divisor for n in x.shape[2:]):
        raise ValueError(f"spatial sizes {tuple(x.shape[2:])} must be multiples of {divisor}; pad the input (segment.inference.pad_to_multiple)")


class ConvBlock(nn.Sequential):
    """Convolutions, each followed by normalisation and LeakyReLU; the first may stride."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *, norm: str, stride: int = 1, convs: int = 2) -> None:
        layers: list[nn.Module] = []
        for index in range(convs):
            layers += [
                conv_class(spatial_dims)(in_channels if index == 0 else out_channels, out_channels, 3, stride=stride if index == 0 else 1, padding=1),
                make_norm(norm, spatial_dims, out_channels),
                nn.LeakyReLU(0.01, inplace=True),
            ]
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with normalisation, added to a shortcut, then LeakyReLU.

    The shortcut is the identity when shape and channels are kept, otherwise a
    strided 1x1 convolution with normalisation (a projection shortcut).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *, norm: str, stride: int = 1) -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        self.residual = nn.Sequential(
            conv(in_channels, out_channels, 3, stride=stride, padding=1),
            make_norm(norm, spatial_dims, out_channels),
            nn.LeakyReLU(0.01, inplace=True),
            conv(out_channels, out_channels, 3, padding=1),
            make_norm(norm, spatial_dims, out_channels),
        )
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(conv(in_channels, out_channels, 1, stride=stride), make_norm(norm, spatial_dims, out_channels))
        self.activation = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.residual(x) + self.shortcut(x))


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation: channels scaled by a sigmoid gate computed from their global average.

    The gate is a two-layer MLP whose hidden layer has ``channels // reduction``
    units, at least one.
    """

    def __init__(self, channels: int, *, reduction: int = 4) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be a positive integer, got {reduction}")
        hidden = max(1, channels // reduction)
        self.excitation = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        squeezed = x.mean(dim=tuple(range(2, x.ndim)))
        scale = self.excitation(squeezed)
        return x * scale.view(*scale.shape, *(1,) * (x.ndim - 2))


class SEConvBlock(nn.Sequential):
    """``ConvBlock`` followed by squeeze-and-excitation of its output channels."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *, norm: str, stride: int = 1, reduction: int = 4) -> None:
        super().__init__(
            ConvBlock(spatial_dims, in_channels, out_channels, norm=norm, stride=stride),
            SqueezeExcitation(out_channels, reduction=reduction),
        )


class AttentionGate(nn.Module):
    """Additive attention gate on a skip connection, as in Attention U-Net.

    The coefficient ``sigmoid(psi(relu(W_x skip + W_g gating)))`` in ``[0, 1]``
    scales every skip voxel. Here ``gating`` is the upsampled decoder feature,
    so both inputs have the skip's spatial size and no resampling is needed.
    """

    def __init__(self, spatial_dims: int, skip_channels: int, gating_channels: int, *, norm: str) -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        inter_channels = max(1, skip_channels // 2)
        self.skip_projection = nn.Sequential(conv(skip_channels, inter_channels, 1), make_norm(norm, spatial_dims, inter_channels))
        self.gating_projection = nn.Sequential(conv(gating_channels, inter_channels, 1), make_norm(norm, spatial_dims, inter_channels))
        self.coefficient = nn.Sequential(nn.ReLU(inplace=True), conv(inter_channels, 1, 1), nn.Sigmoid())

    def forward(self, skip: Tensor, gating: Tensor) -> Tensor:
        return skip * self.coefficient(self.skip_projection(skip) + self.gating_projection(gating))

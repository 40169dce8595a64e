"""U-Net for 2D and 3D segmentation with configurable depth and width."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

_NORMS = ("instance", "batch", "none")


def _conv(spatial_dims: int) -> type[nn.Module]:
    return nn.Conv3d if spatial_dims == 3 else nn.Conv2d


def _norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    if kind == "instance":
        cls = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d
        return cls(channels, affine=True)
    if kind == "batch":
        cls = nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d
        return cls(channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Convolutions, each followed by normalisation and LeakyReLU; the first may stride."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *, norm: str, stride: int = 1, convs: int = 2) -> None:
        layers: list[nn.Module] = []
        for index in range(convs):
            layers += [
                _conv(spatial_dims)(in_channels if index == 0 else out_channels, out_channels, 3, stride=stride if index == 0 else 1, padding=1),
                _norm(norm, spatial_dims, out_channels),
                nn.LeakyReLU(0.01, inplace=True),
            ]
        super().__init__(*layers)


class UNet(nn.Module):
    """Encoder-decoder with skip connections; strided convolutions downsample.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits), background included.
        spatial_dims: 2 or 3.
        features: channels per level, shallowest first; its length is the depth.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.

    Shape:
        input ``(B, in_channels, *S)`` with every size in ``S`` a multiple of
        ``divisor``; output ``(B, num_classes, *S)``. ``segment.inference``
        pads other sizes and crops the prediction back.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        spatial_dims: int = 3,
        features: Sequence[int] = (16, 32, 64, 128),
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        if len(features) < 2 or any(f < 1 for f in features):
            raise ValueError(f"features must list at least two positive channel counts, got {list(features)}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.divisor = 2 ** (len(features) - 1)

        self.encoder = nn.ModuleList()
        channels = in_channels
        for level, width in enumerate(features):
            self.encoder.append(ConvBlock(spatial_dims, channels, width, norm=norm, stride=1 if level == 0 else 2))
            channels = width

        transpose = nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(features[:-1]):
            self.upsample.append(transpose(channels, width, 2, stride=2))
            self.decoder.append(ConvBlock(spatial_dims, 2 * width, width, norm=norm))
            channels = width
        self.head = _conv(spatial_dims)(channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"{self.spatial_dims}D U-Net expects input (B, C, {', '.join('XYZ'[: self.spatial_dims])}), got shape {tuple(x.shape)}"
            )
        bad = [n for n in x.shape[2:] if n % self.divisor]
        if bad:
            raise ValueError(f"spatial sizes {tuple(x.shape[2:])} must be multiples of {self.divisor}; pad the input (segment.inference.pad_to_multiple)")
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        for upsample, block, skip in zip(self.upsample, self.decoder, reversed(skips[:-1])):
            x = block(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)

"""DeepLabV3+ for 2D images: residual encoder, atrous spatial pyramid pooling (ASPP) and a light decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import ConvBlock, ResidualBlock, check_input, check_options, make_norm


def _conv_norm_act(in_channels: int, out_channels: int, *, norm: str, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation),
        make_norm(norm, 2, out_channels),
        nn.LeakyReLU(0.01, inplace=True),
    )


class AtrousSpatialPyramidPooling(nn.Module):
    """ASPP: a 1x1 convolution, 3x3 convolutions at each dilation rate and global average pooling, fused by a 1x1 convolution."""

    def __init__(self, in_channels: int, out_channels: int, *, rates: Sequence[int], norm: str) -> None:
        super().__init__()
        self.branches = nn.ModuleList([_conv_norm_act(in_channels, out_channels, norm=norm)])
        for rate in rates:
            self.branches.append(_conv_norm_act(in_channels, out_channels, norm=norm, kernel_size=3, dilation=rate))
        self.image_pooling = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_norm_act(in_channels, out_channels, norm=norm))
        self.projection = _conv_norm_act(out_channels * (len(rates) + 2), out_channels, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        outputs = [branch(x) for branch in self.branches]
        outputs.append(self.image_pooling(x).expand(-1, -1, *x.shape[2:]))
        return self.projection(torch.cat(outputs, dim=1))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ for 2D images. A 3D request raises ``ValueError``.

    The encoder is a ``ConvBlock`` followed by one strided ``ResidualBlock``
    per further level. ASPP runs on the deepest level. The decoder upsamples
    the ASPP output bilinearly to the low-level features of level
    ``max(1, len(features) - 3)``, whose stride is a quarter of the deepest
    one when there are four or more levels. It then fuses both with a
    ``ConvBlock``, applies a 1x1 head and upsamples the logits bilinearly to
    the input size.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits), background included.
        spatial_dims: must be 2.
        features: channels per level, shallowest first, at least three levels.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        atrous_rates: dilation rates of the ASPP 3x3 branches, in pixels of
            the deepest level. The default (6, 12, 18) is what the DeepLabv3
            authors use at output stride 16 (``2 ** 4``, five levels here).
            Scale the rates with the stride for other depths. A rate larger
            than the deepest feature map reads only zero padding beyond the
            centre tap, so small images need smaller rates.
        aspp_channels: channels of every ASPP branch, or ``None`` for ``features[-1]``.

    Shape:
        input ``(B, in_channels, X, Y)`` with ``X`` and ``Y`` multiples of
        ``divisor``; output ``(B, num_classes, X, Y)``.
    """

    display_name = "DeepLabV3+"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        spatial_dims: int = 2,
        features: Sequence[int] = (16, 32, 64, 128),
        norm: str = "instance",
        atrous_rates: Sequence[int] = (6, 12, 18),
        aspp_channels: int | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"deeplabv3+ supports only 2D images: spatial_dims must be 2, got {spatial_dims}; use a U-Net variant for 3D")
        check_options(self.display_name, spatial_dims, features, norm)
        if len(features) < 3:
            raise ValueError(f"{self.display_name}: features must list at least three levels, got {list(features)}")
        if not atrous_rates or any(rate < 1 for rate in atrous_rates):
            raise ValueError(f"{self.display_name}: atrous_rates must be positive integers, got {list(atrous_rates)}")
        self.spatial_dims = 2
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.divisor = 2 ** (len(features) - 1)
        self.low_level = max(1, len(features) - 3)
        aspp_width = features[-1] if aspp_channels is None else aspp_channels

        self.encoder = nn.ModuleList([ConvBlock(2, in_channels, features[0], norm=norm)])
        for level in range(1, len(features)):
            self.encoder.append(ResidualBlock(2, features[level - 1], features[level], norm=norm, stride=2))
        self.aspp = AtrousSpatialPyramidPooling(features[-1], aspp_width, rates=atrous_rates, norm=norm)

        low_width = features[self.low_level]
        self.low_level_projection = _conv_norm_act(low_width, low_width, norm=norm)
        self.decoder = ConvBlock(2, aspp_width + low_width, low_width, norm=norm)
        self.head = nn.Conv2d(low_width, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, model_name=self.display_name, spatial_dims=2, divisor=self.divisor)
        size = x.shape[2:]

        low_level_features = None
        for level, block in enumerate(self.encoder):
            x = block(x)
            if level == self.low_level:
                low_level_features = x

        context = self.aspp(x)
        low = self.low_level_projection(low_level_features)
        context = F.interpolate(context, size=low.shape[2:], mode="bilinear", align_corners=False)
        logits = self.head(self.decoder(torch.cat([context, low], dim=1)))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

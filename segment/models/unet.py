"""U-Net for 2D and 3D segmentation with configurable depth and width."""

from __future__ import annotations

from collections.abc import Sequence

from .blocks import ConvBlock, SingleValueSafeNorm
from .encoder_decoder import EncoderDecoder


class UNet(EncoderDecoder):
    """U-Net with two 3x3 convolutions, each with normalisation and LeakyReLU, per block.

    Args and shapes as in ``EncoderDecoder``.
    """

    display_name = "U-Net"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        spatial_dims: int = 3,
        features: Sequence[int] = (16, 32, 64, 128),
        norm: str = "instance",
        deep_supervision: bool = False,
    ) -> None:
        super().__init__(
            in_channels,
            num_classes,
            block=ConvBlock,
            spatial_dims=spatial_dims,
            features=features,
            norm=norm,
            deep_supervision=deep_supervision,
        )


__all__ = ["ConvBlock", "SingleValueSafeNorm", "UNet"]

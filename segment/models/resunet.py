"""Residual U-Net: the U-Net layout with residual blocks."""

from __future__ import annotations

from collections.abc import Sequence

from .blocks import ResidualBlock
from .encoder_decoder import EncoderDecoder


class ResUNet(EncoderDecoder):
    """U-Net whose blocks are ``ResidualBlock``. The first block of each deeper level downsamples with stride 2.

    Args and shapes as in ``EncoderDecoder``.
    """

    display_name = "residual U-Net"

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
            block=ResidualBlock,
            spatial_dims=spatial_dims,
            features=features,
            norm=norm,
            deep_supervision=deep_supervision,
        )

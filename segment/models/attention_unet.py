"""Attention U-Net: the U-Net layout with additive attention gates on the skip connections."""

from __future__ import annotations

from collections.abc import Sequence

from .blocks import AttentionGate, ConvBlock
from .encoder_decoder import EncoderDecoder


class AttentionUNet(EncoderDecoder):
    """U-Net whose skips pass through an ``AttentionGate`` driven by the upsampled decoder feature.

    Args and shapes as in ``EncoderDecoder``.
    """

    display_name = "attention U-Net"

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
            gate=AttentionGate,
            spatial_dims=spatial_dims,
            features=features,
            norm=norm,
            deep_supervision=deep_supervision,
        )

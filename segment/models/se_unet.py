"""SE U-Net: the U-Net layout with squeeze-and-excitation after every block."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from .blocks import SEConvBlock
from .encoder_decoder import EncoderDecoder


class SEUNet(EncoderDecoder):
    """U-Net whose blocks reweight their output channels by squeeze-and-excitation.

    Args:
        se_reduction: the SE bottleneck has ``channels // se_reduction`` units
            (at least one).

    Other args and shapes as in ``EncoderDecoder``.
    """

    display_name = "SE U-Net"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        spatial_dims: int = 3,
        features: Sequence[int] = (16, 32, 64, 128),
        norm: str = "instance",
        deep_supervision: bool = False,
        se_reduction: int = 4,
    ) -> None:
        super().__init__(
            in_channels,
            num_classes,
            block=partial(SEConvBlock, reduction=se_reduction),
            spatial_dims=spatial_dims,
            features=features,
            norm=norm,
            deep_supervision=deep_supervision,
        )

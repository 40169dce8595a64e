"""The U-Net layout that UNet, ResUNet, SEUNet and AttentionUNet share. They differ only in their blocks and skip gates."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .blocks import check_input, check_options, conv_class, transposed_conv_class

BlockFactory = Callable[..., nn.Module]
"""Called as ``factory(spatial_dims, in_channels, out_channels, norm=..., stride=...)``."""

GateFactory = Callable[..., nn.Module]
"""Called as ``factory(spatial_dims, skip_channels, gating_channels, norm=...)``. The module it returns is called as ``gate(skip, gating)``."""


class EncoderDecoder(nn.Module):
    """Encoder-decoder with skip connections, downsampling by strided convolutions and upsampling by transposed ones.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits), background included.
        block: builds the encoder and decoder blocks.
        gate: builds a module that filters each skip connection using the
            upsampled decoder feature. ``None`` concatenates skips unchanged.
        spatial_dims: 2 or 3.
        features: channels per level, shallowest first; its length is the depth.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        deep_supervision: in training mode, also return logits of the lower
            decoder levels.

    Shape:
        input ``(B, in_channels, *S)`` with every size in ``S`` a multiple of
        ``divisor``; output ``(B, num_classes, *S)``. With deep supervision in
        training mode the output is a list of ``len(features) - 1`` logits,
        the full-resolution one first and then each coarser decoder level
        (sizes ``S / 2``, ``S / 4``, ...). ``segment.inference`` pads other sizes
        and crops the prediction back.
    """

    display_name = "U-Net"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        block: BlockFactory,
        gate: GateFactory | None = None,
        spatial_dims: int = 3,
        features: Sequence[int] = (16, 32, 64, 128),
        norm: str = "instance",
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        check_options(self.display_name, spatial_dims, features, norm)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.deep_supervision = deep_supervision
        self.divisor = 2 ** (len(features) - 1)

        self.encoder = nn.ModuleList()
        channels = in_channels
        for level, width in enumerate(features):
            self.encoder.append(block(spatial_dims, channels, width, norm=norm, stride=1 if level == 0 else 2))
            channels = width

        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.gates = nn.ModuleList() if gate is not None else None
        for width in reversed(features[:-1]):
            self.upsample.append(transposed_conv_class(spatial_dims)(channels, width, 2, stride=2))
            if self.gates is not None:
                self.gates.append(gate(spatial_dims, width, width, norm=norm))
            self.decoder.append(block(spatial_dims, 2 * width, width, norm=norm))
            channels = width
        self.head = conv_class(spatial_dims)(channels, num_classes, 1)

        # One 1x1 head per coarser decoder level, finest first: levels 1 .. depth-2.
        if deep_supervision:
            self.deep_heads = nn.ModuleList(conv_class(spatial_dims)(width, num_classes, 1) for width in features[1:-1])

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        check_input(x, model_name=self.display_name, spatial_dims=self.spatial_dims, divisor=self.divisor)

        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)

        decoder_features = []
        for index, (upsample, block, skip) in enumerate(zip(self.upsample, self.decoder, reversed(skips[:-1]))):
            upsampled = upsample(x)
            if self.gates is not None:
                skip = self.gates[index](skip, upsampled)
            x = block(torch.cat([upsampled, skip], dim=1))
            decoder_features.append(x)

        logits = self.head(x)
        if not (self.deep_supervision and self.training):
            return logits
        coarser = reversed(decoder_features[:-1])
        return [logits, *(head(feature) for head, feature in zip(self.deep_heads, coarser))]

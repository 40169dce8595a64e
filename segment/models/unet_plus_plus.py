"""UNet++: a U-Net with nested, densely connected skip pathways and deep supervision."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .blocks import ConvBlock, check_input, check_options, conv_class, transposed_conv_class


class UNetPlusPlus(nn.Module):
    """UNet++ with one full-resolution output per nested depth.

    Node ``X[i][j]`` sits at level ``i`` (resolution ``S / 2**i``) and nested
    depth ``j``. Column ``j = 0`` is the encoder. Every other node is a
    ``ConvBlock`` applied to ``X[i][0..j-1]`` concatenated with the upsampled
    ``X[i+1][j-1]``. The top row ``X[0][1..D]`` (``D = len(features) - 1``) each
    has a 1x1 head, so every nested depth predicts at full resolution.

    Args:
        in_channels: image channels.
        num_classes: output channels (logits), background included.
        spatial_dims: 2 or 3.
        features: channels per level, shallowest first. Its length is the depth.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        deep_supervision: in training mode, return the logits of every nested
            depth, deepest first. Without it only ``X[0][D]`` has a head.
        inference_depth: in evaluation mode, compute only the sub-network
            that ``X[0][inference_depth]`` needs and return its logits (the
            pruned fast-inference mode). ``None`` uses the full depth ``D``.
            Depths below ``D`` need ``deep_supervision``, because only then
            are their heads trained.

    Shape:
        input ``(B, in_channels, *S)`` with every size in ``S`` a multiple of
        ``divisor``. Output ``(B, num_classes, *S)``. With deep supervision in
        training mode the output is a list of ``D`` such logits, depth ``D``
        first and depth 1 last.
    """

    display_name = "UNet++"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        spatial_dims: int = 3,
        features: Sequence[int] = (16, 32, 64, 128),
        norm: str = "instance",
        deep_supervision: bool = True,
        inference_depth: int | None = None,
    ) -> None:
        super().__init__()
        check_options(self.display_name, spatial_dims, features, norm)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.deep_supervision = deep_supervision
        self.max_depth = len(features) - 1
        self.divisor = 2**self.max_depth

        self.encoder = nn.ModuleList()
        channels = in_channels
        for level, width in enumerate(features):
            self.encoder.append(ConvBlock(spatial_dims, channels, width, norm=norm, stride=1 if level == 0 else 2))
            channels = width

        # Keys are "i_j" for node X[i][j], j >= 1.
        self.upsample = nn.ModuleDict()
        self.nodes = nn.ModuleDict()
        for j in range(1, self.max_depth + 1):
            for i in range(self.max_depth + 1 - j):
                self.upsample[f"{i}_{j}"] = transposed_conv_class(spatial_dims)(features[i + 1], features[i], 2, stride=2)
                self.nodes[f"{i}_{j}"] = ConvBlock(spatial_dims, features[i] * (j + 1), features[i], norm=norm)

        conv = conv_class(spatial_dims)
        self.head = conv(features[0], num_classes, 1)
        if deep_supervision:
            # deep_heads[j - 1] reads X[0][j] for j = 1 .. D-1.
            self.deep_heads = nn.ModuleList(conv(features[0], num_classes, 1) for _ in range(self.max_depth - 1))
        self.inference_depth = inference_depth

    @property
    def inference_depth(self) -> int | None:
        """Nested depth whose output evaluation mode returns, or ``None`` for the full depth."""
        return self._inference_depth

    @inference_depth.setter
    def inference_depth(self, depth: int | None) -> None:
        if depth is not None and not 1 <= depth <= self.max_depth:
            raise ValueError(f"UNet++: inference_depth must be between 1 and {self.max_depth} or None, got {depth}")
        if depth is not None and depth < self.max_depth and not self.deep_supervision:
            raise ValueError(f"UNet++: inference_depth {depth} needs deep_supervision=True, because only then is its head trained")
        self._inference_depth = depth

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        check_input(x, model_name=self.display_name, spatial_dims=self.spatial_dims, divisor=self.divisor)
        pruned = not self.training and self.inference_depth is not None
        depth = self.inference_depth if pruned else self.max_depth

        # grid[i] lists X[i][0], X[i][1], ... as they are computed.
        grid: list[list[Tensor]] = []
        for level in range(depth + 1):
            x = self.encoder[level](x)
            grid.append([x])
        for j in range(1, depth + 1):
            for i in range(depth + 1 - j):
                upsampled = self.upsample[f"{i}_{j}"](grid[i + 1][j - 1])
                grid[i].append(self.nodes[f"{i}_{j}"](torch.cat([*grid[i], upsampled], dim=1)))

        top = grid[0]
        if self.training and self.deep_supervision:
            return [self.head(top[depth]), *(self.deep_heads[j - 1](top[j]) for j in range(depth - 1, 0, -1))]
        if depth == self.max_depth:
            return self.head(top[depth])
        return self.deep_heads[depth - 1](top[depth])

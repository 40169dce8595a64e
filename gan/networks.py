"""Generators and the PatchGAN discriminator for 2D slice GANs.

Tensors are ``(B, C, X, Y)``. Generators end in ``tanh``, so their outputs lie in
``[-1, 1]``, the range ``gan.intensity`` maps images to. For 2.5D inputs the
neighbouring slices are extra input channels.

Both generators upsample by resizing (nearest or bilinear) and then convolving.
A transposed convolution with a stride that does not divide its kernel overlaps
unevenly and prints checkerboard patterns into the output (Odena, Dumoulin and
Olah, "Deconvolution and Checkerboard Artifacts", Distill 2016), so none is used.
Both generators accept any input size: they pad the input to a multiple of their
total downsampling factor (replicating edge pixels) and crop the output back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import GanError

NORMS = ("instance", "batch", "none")
UPSAMPLING = ("nearest", "bilinear")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def _check_choice(value: str, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise GanError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_positive(value: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise GanError(f"{name} must be a positive integer, got {value!r}")


def _pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Pad the last two axes at their high end to a multiple of ``multiple``; return the original size."""
    size = (x.shape[-2], x.shape[-1])
    pad_x = (-size[0]) % multiple
    pad_y = (-size[1]) % multiple
    if pad_x or pad_y:
        # F.pad lists the last axis first.
        x = F.pad(x, (0, pad_y, 0, pad_x), mode="replicate")
    return x, size


class _ResizeConv(nn.Sequential):
    """Double the spatial size by interpolation, then a 3x3 convolution, norm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, mode: str, norm: str) -> None:
        upsample = nn.Upsample(scale_factor=2, mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
        super().__init__(
            upsample,
            nn.ReflectionPad2d(1),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, bias=norm != "batch"),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """Two reflection-padded 3x3 convolutions with a skip connection (same channels in and out)."""

    def __init__(self, channels: int, *, norm: str = "instance", dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, bias=norm != "batch"),
            _norm(norm, channels),
            nn.ReLU(inplace=True),
        ]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, kernel_size=3, bias=norm != "batch"), _norm(norm, channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN-style generator: 7x7 stem, strided downsampling, residual blocks, resize-convolution upsampling.

    With the defaults (``features=64``, ``downsampling=2``, ``blocks=9``) this is the
    layout of Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent
    Adversarial Networks" (ICCV 2017), except that upsampling resizes and then convolves.

    Args:
        in_channels: input channels (1, or ``2 * context + 1`` for 2.5D).
        out_channels: output channels.
        features: channels after the stem; each downsampling doubles them.
        blocks: residual blocks at the lowest resolution.
        downsampling: number of stride-2 convolutions (and of upsampling steps).
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        upsampling: interpolation before each upsampling convolution, ``"nearest"`` or ``"bilinear"``.
        dropout: dropout probability inside the residual blocks.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        features: int = 64,
        blocks: int = 9,
        downsampling: int = 2,
        norm: str = "instance",
        upsampling: str = "nearest",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for value, name in ((in_channels, "in_channels"), (out_channels, "out_channels"), (features, "features")):
            _check_positive(value, name)
        if not isinstance(blocks, int) or blocks < 0:
            raise GanError(f"blocks must be a non-negative integer, got {blocks!r}")
        if not isinstance(downsampling, int) or downsampling < 0:
            raise GanError(f"downsampling must be a non-negative integer, got {downsampling!r}")
        _check_choice(norm, NORMS, "norm")
        _check_choice(upsampling, UPSAMPLING, "upsampling")
        self.multiple = 2**downsampling

        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, features, kernel_size=7, bias=norm != "batch"),
            _norm(norm, features),
            nn.ReLU(inplace=True),
        ]
        channels = features
        for _ in range(downsampling):
            layers += [
                nn.Conv2d(channels, channels * 2, kernel_size=3, stride=2, padding=1, bias=norm != "batch"),
                _norm(norm, channels * 2),
                nn.ReLU(inplace=True),
            ]
            channels *= 2
        layers += [ResidualBlock(channels, norm=norm, dropout=dropout) for _ in range(blocks)]
        for _ in range(downsampling):
            layers.append(_ResizeConv(channels, channels // 2, mode=upsampling, norm=norm))
            channels //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(channels, out_channels, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, in_channels, X, Y)`` to ``(B, out_channels, X, Y)`` in ``[-1, 1]``."""
        padded, (size_x, size_y) = _pad_to_multiple(x, self.multiple)
        return self.model(padded)[..., :size_x, :size_y]


class _UNetLevel(nn.Module):
    """One U-Net level: downsample, the inner levels, upsample, concatenate the skip connection."""

    def __init__(self, outer: int, inner: int, submodule: nn.Module | None, *, norm: str, upsampling: str, dropout: float) -> None:
        super().__init__()
        innermost = submodule is None
        # The innermost level reaches 1x1 pixels for inputs of 2**depth, where instance norm is undefined.
        self.down = nn.Sequential(
            nn.LeakyReLU(0.2, inplace=False),
            nn.Conv2d(outer, inner, kernel_size=4, stride=2, padding=1, bias=norm != "batch"),
            nn.Identity() if innermost else _norm(norm, inner),
        )
        self.submodule = submodule if submodule is not None else nn.Identity()
        up_in = inner if innermost else inner * 2
        up: list[nn.Module] = [
            nn.ReLU(inplace=False),
            nn.Upsample(scale_factor=2, mode=upsampling, **({"align_corners": False} if upsampling == "bilinear" else {})),
            nn.ReflectionPad2d(1),
            nn.Conv2d(up_in, outer, kernel_size=3, bias=norm != "batch"),
            _norm(norm, outer),
        ]
        if dropout:
            up.append(nn.Dropout(dropout))
        self.up = nn.Sequential(*up)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.up(self.submodule(self.down(x)))], dim=1)


class UNetGenerator(nn.Module):
    """pix2pix-style U-Net generator (Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks", CVPR 2017).

    Each of ``depth`` levels halves the size with a 4x4 stride-2 convolution. The
    decoder resizes, convolves and concatenates the encoder features of the same level. Channels double per level up to ``8 * features``. Dropout in the decoder
    of the three innermost levels is the generator's source of randomness, as in
    pix2pix; keep the module in training mode at inference to sample with it.

    Args:
        in_channels: input channels (for a label map: one-hot classes times slices).
        out_channels: output channels.
        features: channels of the first level.
        depth: number of downsampling levels; inputs are padded to a multiple of ``2**depth``.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        upsampling: ``"nearest"`` or ``"bilinear"``.
        dropout: dropout probability in the three innermost decoder levels (0 disables it).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        features: int = 64,
        depth: int = 6,
        norm: str = "instance",
        upsampling: str = "nearest",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        for value, name in ((in_channels, "in_channels"), (out_channels, "out_channels"), (features, "features")):
            _check_positive(value, name)
        if not isinstance(depth, int) or depth < 2:
            raise GanError(f"depth must be an integer of at least 2, got {depth!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise GanError(f"dropout must be in [0, 1), got {dropout!r}")
        _check_choice(norm, NORMS, "norm")
        _check_choice(upsampling, UPSAMPLING, "upsampling")
        self.multiple = 2**depth

        widths = [min(features * 2**level, features * 8) for level in range(depth)]
        level: nn.Module | None = None
        for index in reversed(range(1, depth)):
            from_innermost = depth - 1 - index
            level = _UNetLevel(
                widths[index - 1],
                widths[index],
                level,
                norm=norm,
                upsampling=upsampling,
                dropout=dropout if from_innermost < 3 else 0.0,
            )
        self.stem = nn.Conv2d(in_channels, features, kernel_size=4, stride=2, padding=1)
        self.inner = level
        self.head = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Upsample(scale_factor=2, mode=upsampling, **({"align_corners": False} if upsampling == "bilinear" else {})),
            nn.ReflectionPad2d(1),
            nn.Conv2d(features * 2, out_channels, kernel_size=3),
            nn.Tanh(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, in_channels, X, Y)`` to ``(B, out_channels, X, Y)`` in ``[-1, 1]``."""
        padded, (size_x, size_y) = _pad_to_multiple(x, self.multiple)
        return self.head(self.inner(self.stem(padded)))[..., :size_x, :size_y]


GENERATORS: dict[str, type[nn.Module]] = {"resnet": ResnetGenerator, "unet": UNetGenerator}


def build_generator(name: str, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
    """Build a generator by registry name (``"resnet"`` or ``"unet"``).

    The returned module carries ``generator_config``, the mapping
    ``{"name", "in_channels", "out_channels", **kwargs}`` that ``gan.checkpoint``
    stores so the same network can be rebuilt.

    Raises:
        GanError: for an unknown name, keyword or invalid value.
    """
    if name not in GENERATORS:
        raise GanError(f"unknown generator {name!r}; use one of {sorted(GENERATORS)}")
    try:
        network = GENERATORS[name](in_channels, out_channels, **kwargs)
    except TypeError as error:
        raise GanError(f"invalid settings for generator {name!r}: {kwargs}; {error}") from error
    network.generator_config = {"name": name, "in_channels": in_channels, "out_channels": out_channels, **kwargs}
    return network


def receptive_field(layers: int = 3) -> int:
    """Receptive field in pixels of one output of ``PatchDiscriminator(layers=layers)``.

    Walking back from one output pixel, a convolution with kernel ``k`` and
    stride ``s`` turns a field of ``r`` pixels into ``(r - 1) * s + k``. The
    discriminator ends in two 4x4 stride-1 convolutions (r = 1 -> 4 -> 7) and
    starts with ``layers`` 4x4 stride-2 ones, so for 3 layers: 7 -> 16 -> 34 -> 70.
    """
    field = 1
    strides = [2] * layers + [1, 1]
    for stride in reversed(strides):
        field = (field - 1) * stride + 4
    return field


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator: one real/fake score per overlapping image patch.

    ``layers`` 4x4 stride-2 convolutions (channels ``features``, doubling to at most
    ``8 * features``) are followed by a 4x4 stride-1 convolution and a 4x4 stride-1
    convolution to one channel. Each output pixel depends on ``receptive_field(layers)``
    input pixels per side: 70 for the default 3 layers, the 70x70 PatchGAN of pix2pix.
    The output has no activation, for least-squares or logit losses.

    Args:
        in_channels: input channels (conditional GAN: label channels plus image channels).
        features: channels of the first convolution.
        layers: number of stride-2 convolutions.
        norm: ``"instance"``, ``"batch"`` or ``"none"``; never applied to the first convolution.
    """

    def __init__(self, in_channels: int = 1, *, features: int = 64, layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        _check_positive(in_channels, "in_channels")
        _check_positive(features, "features")
        _check_positive(layers, "layers")
        _check_choice(norm, NORMS, "norm")
        self.receptive_field = receptive_field(layers)

        blocks: list[nn.Module] = [nn.Conv2d(in_channels, features, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        channels = features
        for index in range(1, layers + 1):
            out = min(features * 2**index, features * 8)
            stride = 2 if index < layers else 1
            blocks += [
                nn.Conv2d(channels, out, kernel_size=4, stride=stride, padding=1, bias=norm != "batch"),
                _norm(norm, out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = out
        blocks.append(nn.Conv2d(channels, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        """Score ``(B, in_channels, X, Y)``: returns ``(B, 1, X', Y')`` patch scores."""
        return self.model(x)

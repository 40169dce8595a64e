"""Segmentation networks, built by name from a small registry."""

from __future__ import annotations

from typing import Any

from torch import nn

from .attention_unet import AttentionUNet
from .deeplab_v3_plus import DeepLabV3Plus
from .encoder_decoder import EncoderDecoder
from .resunet import ResUNet
from .se_unet import SEUNet
from .unet import UNet
from .unet_plus_plus import UNetPlusPlus

MODELS: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "resunet": ResUNet,
    "attention-unet": AttentionUNet,
    "se-unet": SEUNet,
    "unet++": UNetPlusPlus,
    "deeplabv3+": DeepLabV3Plus,
}

SPATIAL_DIMS: dict[str, tuple[int, ...]] = {
    "unet": (2, 3),
    "resunet": (2, 3),
    "attention-unet": (2, 3),
    "se-unet": (2, 3),
    "unet++": (2, 3),
    "deeplabv3+": (2,),
}
"""Spatial dimensions each registered model supports. Other values raise ``ValueError`` at construction."""


def build_model(name: str, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a registered model; unknown names raise ``ValueError`` listing the known ones.

    Every model has a ``divisor`` attribute: its input sizes must be multiples
    of it, and its output has the input's spatial shape.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    return MODELS[name](in_channels, num_classes, **kwargs)


__all__ = [
    "MODELS",
    "SPATIAL_DIMS",
    "AttentionUNet",
    "DeepLabV3Plus",
    "EncoderDecoder",
    "ResUNet",
    "SEUNet",
    "UNet",
    "UNetPlusPlus",
    "build_model",
]

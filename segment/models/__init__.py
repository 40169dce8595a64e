"""Segmentation networks, built by name from a small registry."""

from __future__ import annotations

from typing import Any

from torch import nn

from .unet import UNet

MODELS: dict[str, type[nn.Module]] = {"unet": UNet}


def build_model(name: str, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a registered model; unknown names raise ``ValueError`` listing the known ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    return MODELS[name](in_channels, num_classes, **kwargs)


__all__ = ["MODELS", "UNet", "build_model"]

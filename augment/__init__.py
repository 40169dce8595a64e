"""Batched 2D and 3D augmentation of image and label tensors with one fused resample."""

from .pipeline import Pipeline
from .seeding import derive_generator, derive_seed
from .spatial import RandomAffine, RandomElastic, RandomFlip, RandomRot90, SpatialTransform
from .strategies import PRESETS, TRANSFORMS, StrategyError, build_strategy, strategy_config
from .warp import warp

__all__ = [
    "PRESETS",
    "TRANSFORMS",
    "Pipeline",
    "RandomAffine",
    "RandomElastic",
    "RandomFlip",
    "RandomRot90",
    "SpatialTransform",
    "StrategyError",
    "build_strategy",
    "derive_generator",
    "derive_seed",
    "strategy_config",
    "warp",
]

"""Batched 2D and 3D augmentation of image and label tensors with one fused resample."""

from .artifacts import ARTIFACTS, MRIArtifacts
from .compose import Composition, OneOf, SomeOf, TransformSequence
from .intensity import (
    IntensityTransform,
    RandomAdditiveBrightness,
    RandomBiasField,
    RandomContrast,
    RandomGamma,
    RandomGaussianNoise,
    RandomMultiplicativeBrightness,
    RandomRicianNoise,
)
from .normalize import MinMaxNormalize, PercentileClip, ZScoreNormalize
from .pipeline import Pipeline
from .seeding import derive_generator, derive_seed
from .smoothing import RandomGaussianBlur, RandomLowResolution, gaussian_blur
from .spatial import RandomAffine, RandomElastic, RandomFlip, RandomRot90, SpatialTransform
from .strategies import (
    COMPOSITIONS,
    INTENSITY_TRANSFORMS,
    PRESETS,
    SPATIAL_TRANSFORMS,
    TRANSFORMS,
    StrategyError,
    build_strategy,
    build_worker_transform,
    strategy_config,
)
from .warp import warp

from .tta import invert_spatial, tta_predict

__all__ = [
    "ARTIFACTS",
    "COMPOSITIONS",
    "INTENSITY_TRANSFORMS",
    "PRESETS",
    "SPATIAL_TRANSFORMS",
    "TRANSFORMS",
    "Composition",
    "IntensityTransform",
    "MRIArtifacts",
    "MinMaxNormalize",
    "OneOf",
    "PercentileClip",
    "Pipeline",
    "RandomAdditiveBrightness",
    "RandomAffine",
    "RandomBiasField",
    "RandomContrast",
    "RandomElastic",
    "RandomFlip",
    "RandomGamma",
    "RandomGaussianBlur",
    "RandomGaussianNoise",
    "RandomLowResolution",
    "RandomMultiplicativeBrightness",
    "RandomRicianNoise",
    "RandomRot90",
    "SomeOf",
    "SpatialTransform",
    "StrategyError",
    "TransformSequence",
    "ZScoreNormalize",
    "build_strategy",
    "build_worker_transform",
    "derive_generator",
    "derive_seed",
    "gaussian_blur",
    "invert_spatial",
    "strategy_config",
    "tta_predict",
    "warp",
]

"""Named augmentation strategies and the mapping format that describes any strategy.

A strategy is a mapping such as::

    image_padding: minimum        # zeros | minimum | mean | border | otsu, or a number
    label_mode: nearest           # nearest | onehot
    transforms:                   # on the training device, whole batches
      - flip: {p: 0.5}
      - affine: {degrees: 15, translation: 4, p: 0.5}
      - one_of:
          transforms:
            - gaussian_noise: {std: 0.1}
            - gaussian_blur: {sigma: [0.5, 1.0]}
          p: 0.3
      - gamma: {gamma: [0.7, 1.5], p: 0.3}
    worker_transforms:            # TorchIO MRI artifacts in DataLoader workers
      - motion: {degrees: 5, translation: 5, p: 0.2}

Transform names map to the classes in ``TRANSFORMS``, ``COMPOSITIONS`` and
``augment.artifacts.ARTIFACTS``; their keys are the classes' keyword arguments.
Unknown names and keys are rejected with the key named, and invalid values with
the position of the transform. docs/strategies.md describes every transform.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .artifacts import ARTIFACTS, MRIArtifacts, artifact_keys
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
from .smoothing import RandomGaussianBlur, RandomLowResolution
from .spatial import RandomAffine, RandomElastic, RandomFlip, RandomRot90, SpatialTransform

SPATIAL_TRANSFORMS: dict[str, type[SpatialTransform]] = {
    "flip": RandomFlip,
    "rot90": RandomRot90,
    "affine": RandomAffine,
    "elastic": RandomElastic,
}

INTENSITY_TRANSFORMS: dict[str, type[IntensityTransform]] = {
    "gaussian_noise": RandomGaussianNoise,
    "rician_noise": RandomRicianNoise,
    "gamma": RandomGamma,
    "multiplicative_brightness": RandomMultiplicativeBrightness,
    "additive_brightness": RandomAdditiveBrightness,
    "contrast": RandomContrast,
    "gaussian_blur": RandomGaussianBlur,
    "bias_field": RandomBiasField,
    "low_resolution": RandomLowResolution,
    "zscore": ZScoreNormalize,
    "percentile_clip": PercentileClip,
    "minmax": MinMaxNormalize,
}

TRANSFORMS: dict[str, type[SpatialTransform] | type[IntensityTransform]] = {**SPATIAL_TRANSFORMS, **INTENSITY_TRANSFORMS}

COMPOSITIONS: dict[str, type[Composition]] = {
    "sequence": TransformSequence,
    "one_of": OneOf,
    "some_of": SomeOf,
}

_RIGID = [
    {"flip": {"p": 0.5}},
    {"affine": {"degrees": 15.0, "translation": 4.0, "p": 0.5}},
]

# Moderate intensity changes for z-scored images: each transform alone changes a
# sample with probability 0.1 to 0.3, so most batches still contain clean samples.
_INTENSITY = [
    {"gaussian_noise": {"std": [0.0, 0.1], "p": 0.15}},
    {"gaussian_blur": {"sigma": [0.5, 1.0], "units": "mm", "p": 0.2}},
    {"multiplicative_brightness": {"factor": [0.75, 1.25], "p": 0.15}},
    {"contrast": {"factor": [0.75, 1.25], "preserve_range": True, "p": 0.15}},
    {"bias_field": {"coefficients": 0.3, "order": 3, "p": 0.2}},
    {"low_resolution": {"scale": [0.5, 1.0], "p": 0.2}},
    {"gamma": {"gamma": [0.7, 1.5], "invert": True, "p": 0.1}},
    {"gamma": {"gamma": [0.7, 1.5], "p": 0.3}},
]

# Strengths below TorchIO's defaults (which target heavy corruption): motion of a
# few millimetres and degrees, faint ghosts and spikes.
_MRI_ARTIFACTS = [
    {"motion": {"degrees": 5.0, "translation": 5.0, "num_transforms": 2, "p": 0.2}},
    {"ghosting": {"num_ghosts": [2, 5], "intensity": [0.1, 0.4], "p": 0.2}},
    {"spike": {"num_spikes": 1, "intensity": [0.1, 0.3], "p": 0.1}},
    {"bias_field": {"coefficients": 0.3, "order": 3, "p": 0.3}},
]

# nnU-Net v2's default training augmentation: nnUNetTrainer.get_training_transforms in
# nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py of MIC-DKFZ/nnUNet (read at commit
# 017de4ad, nnunetv2 2.6), with the transforms of batchgeneratorsv2. Differences:
# - rotation is +-30 degrees about every axis, nnU-Net's value for 3D patches. nnU-Net
#   rotates 2D patches by +-180 degrees (+-15 when one side is over 1.5 times the other)
#   and augments strongly anisotropic 3D patches in 2D only.
# - nnU-Net draws a grid scale s from U(0.7, 1.4), which shrinks the anatomy by s.
#   Here the anatomy zoom is drawn uniformly from [1/1.4, 1/0.7], the same range.
# - mirroring is fused with rotation and scaling, before the intensity transforms,
#   while nnU-Net mirrors last. Flips commute with every listed intensity transform
#   except the exact grid of the nearest-neighbour downsampling.
# - Gaussian noise gets one standard deviation per sample but independent noise per
#   channel, while nnU-Net adds the same noise field to every channel.
_NNUNET = {
    "image_padding": "zeros",
    "label_mode": "onehot",
    "transforms": [
        {"affine": {"degrees": 30.0, "p": 0.2}},
        {"affine": {"scale": [1 / 1.4, 1 / 0.7], "isotropic": True, "p": 0.2}},
        {"flip": {"p": 0.5}},
        {"gaussian_noise": {"std": [0.0, 0.1], "p": 0.1}},
        {"gaussian_blur": {"sigma": [0.5, 1.0], "units": "voxel", "per_axis": True, "per_channel": True, "p_per_channel": 0.5, "p": 0.2}},
        {"multiplicative_brightness": {"factor": [0.75, 1.25], "split_at_one": True, "per_channel": True, "p": 0.15}},
        {"contrast": {"factor": [0.75, 1.25], "preserve_range": True, "split_at_one": True, "per_channel": True, "p": 0.15}},
        {"low_resolution": {"scale": [0.5, 1.0], "downsample_mode": "nearest", "per_channel": True, "p_per_channel": 0.5, "p": 0.25}},
        {"gamma": {"gamma": [0.7, 1.5], "invert": True, "retain_stats": True, "split_at_one": True, "per_channel": True, "p": 0.1}},
        {"gamma": {"gamma": [0.7, 1.5], "invert": False, "retain_stats": True, "split_at_one": True, "per_channel": True, "p": 0.3}},
    ],
}

# The preset definitions of "none", "rigid" and "nonrigid" are part of their run ids
# (a hash of the resolved configuration): changing them invalidates finished runs.
# Ranges are deliberately moderate: a 15 degree rotation and 15 % zoom keep
# anatomy recognisable, and 2 mm elastic displacement on a 5-point grid bends
# structures of hippocampus size without tearing them.
PRESETS: dict[str, dict[str, Any]] = {
    "none": {"transforms": []},
    "rigid": {"transforms": _RIGID},
    "nonrigid": {
        "transforms": [
            {"flip": {"p": 0.5}},
            {"affine": {"degrees": 15.0, "translation": 4.0, "scale": [0.85, 1.15], "shear": 0.1, "p": 0.5}},
            {"elastic": {"max_displacement": 2.0, "control_points": 5, "p": 0.3}},
        ]
    },
    "intensity": {"transforms": _INTENSITY},
    # worker_transforms act where the DataLoader's PatchDataset gets
    # build_worker_transform(strategy), as the study runner does.
    "mri-artifacts": {"transforms": [], "worker_transforms": _MRI_ARTIFACTS},
    "nnunet": _NNUNET,
    "all": {
        "transforms": [
            {"flip": {"p": 0.5}},
            {"affine": {"degrees": 15.0, "translation": 4.0, "scale": [0.85, 1.15], "shear": 0.1, "p": 0.5}},
            {"elastic": {"max_displacement": 2.0, "control_points": 5, "p": 0.3}},
            {
                "one_of": {
                    "transforms": [
                        {"gaussian_noise": {"std": [0.0, 0.1]}},
                        {"rician_noise": {"std": [0.0, 0.1]}},
                    ],
                    "p": 0.15,
                }
            },
            {"additive_brightness": {"shift": 0.1, "p": 0.15}},
            *_INTENSITY[1:],
        ],
        "worker_transforms": _MRI_ARTIFACTS,
    },
}

_TOP_LEVEL_KEYS = {"transforms", "worker_transforms", "image_padding", "label_mode"}


class StrategyError(ValueError):
    """An augmentation strategy name, file or mapping is invalid."""


def _suggest(key: str, choices: Any) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def strategy_config(strategy: str | Mapping[str, Any]) -> dict[str, Any]:
    """Resolve a preset name, a YAML file path or a mapping into a strategy mapping."""
    if isinstance(strategy, Mapping):
        return copy.deepcopy(dict(strategy))
    if strategy in PRESETS:
        return copy.deepcopy(PRESETS[strategy])
    path = Path(strategy)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise StrategyError(f"strategy file not found: {path}")
        loaded = yaml.safe_load(path.read_text())
        if not isinstance(loaded, Mapping):
            raise StrategyError(f"strategy file {path} must contain a mapping with a 'transforms' list")
        return dict(loaded)
    raise StrategyError(
        f"unknown strategy {strategy!r}{_suggest(strategy, PRESETS)}; "
        f"use one of {sorted(PRESETS)} or the path of a strategy YAML file"
    )


def _entry_items(entry: Any, where: str) -> tuple[str, dict[str, Any]]:
    """Split ``{name: {key: value}}`` into the name and a copy of its keyword arguments."""
    if not isinstance(entry, Mapping) or len(entry) != 1:
        raise StrategyError(f"{where} must be a mapping with one transform name, got {entry!r}")
    (name, kwargs), = entry.items()
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping):
        raise StrategyError(f"{where}.{name} must be a mapping of keyword arguments, got {kwargs!r}")
    return name, dict(kwargs)


def _check_keys(kwargs: Mapping[str, Any], accepted: set[str], name: str) -> None:
    for key in kwargs:
        if key not in accepted:
            raise StrategyError(f"unknown key {key!r} for transform {name!r}{_suggest(key, accepted)}")


def _keyword_names(cls: type) -> set[str]:
    return {p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _transform_list(entries: Any, where: str) -> list[Any]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise StrategyError(f"{where} must be a list of transforms, got {entries!r}")
    return entries


def _build_node(entry: Any, where: str) -> SpatialTransform | IntensityTransform | Composition:
    """Build one transform or composition from its mapping. ``where`` locates it in error messages."""
    name, kwargs = _entry_items(entry, where)
    if name in COMPOSITIONS:
        cls = COMPOSITIONS[name]
        _check_keys(kwargs, _keyword_names(cls) | {"transforms"}, name)
        if "transforms" not in kwargs:
            raise StrategyError(f"{where}.{name} is missing its 'transforms' list")
        child_where = f"{where}.{name}.transforms"
        children = [_build_node(child, f"{child_where}[{i}]") for i, child in enumerate(_transform_list(kwargs.pop("transforms"), child_where))]
        try:
            return cls(children, **kwargs)
        except (TypeError, ValueError) as error:
            raise StrategyError(f"invalid value in {where}.{name}: {error}") from error

    if name not in TRANSFORMS:
        raise StrategyError(f"unknown transform {name!r} at {where}{_suggest(name, {**TRANSFORMS, **COMPOSITIONS})}")
    cls = TRANSFORMS[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    _check_keys(kwargs, accepted, name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise StrategyError(f"invalid value in {where}.{name}: {error}") from error


def _validate_worker_entries(entries: Any) -> list[dict[str, Any]]:
    """Check names and keys of ``worker_transforms`` and build each entry once to check its values."""
    checked = []
    for position, entry in enumerate(_transform_list(entries, "worker_transforms")):
        where = f"worker_transforms[{position}]"
        name, kwargs = _entry_items(entry, where)
        if name not in ARTIFACTS:
            raise StrategyError(f"unknown MRI artifact {name!r} at {where}{_suggest(name, ARTIFACTS)}; use one of {sorted(ARTIFACTS)}")
        _check_keys(kwargs, artifact_keys(name), name)
        try:
            ARTIFACTS[name](**kwargs)
        except (TypeError, ValueError) as error:
            raise StrategyError(f"invalid value in {where}.{name}: {error}") from error
        checked.append({name: kwargs})
    return checked


def _checked_config(strategy: str | Mapping[str, Any]) -> dict[str, Any]:
    config = strategy_config(strategy)
    unknown = set(config) - _TOP_LEVEL_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise StrategyError(f"unknown strategy key {key!r}{_suggest(key, _TOP_LEVEL_KEYS)}")
    return config


def build_strategy(strategy: str | Mapping[str, Any]) -> Pipeline:
    """Build the on-device ``Pipeline`` from a preset name, a YAML file path or a strategy mapping.

    ``worker_transforms`` are validated here too, so an invalid strategy fails before
    training. ``build_worker_transform`` builds them.
    """
    config = _checked_config(strategy)
    transforms = [_build_node(entry, f"transforms[{i}]") for i, entry in enumerate(_transform_list(config.get("transforms"), "transforms"))]
    _validate_worker_entries(config.get("worker_transforms"))
    try:
        return Pipeline(
            transforms,
            image_padding=config.get("image_padding", "minimum"),
            label_mode=config.get("label_mode", "nearest"),
        )
    except ValueError as error:
        raise StrategyError(str(error)) from error


def build_worker_transform(strategy: str | Mapping[str, Any]) -> MRIArtifacts | None:
    """Build the DataLoader-worker transform of a strategy's ``worker_transforms``, or ``None`` when it has none.

    Pass the result to ``segment.PatchDataset(worker_transform=...)``.
    """
    config = _checked_config(strategy)
    entries = _validate_worker_entries(config.get("worker_transforms"))
    if not entries:
        return None
    return MRIArtifacts.from_config(entries)

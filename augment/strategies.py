"""Named augmentation strategies and the mapping format that describes any strategy.

A strategy is a mapping such as::

    image_padding: minimum        # zeros | minimum | mean | border
    label_mode: nearest           # nearest | onehot
    transforms:
      - flip: {p: 0.5}
      - affine: {degrees: 15, translation: 4, p: 0.5}
      - elastic: {max_displacement: 2.0, control_points: 5, p: 0.3}

Transform names map to the classes in ``augment.spatial``; their keys are the
classes' keyword arguments. Unknown names and keys are rejected with the key named.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .pipeline import Pipeline
from .spatial import RandomAffine, RandomElastic, RandomFlip, RandomRot90, SpatialTransform

TRANSFORMS: dict[str, type[SpatialTransform]] = {
    "flip": RandomFlip,
    "rot90": RandomRot90,
    "affine": RandomAffine,
    "elastic": RandomElastic,
}

_RIGID = [
    {"flip": {"p": 0.5}},
    {"affine": {"degrees": 15.0, "translation": 4.0, "p": 0.5}},
]

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
}

_TOP_LEVEL_KEYS = {"transforms", "image_padding", "label_mode"}


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


def build_strategy(strategy: str | Mapping[str, Any]) -> Pipeline:
    """Build a ``Pipeline`` from a preset name, a YAML file path or a strategy mapping."""
    config = strategy_config(strategy)
    unknown = set(config) - _TOP_LEVEL_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise StrategyError(f"unknown strategy key {key!r}{_suggest(key, _TOP_LEVEL_KEYS)}")

    transforms = []
    for position, entry in enumerate(config.get("transforms") or []):
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise StrategyError(f"transforms[{position}] must be a mapping with one transform name, got {entry!r}")
        (name, kwargs), = entry.items()
        if name not in TRANSFORMS:
            raise StrategyError(f"unknown transform {name!r} at transforms[{position}]{_suggest(name, TRANSFORMS)}")
        cls = TRANSFORMS[name]
        kwargs = dict(kwargs or {})
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        for key in kwargs:
            if key not in accepted:
                raise StrategyError(f"unknown key {key!r} for transform {name!r}{_suggest(key, accepted)}")
        try:
            transforms.append(cls(**kwargs))
        except (TypeError, ValueError) as error:
            raise StrategyError(f"invalid value in transforms[{position}].{name}: {error}") from error

    try:
        return Pipeline(
            transforms,
            image_padding=config.get("image_padding", "minimum"),
            label_mode=config.get("label_mode", "nearest"),
        )
    except ValueError as error:
        raise StrategyError(str(error)) from error

"""Map physical intensities to the generator's range [-1, 1] and back.

Three mappings cover the data medaug handles:

- ``CTWindow``: a fixed Hounsfield-unit window, the same constants for every
  volume, so a generator output of 0.0 always means the same HU value.
- ``Percentiles``: MR intensities have no absolute scale, so each volume is
  mapped by its own lower and upper percentile. ``fit(volume)`` returns a
  ``FittedPercentiles`` that maps that volume.
- ``ZScoreClip``: data that is already z-scored (for example the BraTS images
  shipped with medaug's test data) is clipped to ``[-limit, limit]``.

Every mapping accepts numpy arrays and torch tensors of any integer or
floating dtype and returns float32 (numpy) or float32 tensors. ``to_model``
clips to the mapping's range first, so ``from_model(to_model(x))`` equals ``x``
inside the range and the clipped value outside it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Union

import numpy as np
import torch

from .errors import GanError

Array = Union[np.ndarray, torch.Tensor]


def _as_float(x: Array) -> Array:
    # float64 keeps int32 and large HU values exact while mapping; the result is cast to float32.
    if isinstance(x, torch.Tensor):
        return x.to(torch.float64)
    return np.asarray(x, dtype=np.float64)


def _to_float32(x: Array) -> Array:
    if isinstance(x, torch.Tensor):
        return x.to(torch.float32)
    return x.astype(np.float32)


def _clip(x: Array, low: float, high: float) -> Array:
    if isinstance(x, torch.Tensor):
        return x.clamp(low, high)
    return np.clip(x, low, high)


def _check_finite(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise GanError(f"{name} must be a finite number, got {value!r}")
    return value


class _LinearRange(ABC):
    """Linear map of ``[low, high]`` onto ``[-1, 1]``, with clipping on both sides.

    When ``high == low`` (a constant volume), ``to_model`` returns -1 everywhere
    and ``from_model`` returns ``low``, so no division by zero occurs.
    """

    name = ""

    def __init__(self, low: float, high: float) -> None:
        self.low = _check_finite(low, "low")
        self.high = _check_finite(high, "high")
        if self.high < self.low:
            raise GanError(f"intensity range is empty: low {self.low} is above high {self.high}; swap them")

    def fit(self, volume: Array, mask: Array | None = None) -> _LinearRange:
        """Return this mapping unchanged: a fixed range does not depend on the volume."""
        return self

    def to_model(self, x: Array) -> Array:
        """Clip ``x`` to ``[low, high]`` and map it linearly to ``[-1, 1]`` (float32)."""
        x = _as_float(x)
        span = self.high - self.low
        if span == 0:
            return torch.full_like(x, -1.0, dtype=torch.float32) if isinstance(x, torch.Tensor) else np.full(x.shape, -1.0, np.float32)
        return _to_float32((_clip(x, self.low, self.high) - self.low) * (2.0 / span) - 1.0)

    def from_model(self, y: Array) -> Array:
        """Clip ``y`` to ``[-1, 1]`` and map it back: -1 gives ``low``, 0 the midpoint, +1 ``high``."""
        y = _clip(_as_float(y), -1.0, 1.0)
        return _to_float32((y + 1.0) * (0.5 * (self.high - self.low)) + self.low)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.state().items() if k != 'name')})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.state() == self.state()

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """JSON-serialisable settings that ``intensity_from_state`` rebuilds the mapping from."""


class CTWindow(_LinearRange):
    """Fixed Hounsfield-unit window ``[low, high]`` mapped to ``[-1, 1]``.

    The default ``[-1000, 2000]`` HU spans air to dense bone, so -1 is air,
    0 is 500 HU and +1 is 2000 HU. Values outside the window are clipped.
    """

    name = "ct"

    def __init__(self, low: float = -1000.0, high: float = 2000.0) -> None:
        super().__init__(low, high)
        if self.high == self.low:
            raise GanError(f"CT window must be wider than zero, got [{self.low}, {self.high}] HU")

    def state(self) -> dict[str, Any]:
        """JSON-serialisable settings; ``intensity_from_state`` rebuilds the window."""
        return {"name": self.name, "low": self.low, "high": self.high}


class ZScoreClip(_LinearRange):
    """Already z-scored intensities: ``[-limit, limit]`` mapped to ``[-1, 1]``."""

    name = "zscore"

    def __init__(self, limit: float = 5.0) -> None:
        limit = _check_finite(limit, "limit")
        if limit <= 0:
            raise GanError(f"zscore limit must be positive, got {limit}")
        super().__init__(-limit, limit)
        self.limit = limit

    def state(self) -> dict[str, Any]:
        """JSON-serialisable settings; ``intensity_from_state`` rebuilds the mapping."""
        return {"name": self.name, "limit": self.limit}


class FittedPercentiles(_LinearRange):
    """Percentile mapping fitted to one volume: its ``low`` and ``high`` intensities map to -1 and +1."""

    name = "mr"

    def __init__(self, low: float, high: float, *, lower: float = 0.5, upper: float = 99.5) -> None:
        super().__init__(low, high)
        self.lower = float(lower)
        self.upper = float(upper)

    def state(self) -> dict[str, Any]:
        """JSON-serialisable settings, including the fitted intensities."""
        return {"name": self.name, "lower": self.lower, "upper": self.upper, "low": self.low, "high": self.high}


class Percentiles:
    """Per-volume percentile mapping for MR: ``fit(volume)`` returns the mapping of that volume.

    Args:
        lower: percentile (0-100) of the volume that maps to -1.
        upper: percentile (0-100) of the volume that maps to +1.
    """

    name = "mr"

    def __init__(self, lower: float = 0.5, upper: float = 99.5) -> None:
        self.lower = _check_finite(lower, "lower")
        self.upper = _check_finite(upper, "upper")
        if not 0.0 <= self.lower < self.upper <= 100.0:
            raise GanError(f"percentiles must satisfy 0 <= lower < upper <= 100, got lower={self.lower}, upper={self.upper}")

    def fit(self, volume: Array, mask: Array | None = None) -> FittedPercentiles:
        """Compute the volume's percentiles, over the voxels where ``mask`` is true when a mask is given.

        Raises:
            GanError: when the volume (or its masked part) is empty or contains NaN or infinite values.
        """
        values = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
        if mask is not None:
            mask = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
            values = values[mask.astype(bool)]
        if values.size == 0:
            raise GanError("cannot fit percentiles to an empty volume or an empty mask")
        values = values.astype(np.float64, copy=False)
        if not np.all(np.isfinite(values)):
            raise GanError("cannot fit percentiles: the volume contains NaN or infinite values")
        low, high = np.percentile(values, [self.lower, self.upper])
        return FittedPercentiles(float(low), float(high), lower=self.lower, upper=self.upper)

    def state(self) -> dict[str, Any]:
        """JSON-serialisable settings, without fitted intensities."""
        return {"name": self.name, "lower": self.lower, "upper": self.upper}

    def __repr__(self) -> str:
        return f"Percentiles(lower={self.lower!r}, upper={self.upper!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.state() == self.state()


Intensity = Union[CTWindow, Percentiles, FittedPercentiles, ZScoreClip]

INTENSITY_NAMES = ("ct", "mr", "zscore")


def make_intensity(name: str, **kwargs: Any) -> CTWindow | Percentiles | ZScoreClip:
    """Build a mapping by name: ``"ct"`` (``CTWindow``), ``"mr"`` (``Percentiles``) or ``"zscore"`` (``ZScoreClip``).

    Raises:
        GanError: for an unknown name or keyword.
    """
    classes = {"ct": CTWindow, "mr": Percentiles, "zscore": ZScoreClip}
    if name not in classes:
        raise GanError(f"unknown intensity mapping {name!r}; use one of {list(INTENSITY_NAMES)}")
    try:
        return classes[name](**kwargs)
    except TypeError as error:
        raise GanError(f"invalid settings for intensity mapping {name!r}: {kwargs}; {error}") from error


def intensity_from_state(state: dict[str, Any]) -> Intensity:
    """Rebuild a mapping from its ``state()``; a state with fitted ``low`` and ``high`` gives ``FittedPercentiles``.

    Raises:
        GanError: when the state is not a mapping with a known ``name``, or a value is invalid.
    """
    if not isinstance(state, dict) or "name" not in state:
        raise GanError(f"intensity state must be a mapping with a 'name' key, got {state!r}")
    settings = {key: value for key, value in state.items() if key != "name"}
    if state["name"] == "mr" and ("low" in settings or "high" in settings):
        try:
            return FittedPercentiles(settings.pop("low"), settings.pop("high"), **settings)
        except (KeyError, TypeError) as error:
            raise GanError(f"invalid fitted percentile state {state!r}: it needs 'low', 'high', 'lower' and 'upper'") from error
    return make_intensity(state["name"], **settings)

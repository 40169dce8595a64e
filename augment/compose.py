"""Per-sample composition of transforms: sequence, one-of and some-of.

A composition only decides, per sample, which of its children act. It draws that
choice from the pipeline's generator and records it as ``selected``, a
``(B, number of children)`` bool tensor. Children may be spatial transforms,
intensity transforms or further compositions. ``augment.pipeline.Pipeline`` fuses
the selected spatial children into its single warp and applies the intensity
children afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .intensity import IntensityTransform, check_probability
from .spatial import SpatialTransform

__all__ = ["Composition", "OneOf", "SomeOf", "TransformSequence"]


class Composition:
    """Base class of compositions.

    Args:
        transforms: the children, at least one.
        p: probability that a sample uses the composition. Other samples select
            no child.
    """

    def __init__(self, transforms: Sequence[Any], *, p: float = 1.0) -> None:
        transforms = list(transforms)
        if not transforms:
            raise ValueError(f"{type(self).__name__} needs at least one transform, got an empty list")
        for position, child in enumerate(transforms):
            if not isinstance(child, (SpatialTransform, IntensityTransform, Composition)):
                raise ValueError(f"transforms[{position}] must be a spatial, intensity or composed transform, got {child!r}")
        self.transforms = transforms
        self.p = check_probability(p, "p")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"

    def select(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """Draw which children every sample uses: ``(B, len(transforms))`` bool."""
        used = torch.rand(batch_size, generator=generator, dtype=torch.float64) < self.p
        return self._choose(batch_size, generator) & used[:, None]

    def _choose(self, batch_size: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError


class TransformSequence(Composition):
    """All children, in order, or none of them, decided per sample with probability ``p``."""

    def _choose(self, batch_size, generator):
        return torch.ones(batch_size, len(self.transforms), dtype=torch.bool)


class OneOf(Composition):
    """Exactly one child per selected sample, drawn with probabilities proportional to ``weights``.

    Args:
        transforms: the children, at least one.
        weights: non-negative relative weights, one per child, not all zero.
            Equal weights when omitted.
        p: probability that a sample uses one child at all.
    """

    def __init__(self, transforms: Sequence[Any], *, weights: Sequence[float] | None = None, p: float = 1.0) -> None:
        super().__init__(transforms, p=p)
        if weights is None:
            weights = [1.0] * len(self.transforms)
        weights = list(weights)
        if len(weights) != len(self.transforms):
            raise ValueError(f"weights must have one value per transform ({len(self.transforms)}), got {weights!r}")
        if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights must be finite non-negative numbers with a positive sum, got {weights!r}")
        self.weights = tuple(float(w) for w in weights)

    def _choose(self, batch_size, generator):
        cumulative = torch.tensor(self.weights, dtype=torch.float64).cumsum(0)
        cumulative = cumulative / cumulative[-1]
        draw = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        # The clamp keeps the index valid when rounding leaves cumulative[-1] just below a draw.
        choice = torch.searchsorted(cumulative, draw, right=True).clamp(max=len(self.weights) - 1)
        return torch.nn.functional.one_hot(choice, len(self.weights)).to(torch.bool)


class SomeOf(Composition):
    """A random subset of ``n`` children per selected sample, all subsets of that size equally likely.

    Selected children act in their listed order, not in the order they were drawn.

    Args:
        transforms: the children, at least one.
        n: number of children per sample, or a ``(min, max)`` pair from which each
            sample draws its number uniformly, between 0 and the number of children.
        p: probability that a sample uses the composition at all.
    """

    def __init__(self, transforms: Sequence[Any], *, n: int | Sequence[int] = 1, p: float = 1.0) -> None:
        super().__init__(transforms, p=p)
        if isinstance(n, int) and not isinstance(n, bool):
            low, high = n, n
        elif isinstance(n, Sequence) and not isinstance(n, str) and len(n) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in n):
            low, high = int(n[0]), int(n[1])
        else:
            raise ValueError(f"n must be an integer or a (min, max) pair of integers, got {n!r}")
        if not 0 <= low <= high <= len(self.transforms):
            raise ValueError(f"n must satisfy 0 <= min <= max <= {len(self.transforms)} (the number of transforms), got {n!r}")
        self.n = (low, high)

    def _choose(self, batch_size, generator):
        count = torch.randint(self.n[0], self.n[1] + 1, (batch_size,), generator=generator)
        # Each child's rank in a random permutation per sample. Children ranked below ``count`` are used.
        rank = torch.rand(batch_size, len(self.transforms), generator=generator, dtype=torch.float64).argsort(dim=1).argsort(dim=1)
        return rank < count[:, None]

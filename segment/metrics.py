"""Per-case, per-class Dice and its aggregation over cases.

Policy for empty masks, applied everywhere in medaug: a class absent from both
the reference and the prediction scores Dice 1.0 (a correct "nothing here");
a class absent from one of them but present in the other scores 0.0. Means
are taken over cases, never over voxels pooled across cases or over batch means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

EMPTY_BOTH_DICE = 1.0


def dice_per_class(prediction: Tensor, reference: Tensor, classes: Sequence[int]) -> dict[int, float]:
    """Dice of each class in ``classes`` for one case.

    Args:
        prediction: integer label map of one case, any spatial shape.
        reference: integer label map with the same shape.
        classes: class indices to score; labels outside them (for example an
            unknown value 100) count only as wrong for the classes they replace.
    """
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} differs from reference shape {tuple(reference.shape)}")
    scores = {}
    for cls in classes:
        predicted = prediction == cls
        expected = reference == cls
        total = int(predicted.sum()) + int(expected.sum())
        if total == 0:
            scores[int(cls)] = EMPTY_BOTH_DICE
        else:
            scores[int(cls)] = 2.0 * int((predicted & expected).sum()) / total
    return scores


def mean_over_cases(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one case) and count of per-case values."""
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan"), 0
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std, int(array.size)


__all__ = ["EMPTY_BOTH_DICE", "dice_per_class", "mean_over_cases"]

"""Per-case, per-class Dice and HD95, and their aggregation over cases.

Policy for empty masks, applied everywhere in medaug. No case is dropped and
no score is NaN:

- Dice: a class absent from both the reference and the prediction scores 1.0
  (``EMPTY_BOTH_DICE``, a correct "nothing here"). A class absent from one of
  them but present in the other scores 0.0.
- HD95: a class absent from both scores 0.0 mm (``EMPTY_BOTH_HD95``). A class
  absent from one of them but present in the other (a missed structure or a
  false detection) scores the diagonal of the image in mm,
  ``sqrt(sum((size_i * spacing_i) ** 2))`` (``image_diagonal_mm``). Every
  distance between two voxel centres of the image is shorter, so this is
  worse than any HD95 that both masks could produce.

Means are taken over cases with the count reported (``mean_over_cases``),
never over voxels pooled across cases or over batch means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from torch import Tensor

EMPTY_BOTH_DICE = 1.0
EMPTY_BOTH_HD95 = 0.0


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


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Return the diagonal of an image of ``shape`` voxels in mm: ``sqrt(sum((size_i * spacing_i) ** 2))``."""
    return math.sqrt(sum((size * step) ** 2 for size, step in zip(shape, spacing)))


def hd95_per_class(prediction: Tensor, reference: Tensor, classes: Sequence[int], spacing: Sequence[float]) -> dict[int, float]:
    """Compute the 95th-percentile Hausdorff distance in mm of each class in ``classes`` for one case.

    The surface of a mask is its voxels with a face neighbour outside the
    mask, and voxels on the image border count as surface. Distances run from
    each surface voxel of one mask to the nearest surface voxel of the other,
    in mm through ``spacing``. HD95 is the larger of the two directed 95th
    percentiles (linear interpolation), as in MONAI 1.6's
    ``compute_hausdorff_distance(percentile=95)``. Empty masks follow the
    policy at the top of this module.

    Args:
        prediction: integer label map of one case, any spatial shape, on any device.
        reference: integer label map with the same shape.
        classes: class indices to score.
        spacing: voxel spacing in mm, one positive value per axis of ``reference``.
    """
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} differs from reference shape {tuple(reference.shape)}")
    spacing = tuple(float(step) for step in spacing)
    if len(spacing) != reference.ndim or any(not step > 0 for step in spacing):
        raise ValueError(f"spacing must list {reference.ndim} positive values in mm, one per axis of shape {tuple(reference.shape)}; got {spacing}")

    predicted_labels = prediction.detach().cpu().numpy()
    reference_labels = reference.detach().cpu().numpy()
    worst = image_diagonal_mm(reference.shape, spacing)
    scores = {}
    for cls in classes:
        scores[int(cls)] = _hd95_of_masks(predicted_labels == cls, reference_labels == cls, spacing, worst)
    return scores


def _hd95_of_masks(predicted: np.ndarray, expected: np.ndarray, spacing: tuple[float, ...], one_empty: float) -> float:
    predicted_any = bool(predicted.any())
    expected_any = bool(expected.any())
    if not predicted_any and not expected_any:
        return EMPTY_BOTH_HD95
    if not predicted_any or not expected_any:
        return one_empty

    # Distance transforms over the bounding box of both masks, with one background
    # voxel around it, give the same distances as over the whole image, faster.
    foreground = np.argwhere(predicted | expected)
    box = tuple(slice(low, high + 1) for low, high in zip(foreground.min(axis=0), foreground.max(axis=0)))
    predicted_surface = _surface(np.pad(predicted[box], 1))
    expected_surface = _surface(np.pad(expected[box], 1))

    to_expected = ndimage.distance_transform_edt(~expected_surface, sampling=spacing)[predicted_surface]
    to_predicted = ndimage.distance_transform_edt(~predicted_surface, sampling=spacing)[expected_surface]
    return float(max(np.percentile(to_expected, 95), np.percentile(to_predicted, 95)))


def _surface(mask: np.ndarray) -> np.ndarray:
    """Return the voxels of ``mask`` that have a face neighbour outside it."""
    face_neighbours = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=face_neighbours, border_value=0)


def mean_over_cases(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one case) and count of per-case values."""
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan"), 0
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std, int(array.size)


__all__ = ["EMPTY_BOTH_DICE", "EMPTY_BOTH_HD95", "dice_per_class", "hd95_per_class", "image_diagonal_mm", "mean_over_cases"]

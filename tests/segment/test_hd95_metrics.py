"""hd95_per_class: the empty-mask policy, spacing in mm, and agreement with MONAI and a brute-force HD95."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from segment.metrics import EMPTY_BOTH_HD95, hd95_per_class, image_diagonal_mm, mean_over_cases


def _square_case() -> torch.Tensor:
    """Reference ``(1, 1, 64, 64)`` with an 8x8 square of class 1 at ``[20:28, 20:28]``."""
    reference = torch.zeros(1, 1, 64, 64, dtype=torch.long)
    reference[0, 0, 20:28, 20:28] = 1
    return reference


def test_missed_square_scores_image_diagonal():
    reference = _square_case()[0, 0]
    prediction = torch.zeros_like(reference)

    scores = hd95_per_class(prediction, reference, [1], spacing=(1.0, 1.0))

    assert image_diagonal_mm((64, 64), (1.0, 1.0)) == pytest.approx(64 * math.sqrt(2))
    assert scores[1] == pytest.approx(90.5097, abs=1e-4)


def test_false_detection_scores_image_diagonal():
    prediction = _square_case()[0, 0]
    reference = torch.zeros_like(prediction)

    scores = hd95_per_class(prediction, reference, [1], spacing=(1.0, 1.0))

    assert scores[1] == pytest.approx(64 * math.sqrt(2))


def test_identical_square_scores_zero():
    reference = _square_case()[0, 0]

    assert hd95_per_class(reference.clone(), reference, [1], spacing=(1.0, 1.0)) == {1: 0.0}


def test_both_empty_scores_policy_value():
    empty = torch.zeros(64, 64, dtype=torch.long)

    scores = hd95_per_class(empty, empty.clone(), [1], spacing=(1.0, 1.0))

    assert EMPTY_BOTH_HD95 == 0.0
    assert scores == {1: EMPTY_BOTH_HD95}


def test_mean_over_missed_and_identical_cases():
    reference = _square_case()[0, 0]
    missed = hd95_per_class(torch.zeros_like(reference), reference, [1], spacing=(1.0, 1.0))[1]
    identical = hd95_per_class(reference.clone(), reference, [1], spacing=(1.0, 1.0))[1]

    mean, _, count = mean_over_cases([missed, identical])

    assert mean == pytest.approx(64 * math.sqrt(2) / 2)
    assert mean != 0.0
    assert count == 2


def test_diagonal_honours_spacing():
    assert image_diagonal_mm((10, 20, 5), (2.0, 0.5, 3.0)) == pytest.approx(math.sqrt(20**2 + 10**2 + 15**2))


@pytest.mark.parametrize(
    ("shape", "first", "second", "spacing", "expected"),
    [
        ((16, 16), (3, 4), (6, 8), (1.0, 1.0), 5.0),
        ((16, 16), (3, 4), (6, 8), (2.0, 0.5), math.sqrt(6**2 + 2**2)),
        ((8, 12, 10), (1, 2, 3), (4, 2, 7), (1.5, 1.0, 3.0), math.sqrt(4.5**2 + 12**2)),
    ],
)
def test_single_voxels_distance_in_mm(shape, first, second, spacing, expected):
    prediction = torch.zeros(shape, dtype=torch.long)
    reference = torch.zeros(shape, dtype=torch.long)
    prediction[first] = 1
    reference[second] = 1

    assert hd95_per_class(prediction, reference, [1], spacing=spacing)[1] == pytest.approx(expected)


def test_scores_each_class():
    reference = torch.zeros(32, 32, dtype=torch.long)
    reference[4:10, 4:10] = 1
    reference[20:24, 20:24] = 2
    prediction = reference.clone()
    prediction[prediction == 2] = 0

    scores = hd95_per_class(prediction, reference, [1, 2, 3], spacing=(0.5, 2.0))

    assert scores == {1: 0.0, 2: pytest.approx(math.sqrt(16**2 + 64**2)), 3: 0.0}


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError, match=r"prediction shape \(4, 4\) differs from reference shape \(4, 5\)"):
        hd95_per_class(torch.zeros(4, 4), torch.zeros(4, 5), [1], spacing=(1.0, 1.0))


@pytest.mark.parametrize("spacing", [(1.0,), (1.0, 0.0), (1.0, -2.0)])
def test_invalid_spacing_rejected(spacing):
    with pytest.raises(ValueError, match="spacing must list 2 positive values in mm"):
        hd95_per_class(torch.zeros(4, 4), torch.zeros(4, 4), [1], spacing=spacing)


def _blob_pair(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two different label maps with smooth random blobs of classes 1 and 2."""
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(2):
        field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=2.0)
        labels = np.zeros(shape, dtype=np.int64)
        labels[field > 0.05] = 1
        labels[field > 0.15] = 2
        maps.append(torch.from_numpy(labels))
    return maps[0], maps[1]


def _brute_force_hd95(prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Compute HD95 from all pairwise surface distances. A surface voxel has a face neighbour outside the mask or image."""

    def surface_points(mask: np.ndarray) -> np.ndarray:
        padded = np.pad(mask, 1)
        inner = tuple(slice(1, -1) for _ in range(mask.ndim))
        on_surface = np.zeros_like(mask)
        for axis in range(mask.ndim):
            for offset in (-1, 1):
                neighbour = tuple(slice(1 + offset, padded.shape[a] - 1 + offset) if a == axis else inner[a] for a in range(mask.ndim))
                on_surface |= mask & ~padded[neighbour]
        return np.argwhere(on_surface) * np.asarray(spacing)

    first = surface_points(prediction)
    second = surface_points(reference)
    distances = np.sqrt(((first[:, None, :] - second[None, :, :]) ** 2).sum(axis=-1))
    return max(np.percentile(distances.min(axis=1), 95), np.percentile(distances.min(axis=0), 95))


@pytest.mark.parametrize(
    ("shape", "spacing", "seed"),
    [((40, 48), (0.8, 1.5), 0), ((40, 48), (1.0, 1.0), 1), ((20, 24, 16), (1.2, 0.7, 2.5), 2)],
)
def test_matches_brute_force(shape, spacing, seed):
    prediction, reference = _blob_pair(shape, seed)

    scores = hd95_per_class(prediction, reference, [1, 2], spacing=spacing)

    for cls in (1, 2):
        expected = _brute_force_hd95((prediction == cls).numpy(), (reference == cls).numpy(), spacing)
        assert scores[cls] > 0.0
        assert scores[cls] == pytest.approx(expected, rel=1e-9), f"class {cls}"


# MONAI 1.6 warns about an argument its own compute_hausdorff_distance passes.
@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
@pytest.mark.parametrize(
    ("shape", "spacing", "seed"),
    [((40, 48), (0.8, 1.5), 3), ((20, 24, 16), (1.2, 0.7, 2.5), 4)],
)
def test_matches_monai_hd95(shape, spacing, seed):
    metrics = pytest.importorskip("monai.metrics")
    prediction, reference = _blob_pair(shape, seed)

    scores = hd95_per_class(prediction, reference, [1, 2], spacing=spacing)
    expected = metrics.compute_hausdorff_distance(
        F.one_hot(prediction, 3).movedim(-1, 0)[None],
        F.one_hot(reference, 3).movedim(-1, 0)[None],
        include_background=False,
        percentile=95,
        spacing=list(spacing),
    )[0]

    for cls in (1, 2):
        # MONAI computes in float32, so it agrees to about 1e-6 relative.
        assert scores[cls] == pytest.approx(float(expected[cls - 1]), rel=1e-5), f"class {cls}"

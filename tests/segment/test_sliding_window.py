"""Sliding-window prediction, Gaussian importance weights and flip test-time augmentation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segment import dice_per_class
from segment.inference import (
    flip_axes_sets,
    gaussian_importance_map,
    pad_to_size,
    predict_labels,
    predict_probabilities,
    window_starts,
)
from segment.models import build_model


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _LabelOracle(nn.Module):
    """Return one-hot logits of the label map passed in as the image, so flipping commutes with the model.

    Sizes not divisible by ``divisor`` raise ValueError, as in the registered models.
    """

    def __init__(self, num_classes: int, divisor: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.divisor = divisor
        self.calls = 0

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if any(size % self.divisor for size in image.shape[2:]):
            raise ValueError(f"spatial sizes {tuple(image.shape[2:])} must be multiples of {self.divisor}")
        self.calls += 1
        return F.one_hot(image[:, 0].long(), self.num_classes).movedim(-1, 1).float()


@pytest.mark.parametrize("patch_size", [(16, 16, 16), (15, 12), (9, 8, 16)])
def test_gaussian_weights_symmetric_peak_at_centre(patch_size):
    weights = gaussian_importance_map(patch_size)

    assert weights.shape == patch_size
    assert weights.dtype == torch.float32
    for axis in range(len(patch_size)):
        assert torch.equal(weights, weights.flip(axis)), f"axis {axis}"
    centre = tuple(slice((size - 1) // 2, size // 2 + 1) for size in patch_size)
    assert torch.all(weights[centre] == 1.0)
    assert float(weights.max()) == 1.0
    assert int((weights == 1.0).sum()) == math.prod(2 - size % 2 for size in patch_size)
    assert float(weights.min()) > 0.0


def test_gaussian_sigma_is_eighth_of_patch():
    # Size 16: centre 7.5, sigma 2. Index 9 is 1.5 from the centre and index 8
    # is 0.5, so their ratio is exp(-(1.5^2 - 0.5^2) / (2 * 2^2)) = exp(-1/4).
    profile = gaussian_importance_map((16,), dtype=torch.float64)

    assert float(profile[8]) == 1.0
    assert float(profile[9] / profile[8]) == pytest.approx(math.exp(-0.25))
    assert float(profile[0]) == pytest.approx(math.exp(-(7.5**2 - 0.5**2) / 8))


@pytest.mark.parametrize(
    ("size", "patch", "overlap", "expected"),
    [
        (37, 16, 0.5, [0, 7, 14, 21]),
        (48, 16, 0.0, [0, 16, 32]),
        (24, 16, 0.5, [0, 8]),
        (16, 16, 0.5, [0]),
        (10, 16, 0.5, [0]),
    ],
)
def test_window_starts_cover_axis(size, patch, overlap, expected):
    assert window_starts(size, patch, overlap) == expected


def test_pad_to_size_pads_only_smaller_axes():
    image = torch.ones(1, 1, 10, 20, 16)

    padded, crop = pad_to_size(image, (16, 16, 16), value=0.0)

    assert padded.shape == (1, 1, 16, 20, 16)
    assert torch.equal(padded[crop], image)
    assert torch.all(padded[:, :, 10:] == 0.0)


@pytest.mark.parametrize("shape", [(37, 50, 23), (37, 10, 23), (40, 40)])
def test_sliding_window_oracle_exact(shape):
    label = torch.randint(0, 3, (2, *shape), generator=torch.Generator().manual_seed(0))
    oracle = _LabelOracle(num_classes=3, divisor=8)
    patch = (16,) * len(shape)

    prediction = predict_labels(oracle, label[:, None].float(), 8, patch_size=patch, overlap=0.5)

    assert prediction.shape == label.shape
    assert torch.equal(prediction, label)
    assert oracle.calls == math.prod(len(window_starts(max(size, 16), 16, 0.5)) for size in shape)
    for case_prediction, case_label in zip(prediction, label):
        assert dice_per_class(case_prediction, case_label, [1, 2]) == {1: 1.0, 2: 1.0}


class _CallDependentModel(nn.Module):
    """Predict class 1 with probability ``levels[k]`` everywhere on its ``k``-th call."""

    def __init__(self, levels: list[float]) -> None:
        super().__init__()
        self.levels = levels
        self.calls = 0

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        level = self.levels[self.calls]
        self.calls += 1
        logits = torch.zeros(image.shape[0], 2, *image.shape[2:])
        logits[:, 1] = math.log(level / (1 - level))
        return logits


def test_sliding_window_blends_with_gaussian_weights():
    # A 24x16 image and 16x16 patches with overlap 0.5 give windows at x = 0 and 8.
    model = _CallDependentModel([0.2, 0.8])
    weights = gaussian_importance_map((16, 16), dtype=torch.float64)[:, 0]

    probabilities = predict_probabilities(model, torch.zeros(1, 1, 24, 16), 1, patch_size=(16, 16), overlap=0.5)

    assert model.calls == 2
    for x in range(24):
        first = weights[x] if x < 16 else 0.0
        second = weights[x - 8] if x >= 8 else 0.0
        expected = (0.2 * first + 0.8 * second) / (first + second)
        assert torch.allclose(probabilities[0, 1, x], torch.tensor(float(expected)), atol=1e-6), f"x = {x}"


def test_flip_axes_sets_cover_all_combinations():
    assert flip_axes_sets(2) == [(), (2,), (3,), (2, 3)]
    assert len(flip_axes_sets(3)) == 8
    assert flip_axes_sets(3)[0] == ()


@pytest.mark.parametrize("patch_size", [None, (16, 16, 8)])
def test_flip_tta_of_equivariant_oracle_equals_plain(patch_size):
    label = torch.randint(0, 4, (2, 19, 23, 17), generator=torch.Generator().manual_seed(3))
    oracle = _LabelOracle(num_classes=4, divisor=8)

    plain = predict_probabilities(oracle, label[:, None].float(), 8, patch_size=patch_size)
    calls_without_tta = oracle.calls
    with_tta = predict_probabilities(oracle, label[:, None].float(), 8, patch_size=patch_size, flip_tta=True)

    assert oracle.calls == 9 * calls_without_tta
    assert torch.allclose(with_tta, plain, atol=1e-6)
    assert torch.equal(with_tta.argmax(dim=1), label)
    assert torch.equal(predict_labels(oracle, label[:, None].float(), 8, patch_size=patch_size, flip_tta=True), label)


class _RampModel(nn.Module):
    """Raise the logit of class 1 linearly along the first spatial axis, so flips change the output."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-2.0, 2.0, image.shape[2]).view(1, -1, *(1,) * (image.ndim - 3))
        logits = torch.zeros(image.shape[0], 2, *image.shape[2:])
        logits[:, 1] = ramp
        return logits


def test_flip_tta_averages_flipped_predictions():
    image = torch.zeros(1, 1, 8, 4)

    plain = predict_probabilities(_RampModel(), image, 1)
    with_tta = predict_probabilities(_RampModel(), image, 1, flip_tta=True)

    expected = (plain + plain.flip(2)) / 2
    assert not torch.allclose(plain, plain.flip(2))
    assert torch.allclose(with_tta, expected, atol=1e-6)


def test_sliding_window_with_unet_keeps_odd_shape():
    torch.manual_seed(0)
    model = build_model("unet", 1, 3, features=(4, 8, 16)).eval()

    probabilities = predict_probabilities(model, torch.randn(1, 1, 19, 23, 17), model.divisor, patch_size=(8, 16, 8), flip_tta=True)

    assert probabilities.shape == (1, 3, 19, 23, 17)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(1, 19, 23, 17), atol=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"patch_size": (16, 16)}, r"patch_size \[16, 16\] must have one size per spatial axis"),
        ({"patch_size": (16, 12, 16)}, r"patch_size \[16, 12, 16\] must be positive multiples of the model's divisor 8"),
        ({"patch_size": (16, 16, 16), "overlap": 1.0}, r"overlap must be in \[0, 1\), got 1.0"),
        ({"patch_size": (16, 16, 16), "sigma_scale": 0.0}, "sigma_scale must be positive, got 0.0"),
    ],
)
def test_sliding_window_invalid_options_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        predict_probabilities(_LabelOracle(num_classes=2, divisor=8), torch.zeros(1, 1, 20, 20, 20), 8, **options)

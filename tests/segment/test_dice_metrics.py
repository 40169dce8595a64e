"""dice_per_class and mean_over_cases: empty masks, swapped and unknown labels, means over cases."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchmetrics.functional.segmentation import dice_score

from segment import EMPTY_BOTH_DICE, SegmentationModule, dice_per_class, mean_over_cases


def test_false_positive_on_empty_reference():
    reference = torch.zeros(4, 4, 4, dtype=torch.long)
    prediction = reference.clone()
    prediction[1, 2, 3] = 1

    scores = dice_per_class(prediction, reference, [1])

    assert scores == {1: 0.0}
    assert mean_over_cases([1.0, 0.0])[0] == 0.5


def test_both_empty_scores_policy_value():
    empty = torch.zeros(2, 8, 8, dtype=torch.long)
    reference = empty.clone()
    reference[0, 0, :5] = 1
    prediction = empty.clone()
    prediction[0, 0, 1:5] = 1
    prediction[0, 1, 0] = 1
    assert int(reference.sum()) == 5
    assert int(prediction.sum()) == 5

    empty_scores = dice_per_class(empty, empty, [1])
    case_scores = dice_per_class(prediction, reference, [1])
    mean, _, count = mean_over_cases([empty_scores[1], case_scores[1]])

    assert EMPTY_BOTH_DICE == 1.0
    assert empty_scores == {1: EMPTY_BOTH_DICE}
    assert case_scores == {1: 0.8}
    assert mean == 0.9
    assert count == 2


def _two_column_reference() -> torch.Tensor:
    reference = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    reference[..., :2] = 1
    reference[..., 2:] = 2
    return reference


def test_swapped_classes_score_zero():
    reference = _two_column_reference()
    swapped = 3 - reference

    assert dice_per_class(swapped, reference, [1, 2]) == {1: 0.0, 2: 0.0}


def test_unknown_label_scores_zero():
    reference = _two_column_reference()
    relabelled = torch.full_like(reference, 100)

    assert dice_per_class(relabelled, reference, [1, 2]) == {1: 0.0, 2: 0.0}


def test_identical_maps_score_one():
    reference = _two_column_reference()

    assert dice_per_class(reference.clone(), reference, [1, 2]) == {1: 1.0, 2: 1.0}


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError, match=r"prediction shape \(4, 4\) differs from reference shape \(4, 5\)"):
        dice_per_class(torch.zeros(4, 4), torch.zeros(4, 5), [1])


def test_matches_torchmetrics_dice():
    generator = torch.Generator().manual_seed(0)
    reference = torch.randint(0, 3, (12, 10, 8), generator=generator)
    prediction = torch.randint(0, 3, (12, 10, 8), generator=generator)

    scores = dice_per_class(prediction, reference, [0, 1, 2])
    expected = dice_score(prediction[None], reference[None], num_classes=3, average="none", input_format="index")[0]

    for cls in (0, 1, 2):
        assert scores[cls] == pytest.approx(float(expected[cls]), abs=1e-6), f"class {cls}"


# Five 10x10 cases: four perfect with a 10-voxel object, the fifth misses its
# 2-voxel object. Per-case Dice is [1, 1, 1, 1, 0], so the mean over cases is
# 0.8. Pooling voxels over cases would give 80/82, and a mean of batch means
# with batch size 4 would give 0.5.


def _five_cases() -> tuple[torch.Tensor, torch.Tensor]:
    references = torch.zeros(5, 10, 10, dtype=torch.long)
    references[:4, 2, :] = 1
    references[4, 5, 5:7] = 1
    predictions = references.clone()
    predictions[4] = 0
    return predictions, references


def test_mean_over_cases_not_pooled():
    predictions, references = _five_cases()

    per_case = [dice_per_class(p, r, [1])[1] for p, r in zip(predictions, references)]
    mean, _, count = mean_over_cases(per_case)

    assert per_case == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert mean == 0.8
    assert count == 5


class _LabelEchoNet(nn.Module):
    """Return one-hot logits of the input, which contains the predicted label map as floats."""

    divisor = 1

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(image[:, 0].long(), self.num_classes).movedim(-1, 1).float()


@pytest.mark.parametrize("batch_size", [1, 2, 4, 5])
def test_case_mean_independent_of_batch_size(batch_size):
    module = SegmentationModule(
        in_channels=1,
        num_classes=2,
        class_names=["object"],
        model={"name": "unet", "features": [4, 8], "spatial_dims": 2},
        augmentation="none",
        learning_rate=1e-3,
        max_steps=1,
        seed=0,
    )
    module.net = _LabelEchoNet(num_classes=2)
    predictions, references = _five_cases()

    rows = []
    for start in range(0, 5, batch_size):
        batch = {
            "image": predictions[start : start + batch_size, None].float(),
            "label": references[start : start + batch_size, None],
            "case_id": [f"case_{index}" for index in range(start, min(start + batch_size, 5))],
        }
        rows.extend(module.evaluate_batch(batch))
    mean, _, count = mean_over_cases([row["dice_mean"] for row in rows])

    assert [row["dice_1"] for row in rows] == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert [row["case_id"] for row in rows] == [f"case_{index}" for index in range(5)]
    assert mean == 0.8
    assert count == 5

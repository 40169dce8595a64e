"""RandomFlip exchanges lateralised classes when its left-right axis flips.

The 4x4 label map below has class 1 in rows 0-1 (left) and class 2 in rows 2-3
(right) along axis 0, with a midline class 3 and background 0. Flipping axis 0
moves class 1 to rows 2-3; swapping {1: 2} then names it 2 again, so flip plus
swap gives back the input map.
"""

from __future__ import annotations

import pytest
import torch

from augment import Pipeline, RandomFlip, StrategyError, build_strategy, derive_generator

LATERAL_LABEL = [
    [1, 1, 3, 0],
    [1, 1, 3, 0],
    [2, 2, 3, 0],
    [2, 2, 3, 0],
]
# LATERAL_LABEL with 1 and 2 exchanged and nothing moved.
SWAPPED_LABEL = [
    [2, 2, 3, 0],
    [2, 2, 3, 0],
    [1, 1, 3, 0],
    [1, 1, 3, 0],
]


def lateral_batch(batch_size: int = 2) -> torch.Tensor:
    return torch.tensor(LATERAL_LABEL).expand(batch_size, 1, 4, 4).clone()


def flips(*rows: list[bool]) -> dict[str, torch.Tensor]:
    return {"flip": torch.tensor(rows)}


def test_relabel_swaps_only_flipped_samples():
    transform = RandomFlip(label_swap={1: 2}, left_right_axis=0)

    out = transform.relabel(lateral_batch(), flips([True, False], [False, True]))

    assert out[0, 0].tolist() == SWAPPED_LABEL
    assert out[1, 0].tolist() == LATERAL_LABEL, "a flip of another axis swapped labels"


def test_relabel_respects_active_mask():
    transform = RandomFlip(label_swap={1: 2}, left_right_axis=0)
    params = flips([True, False], [True, False])

    out = transform.relabel(lateral_batch(), params, active=torch.tensor([False, True]))

    assert out[0, 0].tolist() == LATERAL_LABEL
    assert out[1, 0].tolist() == SWAPPED_LABEL


def test_relabel_twice_is_identity():
    transform = RandomFlip(label_swap={1: 2}, left_right_axis=0)
    params = flips([True, False], [True, True])
    label = lateral_batch()

    out = transform.relabel(transform.relabel(label, params), params)

    assert torch.equal(out, label)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8])
def test_relabel_keeps_dtype_and_input(dtype):
    transform = RandomFlip(label_swap={1: 2}, left_right_axis=0)
    label = lateral_batch().to(dtype)
    before = label.clone()

    out = transform.relabel(label, flips([True, False], [True, False]))

    assert out.dtype == dtype
    assert out[0, 0].tolist() == SWAPPED_LABEL
    assert torch.equal(label, before), "relabel changed its input in place"


def test_relabel_without_swap_returns_label():
    label = lateral_batch()

    out = RandomFlip().relabel(label, flips([True, True], [True, True]))

    assert out is label


def test_relabel_swaps_several_pairs():
    transform = RandomFlip(label_swap={1: 2, 3: 4}, left_right_axis=1)
    label = torch.tensor([[[[1, 2, 3, 4, 5, 0]]]])

    out = transform.relabel(label, flips([False, True]))

    assert out[0, 0, 0].tolist() == [2, 1, 4, 3, 5, 0]


def test_pipeline_flip_with_swap_restores_lateral_label():
    batch = {"image": torch.zeros(1, 1, 4, 4), "label": torch.tensor(LATERAL_LABEL).reshape(1, 1, 4, 4)}
    pipeline = Pipeline([RandomFlip(axes=[0], p=1.0, label_swap={1: 2}, left_right_axis=0)])

    out = pipeline(batch, derive_generator(0))

    assert out["label"][0, 0].tolist() == LATERAL_LABEL


def test_pipeline_flips_lateral_label_geometry():
    # Without the swap the flip alone mirrors the map, which gives SWAPPED_LABEL.
    batch = {"image": torch.zeros(1, 1, 4, 4), "label": torch.tensor(LATERAL_LABEL).reshape(1, 1, 4, 4)}
    pipeline = Pipeline([RandomFlip(axes=[0], p=1.0)])

    out = pipeline(batch, derive_generator(0))

    assert out["label"][0, 0].tolist() == SWAPPED_LABEL


INVALID_SWAPS = {
    "missing_axis": ({"label_swap": {1: 2}}, "needs left_right_axis"),
    "axis_not_flipped": ({"axes": [1], "label_swap": {1: 2}, "left_right_axis": 0}, "never flips"),
    "same_label": ({"label_swap": {1: 1}, "left_right_axis": 0}, "two different labels"),
    "label_in_two_pairs": ({"label_swap": {1: 2, 2: 3}, "left_right_axis": 0}, "more than one label_swap pair"),
    "float_label": ({"label_swap": {1.5: 2}, "left_right_axis": 0}, "must be integers"),
    "not_a_mapping": ({"label_swap": [1, 2], "left_right_axis": 0}, "must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(INVALID_SWAPS))
def test_invalid_label_swap_is_rejected(case):
    kwargs, message = INVALID_SWAPS[case]

    with pytest.raises(ValueError, match=message):
        RandomFlip(**kwargs)


def test_left_right_axis_out_of_range_is_rejected():
    transform = RandomFlip(label_swap={1: 2}, left_right_axis=2)

    with pytest.raises(ValueError, match="left_right_axis 2 is out of range for 2D data"):
        transform.sample(1, (4, 4), torch.ones(1, 2, dtype=torch.float64), derive_generator(0))


def test_strategy_accepts_label_swap():
    pipeline = build_strategy({"transforms": [{"flip": {"p": 0.5, "label_swap": {1: 2}, "left_right_axis": 0}}]})

    (flip,) = pipeline.spatial
    assert flip.label_swap == {1: 2}
    assert flip.left_right_axis == 0


def test_strategy_rejects_label_swap_without_axis():
    with pytest.raises(StrategyError, match="needs left_right_axis"):
        build_strategy({"transforms": [{"flip": {"label_swap": {1: 2}}}]})

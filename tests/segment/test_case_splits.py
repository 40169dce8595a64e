"""kfold_split, nnunet_split and training_subset: scikit-learn's KFold folds, splits_final.json, nested fractions."""

from __future__ import annotations

import json

import pytest
from sklearn.model_selection import KFold

from segment.data import kfold_split, nnunet_split, training_subset
from segment.errors import DataError


def _case_ids(count: int) -> list[str]:
    # Shuffled on purpose: kfold_split must sort the ids before splitting.
    ids = [f"hippocampus_{index:03d}" for index in range(count)]
    return ids[1::2] + ids[::2]


@pytest.mark.parametrize("count", [210, 7])
def test_kfold_matches_sklearn(count):
    ids = _case_ids(count)
    ordered = sorted(ids)
    expected = KFold(n_splits=5, shuffle=True, random_state=12345).split(ordered)

    splits = kfold_split(ids, folds=5, seed=12345)

    assert len(splits) == 5
    for fold, (split, (train_index, val_index)) in enumerate(zip(splits, expected)):
        assert split["val"] == sorted(ordered[i] for i in val_index), f"fold {fold}"
        assert split["train"] == sorted(ordered[i] for i in train_index), f"fold {fold}"


@pytest.mark.parametrize("count", [210, 7])
def test_kfold_folds_disjoint_and_complete(count):
    ids = _case_ids(count)

    splits = kfold_split(ids, folds=5, seed=12345)

    validation = [case for split in splits for case in split["val"]]
    assert sorted(validation) == sorted(ids)
    for fold, split in enumerate(splits):
        assert set(split["train"]).isdisjoint(split["val"]), f"fold {fold}"
        assert sorted(split["train"] + split["val"]) == sorted(ids), f"fold {fold}"


def test_kfold_fold_sizes_for_seven_cases():
    sizes = [len(split["val"]) for split in kfold_split(_case_ids(7), folds=5, seed=12345)]

    assert sizes == [2, 2, 1, 1, 1]


def test_kfold_rejects_too_few_cases():
    with pytest.raises(DataError, match="cannot split 3 cases into 5 folds"):
        kfold_split(_case_ids(3), folds=5, seed=12345)


def test_nnunet_split_reproduces_kfold():
    ids = _case_ids(210)

    assert nnunet_split(ids) == kfold_split(ids, folds=5, seed=12345)


def test_nnunet_split_reads_splits_file(tmp_path):
    ids = _case_ids(6)
    stored = [
        {"train": ["hippocampus_005", "hippocampus_001", "hippocampus_002", "hippocampus_003"], "val": ["hippocampus_004", "hippocampus_000"]},
        {"train": ["hippocampus_000", "hippocampus_004", "hippocampus_002", "hippocampus_003"], "val": ["hippocampus_005", "hippocampus_001"]},
    ]
    splits_file = tmp_path / "splits_final.json"
    splits_file.write_text(json.dumps(stored))

    splits = nnunet_split(ids, splits_file)

    assert splits == [
        {"train": ["hippocampus_001", "hippocampus_002", "hippocampus_003", "hippocampus_005"], "val": ["hippocampus_000", "hippocampus_004"]},
        {"train": ["hippocampus_000", "hippocampus_002", "hippocampus_003", "hippocampus_004"], "val": ["hippocampus_001", "hippocampus_005"]},
    ]


def test_nnunet_split_rejects_unknown_case(tmp_path):
    ids = _case_ids(4)
    splits_file = tmp_path / "splits_final.json"
    splits_file.write_text(json.dumps([{"train": ["hippocampus_000", "hippocampus_001"], "val": ["hippocampus_999"]}]))

    with pytest.raises(DataError) as raised:
        nnunet_split(ids, splits_file)

    message = str(raised.value)
    assert "'hippocampus_999'" in message
    assert str(splits_file) in message
    assert "fold 0" in message


def test_nnunet_split_missing_file(tmp_path):
    with pytest.raises(DataError, match="splits file not found"):
        nnunet_split(_case_ids(5), tmp_path / "splits_final.json")


def test_training_subset_nested():
    train_ids = _case_ids(168)

    tenth = training_subset(train_ids, 0.1, seed=7)
    quarter = training_subset(train_ids, 0.25, seed=7)
    everything = training_subset(train_ids, 1.0, seed=7)

    assert set(tenth) < set(quarter)
    assert set(quarter) < set(everything)
    assert everything == sorted(train_ids)


def test_training_subset_deterministic():
    train_ids = _case_ids(168)

    first = training_subset(train_ids, 0.25, seed=7)
    second = training_subset(list(reversed(train_ids)), 0.25, seed=7)

    assert first == second
    assert training_subset(train_ids, 0.25, seed=8) != first


@pytest.mark.parametrize(
    ("count", "fraction", "expected_size"),
    [
        (168, 0.1, 17),  # ceil(16.8)
        (168, 0.25, 42),
        (30, 0.1, 3),  # 0.1 * 30 is 3.0000000000000004 in floating point
        (10, 0.7, 7),  # 0.7 * 10 is 7.000000000000001
        (10, 0.001, 1),  # at least one case
        (1, 0.5, 1),
    ],
)
def test_training_subset_size(count, fraction, expected_size):
    subset = training_subset(_case_ids(count), fraction, seed=0)

    assert len(subset) == expected_size


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1, float("nan")])
def test_training_subset_rejects_fraction(fraction):
    with pytest.raises(DataError, match=r"training fraction must be in \(0, 1\]"):
        training_subset(_case_ids(10), fraction, seed=0)

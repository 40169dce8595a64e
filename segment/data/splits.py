"""Case-level cross-validation splits and nested training fractions."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError

NNUNET_SPLIT_SEED = 12345
NNUNET_FOLDS = 5


def kfold_split(case_ids: Sequence[str], *, folds: int, seed: int, groups: Mapping[str, str] | None = None) -> list[dict[str, list[str]]]:
    """Split cases into ``folds`` disjoint validation sets, deterministically from ``seed``.

    Case ids are sorted first, then shuffled with ``numpy.random.RandomState(seed)``
    and cut into folds whose sizes differ by at most one, larger folds first:
    the algorithm of scikit-learn's ``KFold(shuffle=True, random_state=seed)``.
    With ``folds=5, seed=12345`` this is the split nnU-Net v2 generates.

    Args:
        groups: optional subject of each case; subjects are split instead of
            cases, so all images of one subject land in the same fold.

    Returns:
        One ``{"train": [...], "val": [...]}`` per fold, ids sorted within each list.
    """
    if groups is not None:
        subject_splits = kfold_split(sorted({groups[c] for c in case_ids}), folds=folds, seed=seed)
        return [
            {part: sorted(c for c in case_ids if groups[c] in set(split[part])) for part in ("train", "val")}
            for split in subject_splits
        ]
    ids = sorted(case_ids)
    if folds < 2:
        raise DataError(f"folds must be at least 2, got {folds}")
    if len(ids) < folds:
        raise DataError(f"cannot split {len(ids)} cases into {folds} folds")
    order = np.arange(len(ids))
    np.random.RandomState(seed).shuffle(order)

    sizes = np.full(folds, len(ids) // folds)
    sizes[: len(ids) % folds] += 1
    splits = []
    start = 0
    for size in sizes:
        val = set(order[start : start + size].tolist())
        start += size
        splits.append({
            "train": [ids[i] for i in range(len(ids)) if i not in val],
            "val": [ids[i] for i in range(len(ids)) if i in val],
        })
    return splits


def nnunet_split(case_ids: Sequence[str], splits_file: str | Path | None = None) -> list[dict[str, list[str]]]:
    """nnU-Net v2's five folds: read from its ``splits_final.json``, or reproduced.

    Raises:
        DataError: when the file names cases that are not in ``case_ids``.
    """
    if splits_file is None:
        return kfold_split(case_ids, folds=NNUNET_FOLDS, seed=NNUNET_SPLIT_SEED)
    path = Path(splits_file)
    if not path.is_file():
        raise DataError(f"splits file not found: {path}")
    try:
        splits = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON: {error}") from error
    known = set(case_ids)
    for fold, split in enumerate(splits):
        unknown = sorted((set(split.get("train", [])) | set(split.get("val", []))) - known)
        if unknown:
            raise DataError(f"{path}: fold {fold} names cases not in the dataset, for example {unknown[0]!r}")
    return [{"train": sorted(s["train"]), "val": sorted(s["val"])} for s in splits]


def training_subset(train_ids: Sequence[str], fraction: float, *, seed: int) -> list[str]:
    """Take ``ceil(fraction * n)`` training cases (at least one) as a nested subset.

    The cases are ordered once by a permutation from ``seed`` and the subset is
    a prefix of that order, so for one seed 10 % is inside 25 % is inside 100 %.
    """
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"training fraction must be in (0, 1], got {fraction}")
    ids = sorted(train_ids)
    order = np.random.RandomState(seed).permutation(len(ids))
    count = max(1, math.ceil(fraction * len(ids) - 1e-9))
    return sorted(ids[i] for i in order[:count])

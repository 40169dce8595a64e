"""Statistics over cases: bootstrap confidence intervals and paired tests against a baseline."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 10_000


def bootstrap_ci(
    values: Sequence[float],
    *,
    statistic: Callable[..., np.ndarray] = np.mean,
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (the mean by default) over cases.

    Cases are resampled with replacement ``resamples`` times from a NumPy
    generator seeded with ``seed``, so reports are reproducible. ``statistic``
    must accept ``axis=1`` like ``np.mean`` and ``np.median``. One case gives
    the degenerate interval ``(value, value)``; no case gives ``(nan, nan)``.
    """
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    if array.size == 1:
        return float(array[0]), float(array[0])
    rng = np.random.default_rng(seed)
    estimates = statistic(array[rng.integers(0, array.size, size=(resamples, array.size))], axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(estimates, [tail, 100.0 - tail])
    return float(low), float(high)


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired per-case differences.

    SciPy's default method is used (exact for small samples without ties or
    zeros, a normal approximation otherwise). All-zero differences give 1.0.
    """
    array = np.asarray(list(differences), dtype=np.float64)
    if array.size == 0:
        return float("nan")
    if np.all(array == 0):
        return 1.0
    return float(stats.wilcoxon(array, alternative="two-sided").pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order; NaN entries stay NaN and are not counted."""
    p = np.asarray(list(p_values), dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(p.shape, np.nan)
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()

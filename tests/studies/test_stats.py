"""Study statistics checked against SciPy and closed-form values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from studies.stats import bootstrap_ci, holm, wilcoxon_p

SAMPLE = [0.81, 0.79, 0.85, 0.88, 0.76, 0.83, 0.90, 0.72, 0.86, 0.80]


def test_bootstrap_matches_scipy_percentile_interval():
    low, high = bootstrap_ci(SAMPLE, resamples=20_000, seed=1)
    reference = stats.bootstrap((np.array(SAMPLE),), np.mean, n_resamples=20_000, method="percentile", random_state=2).confidence_interval
    # Two independent Monte Carlo estimates of the same interval agree to about 0.003.
    assert low == pytest.approx(reference.low, abs=0.003)
    assert high == pytest.approx(reference.high, abs=0.003)
    assert low < np.mean(SAMPLE) < high


def test_bootstrap_is_reproducible():
    assert bootstrap_ci(SAMPLE, seed=5) == bootstrap_ci(SAMPLE, seed=5)


def test_bootstrap_of_one_and_no_case():
    assert bootstrap_ci([0.7]) == (0.7, 0.7)
    assert all(np.isnan(bootstrap_ci([])))


def test_wilcoxon_matches_scipy():
    differences = [0.02, -0.01, 0.03, 0.05, 0.015, -0.005, 0.04, 0.01, 0.025, 0.035]
    assert wilcoxon_p(differences) == pytest.approx(stats.wilcoxon(differences).pvalue, rel=1e-12)


def test_wilcoxon_exact_small_sample():
    # Five positive differences with distinct ranks: the exact two-sided p is 2 / 2**5.
    assert wilcoxon_p([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(0.0625, abs=1e-12)


def test_wilcoxon_of_identical_runs():
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0


def test_holm_adjustment():
    # Sorted p 0.01, 0.02, 0.04 times 3, 2, 1 gives 0.03, 0.04, 0.04 (kept monotone).
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_holm_skips_missing_values():
    adjusted = holm([0.01, float("nan"), 0.03])
    assert adjusted[0] == pytest.approx(0.02)
    assert np.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.03)

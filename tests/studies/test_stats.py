"""Study statistics checked against SciPy and closed-form values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from studies.stats import bootstrap_ci, holm, wilcoxon_p

SAMPLE = [0.81, 0.79, 0.85, 0.88, 0.76, 0.83, 0.90, 0.72, 0.86, 0.80]


def test_bootstrap_equals_scipy_with_same_generator():
    # SciPy 1.17 draws its resamples as rng.integers(0, n, (resamples, n)) from the given
    # generator, as bootstrap_ci does. With the same seed both average the same
    # resamples, so only the summation order of the means can differ (about 1e-16).
    for statistic in (np.mean, np.median):
        low, high = bootstrap_ci(SAMPLE, statistic=statistic, resamples=10_000, seed=3)
        reference = stats.bootstrap(
            (np.array(SAMPLE),), statistic, n_resamples=10_000, method="percentile", rng=np.random.default_rng(3)
        ).confidence_interval
        assert low == pytest.approx(reference.low, abs=1e-12)
        assert high == pytest.approx(reference.high, abs=1e-12)


def test_bootstrap_matches_scipy_percentile_interval():
    low, high = bootstrap_ci(SAMPLE, resamples=20_000, seed=1)
    reference = stats.bootstrap((np.array(SAMPLE),), np.mean, n_resamples=20_000, method="percentile", rng=np.random.default_rng(2)).confidence_interval
    # Independent generators: the Monte Carlo standard error of a 2.5 % quantile of
    # 20,000 bootstrap means of this sample is about 0.0003, so two estimates differ
    # by more than 0.003 (about 7 standard errors of the difference) practically never.
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


def test_wilcoxon_normal_approximation_with_ties_matches_scipy():
    # 60 differences with ties and zeros: SciPy drops the zeros and uses the normal approximation.
    differences = np.round(np.random.default_rng(4).normal(0.01, 0.03, size=60), 2)
    assert np.any(differences == 0.0)
    assert wilcoxon_p(differences) == pytest.approx(stats.wilcoxon(differences).pvalue, rel=1e-12)


def test_holm_adjustment():
    # Sorted p 0.01, 0.02, 0.04 times 3, 2, 1 gives 0.03, 0.04, 0.04 (kept monotone).
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_holm_four_values_by_hand():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.2 x 1 = 0.2, already increasing.
    assert holm([0.03, 0.005, 0.2, 0.01]) == pytest.approx([0.06, 0.02, 0.2, 0.03])
    # 0.012 x 3 = 0.036 and 0.41 x 1 = 0.41 fall below the adjusted p before them (0.04 and 0.8), which they keep.
    assert holm([0.41, 0.01, 0.4, 0.012]) == pytest.approx([0.8, 0.04, 0.8, 0.04])


def test_holm_skips_missing_values():
    adjusted = holm([0.01, float("nan"), 0.03])
    assert adjusted[0] == pytest.approx(0.02)
    assert np.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.03)

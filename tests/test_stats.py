"""evalsuite.stats: the one statistics module (each check could fail if the procedure were wrong)."""

import math

import numpy as np
import pytest

from evalsuite import stats


def test_bootstrap_mean_matches_plain_resampling():
    vals = np.arange(20, dtype=float)
    res = stats.bootstrap_ci(vals, n_boot=500, seed=3)
    rng = np.random.default_rng(3)
    draws = vals[rng.integers(0, 20, size=(500, 20))].mean(axis=1)
    assert res.estimate == pytest.approx(9.5)
    assert res.ci_low == pytest.approx(np.quantile(draws, 0.025))
    assert res.ci_high == pytest.approx(np.quantile(draws, 0.975))
    assert res.n == 20 and res.n_groups is None


def test_cluster_bootstrap_is_wider_than_unit_bootstrap_for_correlated_rows():
    # 10 clusters of 30 identical rows: the unit bootstrap pretends there are 300 independent values
    rng = np.random.default_rng(0)
    centres = rng.normal(size=10)
    vals = np.repeat(centres, 30)
    groups = np.repeat(np.arange(10), 30)
    unit = stats.bootstrap_ci(vals, n_boot=400, seed=1)
    clus = stats.bootstrap_ci(vals, groups=groups, n_boot=400, seed=1)
    assert clus.n_groups == 10
    assert (clus.ci_high - clus.ci_low) > 3 * (unit.ci_high - unit.ci_low)


def test_bootstrap_ratio_statistic_and_too_few_units():
    rows = np.array([[1, 10], [2, 10], [0, 10], [5, 10]], dtype=float)
    res = stats.bootstrap_ci(rows, lambda r: r[:, 0].sum() / r[:, 1].sum(), n_boot=200)
    assert res.estimate == pytest.approx(0.2)
    assert res.ci_low <= 0.2 <= res.ci_high
    one = stats.bootstrap_ci([1.0])
    assert one.estimate == 1.0 and math.isnan(one.ci_low)


def test_wilson_matches_statsmodels_and_edges():
    lo, hi = stats.wilson_ci(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert stats.wilson_ci(0, 5)[0] == 0.0 and stats.wilson_ci(5, 5)[1] == 1.0
    assert all(math.isnan(v) for v in stats.wilson_ci(0, 0))


def test_spearman_exact_small_n_and_t_large_n():
    perfect = stats.spearman([1, 2, 3], [1, 2, 3])
    assert perfect.rho == pytest.approx(1.0) and perfect.p == pytest.approx(1 / 3)
    assert perfect.p_method == "exact permutation"
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    big = stats.spearman(x, x + 0.5 * rng.normal(size=40))
    assert big.p_method == "t approximation" and big.p < 0.01
    assert math.isnan(stats.spearman([1, 1, 1, 1], [1, 2, 3, 4]).p)


def test_spearman_exact_n7_two_sided():
    # exact two-sided p for a perfect order of n points is 2 / n!
    res = stats.spearman(range(7), range(7))
    assert res.p == pytest.approx(2 / math.factorial(7))


def test_two_proportion_and_adjust_and_permutation():
    d = stats.two_proportion_test(30, 100, 10, 100)
    assert d.diff == pytest.approx(0.2) and d.p < 0.001 and d.ci_low > 0
    adj = stats.adjust_pvalues([0.01, 0.02, np.nan, 0.5], "bh")
    assert math.isnan(adj[2]) and adj[0] == pytest.approx(0.03)
    assert stats.adjust_pvalues([0.01, 0.02], "holm")[0] == pytest.approx(0.02)
    assert stats.permutation_p(5.0, [1, 2, 3, 6]) == pytest.approx(2 / 5)
    with pytest.raises(ValueError):
        stats.adjust_pvalues([0.1], "nope")


def test_bootstrap_ci_uses_exactly_the_2_5_and_97_5_percentiles():
    # what childes-compare's measure CIs were before they moved here: default_rng(seed) draws, 0.025/0.975
    values = np.random.default_rng(3).normal(size=7)
    ci = stats.bootstrap_ci(values, n_boot=400, seed=5)
    idx = np.random.default_rng(5).integers(0, 7, size=(400, 7))
    means = values[idx].mean(axis=1)
    assert (ci.ci_low, ci.ci_high) == (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))


def test_two_proportion_ci_is_defined_at_zero_counts():
    d = stats.two_proportion_test(0, 1000, 50, 2000)  # e.g. generations without a single article
    assert d.diff == pytest.approx(-0.025) and d.ci_low < -0.025 < d.ci_high < 0 and d.p < 0.001

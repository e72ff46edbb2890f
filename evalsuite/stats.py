"""The one statistics module: every interval, rank correlation, proportion test and multiple-
comparison correction in a results table is computed here, so that two tables that both say
"95% CI" mean one procedure. A results column names the procedure through `PROCEDURES` (its key
is what meta.json's `columns[...]["computed_by"]` points at, e.g. "evalsuite.stats.bootstrap_ci").

Conventions: NaN inputs are dropped; too few units give NaN, never a made-up interval; seeds are
explicit so a table is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import permutations

import numpy as np

ALPHA = 0.05
EXACT_SPEARMAN_MAX_N = 10
_CORRECTIONS = {"bh": "fdr_bh", "fdr_bh": "fdr_bh", "holm": "holm", "bonferroni": "bonferroni"}

# What a meta.json `columns` entry says about each procedure (one sentence, no jargon beyond the name).
PROCEDURES: dict[str, str] = {
    "evalsuite.stats.bootstrap_ci": (
        "percentile bootstrap CI (numpy default_rng(seed), resampling units with replacement; with groups=, "
        "whole clusters are resampled)"
    ),
    "evalsuite.stats.wilson_ci": "Wilson score interval (statsmodels proportion_confint, method='wilson')",
    "evalsuite.stats.spearman": (
        f"Spearman's rho; two-sided p exact over all n! orderings for n <= {EXACT_SPEARMAN_MAX_N}, "
        "t approximation (scipy) above"
    ),
    "evalsuite.stats.two_proportion_test": (
        "difference of two proportions: two-sided z test (statsmodels proportions_ztest) and Newcombe "
        "hybrid score CI (statsmodels confint_proportions_2indep, method='newcomb')"
    ),
    "evalsuite.stats.adjust_pvalues": "multiple-comparison adjustment (statsmodels multipletests: BH or Holm)",
    "evalsuite.stats.permutation_p": "permutation p = (b + 1) / (P + 1), b = null draws at least as extreme",
}


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval, the number of units and (for clusters) of groups."""

    estimate: float
    ci_low: float
    ci_high: float
    n: int
    n_groups: int | None = None
    method: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _mean_rows(rows: np.ndarray) -> float:
    return float(np.mean(rows)) if rows.size else math.nan


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] | None = None,
    *,
    groups: Sequence | np.ndarray | None = None,
    n_boot: int = 1000,
    confidence: float = 1 - ALPHA,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap CI of `statistic` (default: the mean) over units.

    `values` is 1-D (one number per unit) or 2-D (one row per unit, e.g. [count, opportunities],
    with a statistic such as `lambda r: r[:, 0].sum() / r[:, 1].sum()`). Rows holding NaN are
    dropped. With `groups` (one label per row: document, transcript, child ...), the resampling
    unit is the group: whole groups are drawn with replacement and their rows concatenated, which
    is what makes an interval honest when rows within a group are correlated.
    Fewer than 2 units (or groups) give a NaN interval; constant data give a point interval.
    """
    stat = statistic or _mean_rows
    arr = np.asarray(values, dtype=float)
    keep = ~np.isnan(arr) if arr.ndim == 1 else ~np.isnan(arr).any(axis=1)
    arr = arr[keep]
    n = int(arr.shape[0])
    estimate = float(stat(arr)) if n else math.nan
    rng = np.random.default_rng(seed)
    # alpha rounded so that confidence=0.95 gives exactly the 0.025/0.975 quantiles (1 - 0.95 != 0.05 in floats)
    alpha = round(1 - confidence, 12)
    lo_q, hi_q = alpha / 2, 1 - alpha / 2
    if groups is None:
        method = f"bootstrap over {n} units, {n_boot} resamples"
        if n < 2:
            return Interval(estimate, math.nan, math.nan, n, None, method)
        idx = rng.integers(0, n, size=(n_boot, n))
        if statistic is None and arr.ndim == 1:
            draws = arr[idx].mean(axis=1)
        else:
            draws = np.array([stat(arr[i]) for i in idx], dtype=float)
        return Interval(estimate, *_quantiles(draws, lo_q, hi_q), n, None, method)
    labels = np.asarray(groups, dtype=object)[keep]
    uniq, codes = np.unique(labels.astype(str), return_inverse=True)
    g = len(uniq)
    method = f"cluster bootstrap over {g} groups ({n} units), {n_boot} resamples"
    if g < 2:
        return Interval(estimate, math.nan, math.nan, n, g, method)
    members = [np.flatnonzero(codes == k) for k in range(g)]
    draws = np.empty(n_boot)
    for b in range(n_boot):
        picked = rng.integers(0, g, size=g)
        rows = np.concatenate([members[k] for k in picked])
        draws[b] = stat(arr[rows])
    return Interval(estimate, *_quantiles(draws, lo_q, hi_q), n, g, method)


def _quantiles(draws: np.ndarray, lo_q: float, hi_q: float) -> tuple[float, float]:
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return math.nan, math.nan
    return float(np.quantile(finite, lo_q)), float(np.quantile(finite, hi_q))


def bootstrap_mean_cis(
    columns: Sequence[Sequence[float] | np.ndarray], *, n_boot: int = 1000, confidence: float = 1 - ALPHA, seed: int = 0
) -> list[Interval]:
    """bootstrap_ci of the mean of each of several equally long columns (the same units), from one draw.

    bootstrap_ci of a mean draws `default_rng(seed).integers(0, n, size=(n_boot, n))` and averages each row of
    `values[idx]`; with the same seed and the same n (no NaN to drop) that draw is the same for every column, so
    drawing it once and repeating the rest of bootstrap_ci's steps per column gives the same numbers (tested
    against bootstrap_ci), with one random draw instead of one per column (the draws were most of the time of
    childes-compare's measure table at corpus scale). Any NaN, or fewer than 2 rows: bootstrap_ci itself."""
    arrays = [np.asarray(c, dtype=float) for c in columns]
    n = len(arrays[0]) if arrays else 0
    if n < 2 or any(len(a) != n or np.isnan(a).any() for a in arrays):
        return [bootstrap_ci(a, n_boot=n_boot, confidence=confidence, seed=seed) for a in arrays]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    alpha = round(1 - confidence, 12)  # as bootstrap_ci rounds it
    method = f"bootstrap over {n} units, {n_boot} resamples"
    return [Interval(float(_mean_rows(a)), *_quantiles(draws, alpha / 2, 1 - alpha / 2), n, None, method)
            for a, draws in zip(arrays, _resampled_means(arrays, idx), strict=True)]


_FIELD_BITS = 16


def _packable(arrays: list[np.ndarray]) -> bool:
    """Whether `_resampled_means` can pack the arrays: at most 4, all integers in [0, 2**16)."""
    return len(arrays) <= 64 // _FIELD_BITS and all(
        a.size and a.min() >= 0 and a.max() < (1 << _FIELD_BITS) and np.array_equal(a, np.floor(a)) for a in arrays)


def _resampled_means(arrays: list[np.ndarray], idx: np.ndarray) -> list[np.ndarray]:
    """`a[idx].mean(axis=1)` for each array. Counts (MLU numerators, clauses) are small non-negative integers:
    then up to 4 of them are packed into one uint64 and gathered once instead of once per column (the random
    gather is the cost), and each row's sum of a field is an exact integer; np.mean of integer-valued floats
    is that exact sum divided by n (every partial sum is an integer below 2**53, so summation order cannot
    round), hence the same floats as the per-column means."""
    n = idx.shape[1]
    if not _packable(arrays):
        return [a[idx].mean(axis=1) for a in arrays]
    packed = np.zeros(n, dtype=np.uint64)
    for j, a in enumerate(arrays):
        packed |= a.astype(np.uint64) << np.uint64(_FIELD_BITS * j)
    sums = np.empty((len(arrays), idx.shape[0]), dtype=np.int64)
    mask = np.uint64((1 << _FIELD_BITS) - 1)
    step = max(1, (1 << 22) // n)  # rows of draws per block: a few MB of temporaries, not GB
    for b in range(0, idx.shape[0], step):
        block = packed[idx[b:b + step]]
        for j in range(len(arrays)):
            sums[j, b:b + step] = ((block >> np.uint64(_FIELD_BITS * j)) & mask).sum(axis=1, dtype=np.int64)
    return [sums[j].astype(float) / n for j in range(len(arrays))]


def wilson_ci(count: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Wilson score interval for count/n (statsmodels); NaN for n == 0."""
    (lo,), (hi,) = wilson_cis(np.array([count]), np.array([n]), alpha)
    return lo, hi


def wilson_cis(counts: np.ndarray, ns: np.ndarray, alpha: float = ALPHA) -> tuple[list[float], list[float]]:
    """wilson_ci of each (count, n): statsmodels' Wilson interval on the arrays at once (thousands of scalar
    calls took seconds in childes-compare's rate table), then the exact ends per element; NaN where n == 0."""
    from statsmodels.stats.proportion import proportion_confint

    los, his = [math.nan] * len(counts), [math.nan] * len(counts)
    ok = np.flatnonzero(np.asarray(ns) > 0)
    if not len(ok):
        return los, his
    lo_all, hi_all = proportion_confint(np.asarray(counts)[ok].astype(np.int64), np.asarray(ns)[ok].astype(np.int64),
                                        alpha=alpha, method="wilson")
    for k, i in enumerate(ok):
        count, n = counts[i], ns[i]
        p = float(count / n)
        # exact ends: no float dust above 0 or below 1, and the interval always holds the estimate
        lo = 0.0 if count == 0 else max(0.0, float(lo_all[k]))
        hi = 1.0 if count == n else min(1.0, float(hi_all[k]))
        los[i], his[i] = float(min(lo, p)), float(max(hi, p))
    return los, his


@dataclass(frozen=True)
class Correlation:
    rho: float
    p: float
    n: int
    p_method: str

    def as_dict(self) -> dict:
        return asdict(self)


def _exact_spearman_p(rx: np.ndarray, ry: np.ndarray, rho: float, chunk: int = 200_000) -> float:
    """Share of all n! re-orderings of ry whose |rho| reaches the observed |rho| (ties kept)."""
    n = len(rx)
    cx = rx - rx.mean()
    cy = ry - ry.mean()
    denom = math.sqrt(float(cx @ cx) * float(cy @ cy))
    hits = total = 0
    it = permutations(range(n))
    while True:
        block = np.fromiter((i for p in _take(it, chunk) for i in p), dtype=np.int64)
        if block.size == 0:
            break
        perm = block.reshape(-1, n)
        r = (cy[perm] @ cx) / denom
        hits += int(np.sum(np.abs(r) >= abs(rho) - 1e-12))
        total += perm.shape[0]
    return hits / total


def _take(it, k: int):
    for _ in range(k):
        try:
            yield next(it)
        except StopIteration:
            return


def spearman(x: Sequence[float], y: Sequence[float]) -> Correlation:
    """Spearman's rho with a two-sided p: exact (all n! orderings) for n <= 10, where scipy's
    t-approximation is wrong (it gives p = 0 for a perfect order of 3 points; the exact p is 1/3),
    the t approximation above. Pairs with a NaN are dropped; n < 3 or a constant variable give NaN."""
    from scipy import stats as sps

    xa, ya = np.asarray(x, float), np.asarray(y, float)
    ok = ~(np.isnan(xa) | np.isnan(ya))
    n = int(ok.sum())
    if n < 3:
        return Correlation(math.nan, math.nan, n, "")
    res = sps.spearmanr(xa[ok], ya[ok])
    rho = float(res[0])
    if rho != rho:
        return Correlation(rho, math.nan, n, "undefined (constant values)")
    if n <= EXACT_SPEARMAN_MAX_N:
        rx, ry = sps.rankdata(xa[ok]), sps.rankdata(ya[ok])
        return Correlation(rho, _exact_spearman_p(rx, ry, rho), n, "exact permutation")
    return Correlation(rho, float(res[1]), n, "t approximation")


@dataclass(frozen=True)
class ProportionDifference:
    p1: float
    p2: float
    diff: float
    ci_low: float
    ci_high: float
    z: float
    p: float

    def as_dict(self) -> dict:
        return asdict(self)


def two_proportion_test(k1: int, n1: int, k2: int, n2: int, alpha: float = ALPHA) -> ProportionDifference:
    """p1 - p2 with a Newcombe score CI and a two-sided z-test p (statsmodels). NaN when n1 or n2 is 0,
    or when both proportions are 0 or both 1 (no variance: the test is undefined, not p = 1)."""
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    if n1 <= 0 or n2 <= 0:
        return ProportionDifference(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    p1, p2 = k1 / n1, k2 / n2
    # Newcombe's hybrid (from two Wilson intervals): closed form, defined at zero counts, where
    # statsmodels' method="score" root search fails ("function value is NaN")
    lo, hi = confint_proportions_2indep(k1, n1, k2, n2, method="newcomb", compare="diff", alpha=alpha)
    if (k1 + k2) in (0, n1 + n2):
        z = p = math.nan
    else:
        z, p = proportions_ztest([k1, k2], [n1, n2])
    return ProportionDifference(p1, p2, p1 - p2, float(lo), float(hi), float(z), float(p))


def adjust_pvalues(p: Sequence[float] | np.ndarray, method: str = "bh") -> np.ndarray:
    """BH (false discovery rate) or Holm adjustment over the finite entries of `p`; NaN stays NaN."""
    from statsmodels.stats.multitest import multipletests

    if method not in _CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; use one of {sorted(_CORRECTIONS)}")
    arr = np.asarray(p, dtype=float)
    out = np.full(arr.shape, np.nan)
    ok = np.isfinite(arr)
    if ok.any():
        out[ok] = multipletests(arr[ok], method=_CORRECTIONS[method])[1]
    return out


def permutation_p(observed: float, null: Sequence[float] | np.ndarray, alternative: str = "greater") -> float:
    """Monte Carlo p = (b + 1) / (P + 1) over P null draws (`greater`, `less` or `two-sided`)."""
    draws = np.asarray(null, dtype=float)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0 or not math.isfinite(observed):
        return math.nan
    if alternative == "greater":
        b = int(np.sum(draws >= observed))
    elif alternative == "less":
        b = int(np.sum(draws <= observed))
    elif alternative == "two-sided":
        centre = float(np.mean(draws))
        b = int(np.sum(np.abs(draws - centre) >= abs(observed - centre)))
    else:
        raise ValueError(f"unknown alternative {alternative!r}")
    return (b + 1) / (draws.size + 1)

"""Statistics for dim-probe, from the streaming sums of `collect.Accumulated`.

Per model, layer l, component k and category c (definitions used in every output):

- `mean`: mean magnitude ||h_l[t, component k]|| over the category's tokens, pooled over documents.
- `overall`: the same over all analysed tokens; `sd`: their standard deviation.
- `ratio` = mean / overall ("relative activation"; 1 = as active as on an average token).
- `z` = (mean - overall) / sd: the category's shift in units of the component's token-level SD
  (a standardised effect size, not a test statistic).
- The permutation null shuffles the words' labels within each document (collect.py). Its test
  statistic is D = S - mu0 * n: the category's token sum S minus mu0 times its token count n, with
  mu0 = E*[S] / E*[n] the null's expected sum per expected token (so E*[D] = 0). D compares the
  category's mean with what a random set of the document's words gives.
- `z_perm` = D / sqrt(Var*[D]), with the exact null variance (finite-population formulas per
  document over its words, summed). `p_norm` is its two-sided normal p-value (a high-resolution
  companion of `p`: the Monte Carlo p cannot go below 1/(P + 1)).
- `p`: Monte Carlo permutation p-value, two-sided, (1 + #{|D*| >= |D|}) / (P + 1).
- `p_adj`: `p` corrected over all (layer, component, category) tests of that model
  (Benjamini-Hochberg FDR by default, or Holm FWER); `significant` = p_adj < alpha.
- `ci_low`, `ci_high` (of the mean) and `ratio_ci_*`, `rank_mean_ci_*`: 95% percentile intervals
  from a bootstrap that resamples documents with replacement (the same resamples for every model,
  so comparisons between models are paired).
- `rank_mean`, `rank_ratio`: rank of the component within (layer, category), 1 = highest.

Specialisation of a category at a layer: `spec` = max_k |ratio_k - 1|, the largest relative
deviation of any component from its overall mean. It is biased upward by noise (a max of absolute
values), so every spec comes with `spec_null` (its mean under the permutation null: what chance
alone gives for that many tokens), `spec_excess` = spec - spec_null, its bootstrap CI, and
`spec_p` (permutation p of spec). A control comparison takes the paired bootstrap difference of
`spec_excess` between the probed model and a control; the probed model "exceeds" the control when
the 95% CI of that difference lies above 0.

The value is whatever collect.py measured: by default the per-token share ||h_k|| / ||h|| (so
`ratio` is the share relative to the component's mean share), or the raw norm.

Claims (`claims_across_models`): the original claim is tested on every model of the run, the
probed checkpoint and each control, with `claims_table`'s within-model verdict; a probed-model
verdict of supported / refuted survives only where the probed model's claim score differs from
every control's by more than the controls differ from each other (CLAIM_RULE), never on fewer than
`min_docs` documents, and never at layer 0 (the embedding). An untrained probe gets
`not_distinguishable_from_control` or `uncertain` (tests/test_dimprobe_probe.py checks it).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from evalsuite.dimprobe.collect import Accumulated

ALL = "ALL"
CORRECTIONS = {"bh": "fdr_bh", "fdr_bh": "fdr_bh", "holm": "holm"}
# The finding dim-probe was built to test (components as 0-based indices e0..e7).
ORIGINAL_CLAIM: dict[str, tuple[int, ...]] = {
    "NOUN": (0, 1, 7),
    "VERB": (0, 7, 1),
    "PRON": (0, 7, 2),
    "EMOTION": (0, 1, 3),
    "DIALOGUE": (0, 2, 1),
}


def bootstrap_weights(n_docs: int, n_boot: int, seed: int) -> np.ndarray:
    """(B, D) multiplicities of each document in B resamples of D documents with replacement."""
    rng = np.random.default_rng([seed, 7919])
    if n_docs == 0 or n_boot == 0:
        return np.zeros((n_boot, n_docs))
    draws = rng.integers(0, n_docs, size=(n_boot, n_docs))
    flat = draws + (np.arange(n_boot) * n_docs)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n_docs).reshape(n_boot, n_docs).astype(np.float64)


def _ranks_desc(values: np.ndarray) -> np.ndarray:
    """Rank along the last axis, 1 = largest; NaN ranks last."""
    filled = np.where(np.isnan(values), -np.inf, values)
    order = np.argsort(-filled, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, values.shape[-1] + 1), axis=-1)
    return ranks


def _max_last(values: np.ndarray) -> np.ndarray:
    """values.max(axis=-1) (NaN propagates) as pairwise np.maximum over the few last-axis entries:
    the same values, without numpy's slow reduction over a short, innermost axis."""
    out = values[..., 0].copy()
    for k in range(1, values.shape[-1]):
        np.maximum(out, values[..., k], out=out)
    return out


def _boot_ranks(boot: np.ndarray) -> np.ndarray:
    """(K, B, ...) int8 ranks (1 = largest; NaN as -inf; ties: the earlier component first) of
    bootstrap draws boot (B, ..., K), exactly the ranks of a stable descending argsort, from one
    comparison per pair of components (rank_i = 1 + #{j > i: v_j > v_i} + #{j < i: v_j >= v_i})."""
    k = boot.shape[-1]
    values = np.moveaxis(boot, -1, 0)  # (K, B, ...)
    filled = np.where(np.isnan(values), -np.inf, values)
    ranks = np.ones(filled.shape, dtype=np.int8 if k < 127 else np.int64)
    for i in range(k):
        for j in range(i + 1, k):
            later_above = filled[j] > filled[i]  # then j outranks i; else (ties: the earlier wins) i outranks j
            ranks[i] += later_above
            ranks[j] += ~later_above
    return ranks


def _nan_flags_last(values: np.ndarray) -> tuple[np.ndarray, int] | None:
    """The NaN flags of `values` with each run of K = values.shape[-1] flags (K in 1, 2, 4, 8) read as
    one unsigned integer (bool bytes are 0 or 1), or None for other K: then numpy's any()/all() over
    the short innermost axis (slow: a reduction per K entries) is the way."""
    k = values.shape[-1]
    if k not in (1, 2, 4, 8):
        return None
    return np.ascontiguousarray(np.isnan(values)).view(f"u{k}")[..., 0], int.from_bytes(b"\x01" * k, "little")


def _any_nan_last(values: np.ndarray) -> np.ndarray:
    """np.isnan(values).any(axis=-1), exactly (some flag set: the integer is not 0)."""
    packed = _nan_flags_last(values)
    return np.isnan(values).any(axis=-1) if packed is None else packed[0] != 0


def _all_nan_last(values: np.ndarray) -> np.ndarray:
    """np.isnan(values).all(axis=-1), exactly (every flag set: the integer is 0x01...01)."""
    packed = _nan_flags_last(values)
    return np.isnan(values).all(axis=-1) if packed is None else packed[0] == packed[1]


def _cumulative_rank_counts(ranks: np.ndarray) -> np.ndarray:
    """(K, K, M) int64: [r, k, m] = #{b: ranks[k, b, m] <= r + 1} for ranks (K, B, M) in 1..K + 1, from
    one bincount over (component, column, rank) cells instead of K comparisons and counts of the
    whole array (the same integer counts)."""
    k, _, m = ranks.shape
    cells = (np.arange(k)[:, None, None] * m + np.arange(m)[None, None, :]) * (k + 2)  # (K, 1, M)
    counts = np.bincount((cells + ranks).ravel(), minlength=k * m * (k + 2)).reshape(k, m, k + 2)
    return np.ascontiguousarray(np.cumsum(counts[:, :, 1 : k + 1], axis=2).transpose(2, 0, 1))


def _boot_rank_interval(
    boot: np.ndarray, low: float = 2.5, high: float = 97.5, ranks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """_rank_interval(np.where(all-NaN row, NaN, _ranks_desc(boot)), K) for bootstrap draws
    boot (B, ..., K), with the ranks from pairwise comparisons (rank_i = 1 + #{j > i: v_j > v_i}
    + #{j < i: v_j >= v_i}, NaN as -inf: exactly the stable descending argsort's ranks; one
    comparison per pair), component-major so every comparison runs over one contiguous vector, and the
    cumulative counts per rank from one bincount (`_cumulative_rank_counts`), instead of B x ...
    argsorts of K values."""
    n_boot, k = boot.shape[0], boot.shape[-1]
    rest = boot.shape[1:-1]
    ranks = (_boot_ranks(boot) if ranks is None else ranks).reshape(k, n_boot, -1)  # (K, B, M)
    valid = ~_all_nan_last(boot).reshape(n_boot, -1)  # (B, M): resamples holding the category
    ranks = np.where(valid[None], ranks, np.asarray(k + 1, dtype=ranks.dtype))  # left out: above every rank
    total = valid.sum(axis=0)  # (M,)
    cum = _cumulative_rank_counts(ranks)  # (rank r, K, M): resamples with rank <= r
    out = []
    for q, rounding in ((low, np.floor), (high, np.ceil)):
        idx = rounding(q / 100.0 * np.maximum(total - 1, 0))
        value = 1.0 + (cum <= idx[None, None]).sum(axis=0)  # the (idx+1)-th smallest rank, (K, M)
        out.append(np.moveaxis(np.where(total[None] > 0, value, np.nan), 0, -1).reshape(*rest, k))
    return out[0], out[1]


def _percentile(draws: np.ndarray, q: float) -> np.ndarray:
    """np.nanpercentile(draws, q, axis=0) with linear interpolation, vectorised (NaN draws are
    ignored; all-NaN columns give NaN). numpy's nanpercentile loops over columns in Python."""
    ordered = np.sort(draws, axis=0)  # NaN sorts last
    valid = (~np.isnan(draws)).sum(axis=0)
    pos = q / 100.0 * np.maximum(valid - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(valid - 1, 0))
    frac = pos - lo
    lo_val = np.take_along_axis(ordered, lo[None], axis=0)[0]
    hi_val = np.take_along_axis(ordered, hi[None], axis=0)[0]
    with np.errstate(invalid="ignore"):
        out = lo_val + (hi_val - lo_val) * frac
    return np.where(valid > 0, out, np.nan)


def _interval(draws: np.ndarray, low: float = 2.5, high: float = 97.5) -> tuple[np.ndarray, np.ndarray]:
    """(_percentile(draws, low), _percentile(draws, high)): the same order statistics and the same
    interpolation. Without a NaN draw they sit at fixed positions of the sorted draws (a full sort:
    numpy's vectorised sort of 1000 draws is about twice as fast as np.partition around the four
    order statistics, which gave the same values); with one, each column counts its valid draws."""
    n = draws.shape[0]
    if n > 1 and not np.isnan(draws).any():
        # each column's draws sorted as one contiguous row (faster than numpy's sort along axis 0)
        ordered = draws.reshape(n, -1).T.copy()
        ordered.sort(axis=-1)
        out = []
        for q in (low, high):
            pos = q / 100.0 * (n - 1)
            lo = int(np.floor(pos))
            hi = min(lo + 1, n - 1)
            out.append((ordered[:, lo] + (ordered[:, hi] - ordered[:, lo]) * (pos - lo)).reshape(draws.shape[1:]))
        return out[0], out[1]
    return _interval_sorted(draws, low, high)


def _interval_sorted(draws: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """_interval by a full sort (NaN draws sort last and are left out of the count): each column's
    draws sorted as one contiguous row, the order statistics read per row (the same values as a
    sort along axis 0 and take_along_axis, without the strided passes)."""
    n = draws.shape[0]
    flat = draws.reshape(n, -1)
    ordered = flat.T.copy()  # (M, B)
    ordered.sort(axis=-1)
    valid = n - np.isnan(flat).sum(axis=0)
    rows = np.arange(ordered.shape[0])
    top = np.maximum(valid - 1, 0)
    out = []
    for q in (low, high):
        pos = q / 100.0 * top
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, top)
        lo_val = ordered[rows, lo]
        hi_val = ordered[rows, hi]
        with np.errstate(invalid="ignore"):
            value = lo_val + (hi_val - lo_val) * (pos - lo)
        out.append(np.where(valid > 0, value, np.nan).reshape(draws.shape[1:]))
    return out[0], out[1]


def _interval1(draws: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of 1-D draws (NaN ignored)."""
    finite = draws[np.isfinite(draws)]
    if not len(finite):
        return np.nan, np.nan
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def _intervals1(draws: Sequence[np.ndarray]) -> list[tuple[float, float]]:
    """[_interval1(d) for d in draws], with one np.percentile call over the columns whose draws are
    all finite (the same order statistics and interpolation per column as one call each)."""
    out: list[tuple[float, float]] = [(np.nan, np.nan)] * len(draws)
    if not len(draws):
        return out
    lengths = {len(d) for d in draws}
    if len(lengths) != 1:
        return [_interval1(d) for d in draws]
    return _column_intervals(np.stack([np.asarray(d, dtype=np.float64) for d in draws], axis=1))


def _column_intervals(stacked: np.ndarray) -> list[tuple[float, float]]:
    """_intervals1 of the columns of stacked (B, M) float64 draws."""
    out: list[tuple[float, float]] = [(np.nan, np.nan)] * stacked.shape[1]
    clean = np.isfinite(stacked).all(axis=0) & (stacked.shape[0] > 0)
    if clean.any():
        low, high = np.percentile(stacked[:, clean], [2.5, 97.5], axis=0)
        for i, lo, hi in zip(np.flatnonzero(clean), low, high, strict=True):
            out[i] = (float(lo), float(hi))
    for i in np.flatnonzero(~clean):
        out[i] = _interval1(stacked[:, i])
    return out


def _rank_interval(ranks: np.ndarray, n: int, low: float = 2.5, high: float = 97.5) -> tuple[np.ndarray, np.ndarray]:
    """(_rank_percentile(ranks, low, "lower"), _rank_percentile(ranks, high, "higher")) for ranks in
    1..n (NaN = no ranking in that resample), from counts per rank instead of a sort."""
    counts = np.stack([(ranks == r).sum(axis=0) for r in range(1, n + 1)])  # (n, ...)
    cum = np.cumsum(counts, axis=0)
    valid = cum[-1]
    out = []
    for q, rounding in ((low, np.floor), (high, np.ceil)):
        idx = rounding(q / 100.0 * np.maximum(valid - 1, 0))
        value = 1.0 + (cum <= idx[None]).sum(axis=0)  # the (idx+1)-th smallest rank
        out.append(np.where(valid > 0, value, np.nan))
    return out[0], out[1]


def _rank_percentile(draws: np.ndarray, q: float, method: str) -> np.ndarray:
    """np.nanpercentile(draws, q, axis=0, method="lower" | "higher"), vectorised (NaN draws ignored)."""
    ordered = np.sort(draws, axis=0)  # NaN sorts last
    valid = (~np.isnan(draws)).sum(axis=0)
    pos = q / 100.0 * np.maximum(valid - 1, 0)
    idx = (np.floor(pos) if method == "lower" else np.ceil(pos)).astype(np.int64)
    out = np.take_along_axis(ordered, idx[None], axis=0)[0]
    return np.where(valid > 0, out, np.nan)


def adjust_pvalues(p: np.ndarray, method: str = "bh") -> np.ndarray:
    """Multiple-comparison correction over the finite entries of `p` (NaN stays NaN): the shared
    `evalsuite.stats.adjust_pvalues` (one procedure for every table)."""
    from evalsuite.stats import adjust_pvalues as shared_adjust

    return shared_adjust(p, CORRECTIONS[method])


@dataclass
class ModelStats:
    """Statistics of one model. Arrays are indexed (category, layer, component) unless noted."""

    name: str
    layers: list[int]
    categories: list[str]
    n_components: int
    table: pd.DataFrame  # tidy, one row per (layer, component, category) plus ALL rows
    spec: pd.DataFrame  # one row per (layer, category)
    mean: np.ndarray  # (C, L, K)
    overall: np.ndarray  # (L, K)
    ratio: np.ndarray  # (C, L, K)
    n_tokens: np.ndarray  # (C,)
    boot_mean: np.ndarray  # (B, C, L, K)
    boot_overall: np.ndarray  # (B, L, K)
    boot_spec_excess: np.ndarray  # (B, C, L)
    spec_excess: np.ndarray  # (C, L)
    rank_mean: np.ndarray | None = None  # (C, L, K)
    rank_ci_low: np.ndarray | None = None  # (C, L, K)
    rank_ci_high: np.ndarray | None = None  # (C, L, K)
    p_adj: np.ndarray | None = None  # (C, L, K)
    boot_ranks: np.ndarray | None = None  # (K, B, C, L) int8: _boot_ranks(boot_mean), for claims_table
    # per (category, claimed): (S per layer (L,), bootstrap draws (B, L)), computed once (_claim_scores)
    claim_draws: dict[tuple, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    # (scale (L,), bootstrap scale (B, L)): the layers' average component value, shared by every claim
    claim_scale: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)


def compute_stats(
    name: str,
    acc: Accumulated,
    weights: np.ndarray,
    *,
    alpha: float = 0.05,
    correction: str = "bh",
    chunk: int = 128,
) -> ModelStats:
    """All statistics of one model (see the module docstring for the definitions)."""
    n_l, n_k, n_c = len(acc.layers), acc.n_components, len(acc.categories)
    lk = n_l * n_k
    n_total = float(acc.doc_n_total.sum())
    n_cat = acc.doc_n_cat.sum(axis=0).astype(np.float64)  # (C,)
    n_docs_cat = (acc.doc_n_cat > 0).sum(axis=0)
    cat_sum = acc.doc_cat_sum.astype(np.float64).sum(axis=0)  # (C, LK)
    tot_sum = acc.doc_sum.sum(axis=0)  # (LK,)
    tot_sumsq = acc.doc_sumsq.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        overall = tot_sum / n_total
        sd = np.sqrt(np.maximum(tot_sumsq / n_total - overall**2, 0.0))
        mean = cat_sum / n_cat[:, None]
        cat_sd = np.sqrt(np.maximum(acc.cat_sumsq / n_cat[:, None] - mean**2, 0.0))
        ratio = mean / overall[None, :]
        z = (mean - overall[None, :]) / sd[None, :]

    # exact moments of the word-level permutation null, document by document. The test statistic
    # is D = S - mu0 * n (category token sum minus mu0 times its token count), with mu0 = E[S*]/E[n*]
    # so that E[D*] = 0; a random subset of W words of U has finite-population moments.
    units = acc.doc_units.astype(np.float64)
    words_cat = acc.doc_units_cat.astype(np.float64)  # (D, C)
    safe_u = np.maximum(units, 1.0)
    mean_s = acc.doc_unit_sum / safe_u[:, None]  # (D, LK)
    mean_n = acc.doc_unit_n / safe_u  # (D,)
    var_s = np.maximum(acc.doc_unit_s2 / safe_u[:, None] - mean_s**2, 0.0)
    cov_sn = acc.doc_unit_sn / safe_u[:, None] - mean_s * mean_n[:, None]
    var_n = np.maximum(acc.doc_unit_n2 / safe_u - mean_n**2, 0.0)
    fpc = np.where(units[:, None] > 1, words_cat * (units[:, None] - words_cat) / np.maximum(units[:, None] - 1, 1), 0.0)
    expect_s = words_cat.T @ mean_s  # (C, LK)
    expect_n = words_cat.T @ mean_n  # (C,)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu0 = expect_s / expect_n[:, None]
    mu0 = np.nan_to_num(mu0)
    var = fpc.T @ var_s - 2 * mu0 * (fpc.T @ cov_sn) + mu0**2 * (fpc.T @ var_n)[:, None]
    dev = cat_sum - mu0 * n_cat[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        z_perm = np.where(var > 1e-12 * (np.abs(expect_s) + 1) ** 2, dev / np.sqrt(np.maximum(var, 0)), np.nan)
    p_norm = 2 * sps.norm.sf(np.abs(z_perm))

    # Monte Carlo permutation p-values
    p_mc = np.full((n_c, lk), np.nan)
    spec_p = np.full((n_c, n_l), np.nan)
    spec_null = np.full((n_c, n_l), np.nan)
    if acc.perm_sum is not None and acc.perm_n is not None and acc.perm_sum.shape[1] > 0:
        n_perm = acc.perm_sum.shape[1]
        # replicates are float32 sums: ties within rounding count as "as extreme"
        tol = 1e-6 * np.abs(expect_s) + 1e-12
        # one category at a time, in one (P, LK) work array reused in place (it stays in cache):
        # |D*| = |S* - mu0 n*|, then |S* / n* / overall - 1| (the same elementwise operations)
        work = np.empty((n_perm, lk))
        above = np.empty((n_perm, lk), dtype=bool)
        bound = np.abs(dev) - tol
        exceed = np.empty((n_c, lk), dtype=np.intp)
        perm_spec = np.empty((n_c, n_perm, n_l))  # (C, P, L)
        for c in range(n_c):
            np.multiply(acc.perm_n[c][:, None], mu0[c][None, :], out=work)
            np.subtract(acc.perm_sum[c], work, out=work)
            np.abs(work, out=work)
            np.greater_equal(work, bound[c], out=above)
            exceed[c] = np.count_nonzero(above, axis=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                np.divide(acc.perm_sum[c], acc.perm_n[c][:, None], out=work)
                np.divide(work, overall[None, :], out=work)
            np.subtract(work, 1.0, out=work)
            np.abs(work, out=work)
            perm_spec[c] = _max_last(work.reshape(n_perm, n_l, n_k))
        p_mc = (1.0 + exceed) / (n_perm + 1.0)
        finite = np.isfinite(perm_spec)
        with np.errstate(invalid="ignore", divide="ignore"):
            spec_null = np.where(finite, perm_spec, 0.0).sum(axis=1) / finite.sum(axis=1)
    present = n_cat > 0
    p_mc[~present] = np.nan
    p_norm[~present] = np.nan
    p_adj = adjust_pvalues(p_mc.ravel(), correction).reshape(n_c, lk)
    p_norm_adj = adjust_pvalues(p_norm.ravel(), correction).reshape(n_c, lk)

    # document bootstrap (chunks of resamples keep memory at chunk x C x LK)
    n_boot = weights.shape[0]
    boot_mean = np.empty((n_boot, n_c, lk), dtype=np.float32)
    boot_overall = np.empty((n_boot, lk), dtype=np.float64)
    flat_cat = acc.doc_cat_sum.reshape(acc.doc_cat_sum.shape[0], n_c * lk).astype(np.float64)
    for a in range(0, n_boot, chunk):
        w = weights[a : a + chunk]
        with np.errstate(divide="ignore", invalid="ignore"):
            nc_b = w @ acc.doc_n_cat  # (b, C)
            # the float64 quotient rounded to float32 as it is stored (astype's rounding, no float64 copy)
            np.divide((w @ flat_cat).reshape(-1, n_c, lk), nc_b[:, :, None], out=boot_mean[a : a + chunk],
                      casting="same_kind")
            boot_overall[a : a + chunk] = (w @ acc.doc_sum) / (w @ acc.doc_n_total)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        boot_ratio = boot_mean / boot_overall[:, None, :]
    ci_low, ci_high = _interval(boot_mean)
    r_low, r_high = _interval(boot_ratio)
    all_low, all_high = _interval(boot_overall)

    shape4 = (n_c, n_l, n_k)
    rank_mean = _ranks_desc(mean.reshape(shape4))
    rank_ratio = _ranks_desc(ratio.reshape(shape4))
    if n_boot:
        # a resample without the category's tokens has no ranking: leave it out (ranking its NaN
        # means would hand out ranks 1..K in component order, e.g. rank 1 to e0). float32 values
        # compare as their float64 casts do, so no cast is needed for the ranks.
        boot_ranks = _boot_ranks(boot_mean.reshape(n_boot, *shape4))
        rk_low, rk_high = _boot_rank_interval(boot_mean.reshape(n_boot, *shape4), ranks=boot_ranks)
    else:
        boot_ranks = None
        rk_low = rk_high = np.full(shape4, np.nan)

    # specialisation
    spec = np.abs(ratio.reshape(shape4) - 1.0)
    spec_comp = np.argmax(np.where(np.isnan(spec), -np.inf, spec), axis=-1)  # (C, L)
    spec_val = np.nanmax(np.where(np.isnan(spec), -np.inf, spec), axis=-1)
    spec_val[~present] = np.nan
    boot_dev = boot_ratio.reshape(n_boot, *shape4)  # boot_ratio's buffer: it is not needed any more
    np.subtract(boot_dev, 1.0, out=boot_dev)
    np.abs(boot_dev, out=boot_dev)
    boot_spec = _max_last(boot_dev)  # NaN wherever a component is NaN (a resample without the category)
    with_nan = np.isnan(boot_spec)
    if with_nan.any():  # there: the largest non-NaN component, NaN only when every component is NaN
        cells = boot_dev[with_nan]  # (n, K)
        missing = np.isnan(cells)
        boot_spec[with_nan] = np.where(missing.all(axis=-1), np.nan, np.where(missing, -np.inf, cells).max(axis=-1))
    if acc.perm_sum is not None and acc.perm_sum.shape[1] > 0:
        spec_p = (1.0 + (np.nan_to_num(perm_spec, nan=np.inf) >= (spec_val - 1e-9)[:, None, :]).sum(axis=1)) \
            / (n_perm + 1.0)
        spec_p[~present] = np.nan
    null_for_excess = np.nan_to_num(spec_null, nan=0.0)
    spec_excess = spec_val - null_for_excess
    boot_spec_excess = boot_spec - null_for_excess[None]

    # tidy tables
    layer_idx, comp_idx = np.divmod(np.arange(lk), n_k)
    overall_rank = _ranks_desc(overall.reshape(n_l, n_k))
    # one frame, category-major blocks of (layer, component) rows, then the ALL block (the rows and
    # dtypes of one frame per category concatenated, built without the per-category frames)

    def block(per_cat: np.ndarray | float, all_value: np.ndarray | float) -> np.ndarray:
        cats = np.broadcast_to(np.asarray(per_cat), (n_c, lk)).reshape(-1)
        return np.concatenate([cats, np.broadcast_to(np.asarray(all_value), (lk,))])

    def per_category(values: np.ndarray | Sequence[object]) -> np.ndarray:
        return np.asarray(values)[:, None].repeat(lk, axis=1)

    components = np.asarray([f"e{k}" for k in comp_idx], dtype=object)
    table = pd.DataFrame({
        "model": name,
        "layer": np.tile(np.asarray(acc.layers)[layer_idx], n_c + 1),
        "component": np.tile(components, n_c + 1),
        "category": block(per_category(np.asarray(acc.categories, dtype=object)), np.asarray(ALL, dtype=object)),
        "mean": block(mean, overall), "ci_low": block(ci_low, all_low), "ci_high": block(ci_high, all_high),
        "sd": block(cat_sd, sd),
        "overall": np.tile(overall, n_c + 1), "ratio": block(ratio, 1.0),
        "ratio_ci_low": block(r_low, np.nan), "ratio_ci_high": block(r_high, np.nan),
        "z": block(z, 0.0), "z_perm": block(z_perm, np.nan),
        "p": block(p_mc, np.nan), "p_adj": block(p_adj, np.nan), "p_norm": block(p_norm, np.nan),
        "p_norm_adj": block(p_norm_adj, np.nan),
        "significant": block(p_adj < alpha, False),
        "rank_mean": block(rank_mean.reshape(n_c, lk), overall_rank.ravel()),
        "rank_mean_ci_low": block(np.asarray(rk_low).reshape(n_c, lk), np.nan),
        "rank_mean_ci_high": block(np.asarray(rk_high).reshape(n_c, lk), np.nan),
        "rank_ratio": block(rank_ratio.reshape(n_c, lk), np.nan),
        "n_tokens": block(per_category(n_cat.astype(np.int64)), int(n_total)),
        "n_docs": block(per_category(np.asarray(n_docs_cat, dtype=np.int64)), int((acc.doc_n_total > 0).sum())),
    })

    spec_low, spec_high = _interval(boot_spec_excess)
    spec_rows = []
    for ci, cat in enumerate(acc.categories):
        for li, layer in enumerate(acc.layers):
            spec_rows.append({
                "model": name, "layer": layer, "category": cat,
                "spec": spec_val[ci, li], "spec_null": spec_null[ci, li],
                "spec_excess": spec_excess[ci, li],
                "excess_ci_low": spec_low[ci, li], "excess_ci_high": spec_high[ci, li],
                "spec_p": spec_p[ci, li],
                "spec_component": f"e{spec_comp[ci, li]}" if present[ci] else None,
                "n_tokens": int(n_cat[ci]), "n_docs": int(n_docs_cat[ci]),
            })
    return ModelStats(
        name=name, layers=list(acc.layers), categories=list(acc.categories), n_components=n_k,
        table=table, spec=pd.DataFrame(spec_rows),
        mean=mean.reshape(shape4), overall=overall.reshape(n_l, n_k), ratio=ratio.reshape(shape4),
        n_tokens=n_cat, boot_mean=boot_mean.reshape(n_boot, *shape4),
        boot_overall=boot_overall.reshape(n_boot, n_l, n_k),
        boot_spec_excess=boot_spec_excess, spec_excess=spec_excess,
        rank_mean=rank_mean, rank_ci_low=np.asarray(rk_low).reshape(shape4),
        rank_ci_high=np.asarray(rk_high).reshape(shape4), p_adj=p_adj.reshape(shape4), boot_ranks=boot_ranks,
    )


def compare_with_control(probe: ModelStats, control: ModelStats) -> pd.DataFrame:
    """Paired bootstrap difference of spec_excess (probe - control) per (layer, category): rows
    category-major, then layer; every (category, layer) cell gathered at once (the values of one row
    per cell)."""
    columns = ["control", "layer", "category", "probe_spec_excess", "control_spec_excess", "diff", "diff_ci_low",
               "diff_ci_high", "exceeds_control", "n_tokens_probe", "n_tokens_control"]
    shared_layers = [layer for layer in probe.layers if layer in control.layers]
    cats = [cat for cat in probe.categories if cat in control.categories]
    if not cats or not shared_layers:
        return pd.DataFrame([], columns=None)
    n_layers = len(shared_layers)
    cp = np.repeat([probe.categories.index(cat) for cat in cats], n_layers)
    cc = np.repeat([control.categories.index(cat) for cat in cats], n_layers)
    lp = np.tile([probe.layers.index(layer) for layer in shared_layers], len(cats))
    lc = np.tile([control.layers.index(layer) for layer in shared_layers], len(cats))
    probe_excess, control_excess = probe.spec_excess[cp, lp], control.spec_excess[cc, lc]
    bounds = _column_intervals(probe.boot_spec_excess[:, cp, lp] - control.boot_spec_excess[:, cc, lc])
    low = np.asarray([b[0] for b in bounds], dtype=np.float64)
    return pd.DataFrame({
        "control": [control.name] * len(cp), "layer": shared_layers * len(cats),
        "category": [cat for cat in cats for _ in shared_layers],
        "probe_spec_excess": probe_excess, "control_spec_excess": control_excess,
        "diff": probe_excess - control_excess, "diff_ci_low": low,
        "diff_ci_high": np.asarray([b[1] for b in bounds], dtype=np.float64),
        "exceeds_control": np.isfinite(low) & (low > 0),
        "n_tokens_probe": [int(n) for n in probe.n_tokens[cp]],
        "n_tokens_control": [int(n) for n in control.n_tokens[cc]],
    }, columns=columns)


def _fmt_components(comps: Sequence[int]) -> str:
    return " ".join(f"e{c}" for c in comps)


def claims_table(
    stats: ModelStats, claims: Mapping[str, Sequence[int]] = ORIGINAL_CLAIM, top: int = 3
) -> pd.DataFrame:
    """Claimed top components per category vs measured, per layer, with bootstrap support.

    By mean magnitude (the reading in which "e0 is always most active" is meant):
    `p_boot_ordered` / `p_boot_set` = share of document resamples whose top-3 equals the claim in
    order / as a set; `verdict` = supported (measured == claimed and p_boot_ordered >= 0.95),
    refuted (p_boot_ordered <= 0.05 AND some claimed component's 95% bootstrap rank interval lies
    wholly outside the claimed positions, i.e. its lower rank bound > 3: the data say confidently
    that it is not in the top 3; a rare exact ordering alone is not evidence against the claim when
    the components are indistinguishable), else uncertain. `same_as_overall` flags a top-3 that merely
    repeats the ranking over all tokens (component scale, not category). By ratio (relative
    activation) the measured top-3 comes with the claimed components' ratios and p_adj.
    A last row per layer tests "e0 is the most active component in every category".
    """
    return pd.DataFrame(_claims_rows(stats, claims, top))


def _claims_rows(
    stats: ModelStats, claims: Mapping[str, Sequence[int]], top: int, layers: Sequence[int] | None = None
) -> list[dict]:
    """The rows of claims_table (one dict per row), only at `layers` (None: every layer)."""
    rows = []
    n_k = stats.n_components
    order = stats.boot_ranks if stats.boot_ranks is not None else _boot_ranks(stats.boot_mean)  # (K, B, C, L)
    holds = ~_any_nan_last(stats.boot_mean)  # (B, C, L): resamples holding the category
    shares: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # category: (p_boot_ordered, p_boot_set) per layer
    for cat, claimed in claims.items():
        if cat in stats.categories and max(claimed) < n_k:
            # a resample's top-`top` (stable descending order) is the claim in order when the claimed
            # components hold ranks 1..top, and as a set when all their ranks are <= top
            ci = stats.categories.index(cat)
            claimed_ranks = order[list(claimed[:top]), :, ci, :]  # (top, B, L)
            valid = holds[:, ci, :]
            n_valid = valid.sum(axis=0)
            in_order = (claimed_ranks == np.arange(1, len(claimed[:top]) + 1)[:, None, None]).all(axis=0) & valid
            in_set = (claimed_ranks <= top).all(axis=0) & valid
            with np.errstate(invalid="ignore", divide="ignore"):
                shares[cat] = (np.where(n_valid > 0, in_order.sum(axis=0) / n_valid, np.nan),
                               np.where(n_valid > 0, in_set.sum(axis=0) / n_valid, np.nan))
    for li, layer in enumerate(stats.layers):
        if layers is not None and layer not in layers:
            continue
        overall_top = list(np.argsort(-stats.overall[li], kind="stable")[:top])
        for cat, claimed in claims.items():
            base = {"layer": layer, "category": cat, "claimed": _fmt_components(claimed)}
            if cat not in stats.categories or max(claimed) >= n_k:
                rows.append({**base, "verdict": "not testable",
                             "note": "category absent" if cat not in stats.categories else f"model has {n_k} components"})
                continue
            ci = stats.categories.index(cat)
            if stats.n_tokens[ci] == 0:
                rows.append({**base, "verdict": "not testable", "note": "no tokens of this category"})
                continue
            means = stats.mean[ci, li]
            measured = list(np.argsort(-means, kind="stable")[:top])
            p_ordered, p_set = float(shares[cat][0][li]), float(shares[cat][1][li])
            rk, rk_lo, rk_hi = stats.rank_mean[ci, li], stats.rank_ci_low[ci, li], stats.rank_ci_high[ci, li]
            ranks = [f"{int(rk[c])} [{int(rk_lo[c])}-{int(rk_hi[c])}]" if np.isfinite(rk_lo[c]) else str(int(rk[c]))
                     for c in claimed]
            ratios = stats.ratio[ci, li]
            by_ratio = list(np.argsort(-np.nan_to_num(ratios, nan=-np.inf), kind="stable")[:top])
            confidently_out = [c for c in claimed[:top] if np.isfinite(rk_lo[c]) and rk_lo[c] > top]
            if measured == list(claimed[:top]) and p_ordered >= 0.95:
                verdict = "supported"
            elif p_ordered <= 0.05 and confidently_out:
                verdict = "refuted"
            else:
                verdict = "uncertain"
            rows.append({
                **base,
                "measured_by_mean": _fmt_components(measured),
                "p_boot_ordered": p_ordered, "p_boot_set": p_set,
                "claimed_rank_mean_ci": ", ".join(ranks),
                "overall_top": _fmt_components(overall_top),
                "same_as_overall": measured == overall_top,
                "measured_by_ratio": _fmt_components(by_ratio),
                "claimed_ratio": ", ".join(f"{ratios[c]:.3f}" for c in claimed),
                "claimed_p_adj": ", ".join(f"{stats.p_adj[ci, li, c]:.3g}" for c in claimed),
                "n_tokens": int(stats.n_tokens[ci]),
                "verdict": verdict, "note": "",
            })
        # "e0 is always most active": top by mean in every present category
        present = [ci for ci in range(len(stats.categories)) if stats.n_tokens[ci] > 0]
        if present:
            top_is_e0 = [int(np.argmax(stats.mean[ci, li])) == 0 for ci in present]
            # only resamples that hold every present category can say "e0 first in every category";
            # e0 is the argmax (first maximum) exactly when its rank is 1
            valid_all = holds[:, present, li].all(axis=1)
            e0_first = order[0, :, present, li] == 1  # (C', B)
            share_boot = float(e0_first[:, valid_all].all(axis=0).mean()) if valid_all.any() else np.nan
            all_e0 = all(top_is_e0)
            # refuted only where, in some category, e0's rank interval excludes first place
            e0_low = stats.rank_ci_low[present, li, 0]
            e0_confidently_not_first = bool((e0_low[np.isfinite(e0_low)] > 1).any())
            rows.append({
                "layer": layer, "category": "(every category)", "claimed": "e0 first",
                "measured_by_mean": f"e0 first in {sum(top_is_e0)}/{len(present)} categories",
                "p_boot_ordered": share_boot, "p_boot_set": np.nan,
                "overall_top": _fmt_components(overall_top),
                "verdict": "supported" if all_e0 and share_boot >= 0.95 else
                           ("refuted" if share_boot <= 0.05 and e0_confidently_not_first else "uncertain"),
                "note": "p_boot_ordered = share of resamples with e0 first in every category; refuted needs "
                        "a category whose 95% rank interval for e0 excludes first place",
            })
    return rows


# --- claims across models ------------------------------------------------------------------------

VERDICTS = ("supported", "refuted", "not_distinguishable_from_control", "uncertain", "not testable")
CLAIM_RULE = (
    "verdict (probed model only; control rows say 'control'): 'uncertain' when fewer than min_docs "
    "documents were analysed, or fewer than min_docs documents hold the category, or no control was run, "
    "or the within-model verdict is 'uncertain'. Otherwise the claim score S (below) is compared between "
    "the probed model and every control with the paired document bootstrap: for each control c, "
    "d_c = S_probe - S_c with its 95% percentile interval; the margin of c is the interval's bound "
    "nearest 0 (0 if the interval holds 0); the control spread is the largest upper 95% bound of "
    "|S_ci - S_cj| over pairs of controls (0 with one control). In addition S_probe must lie outside the "
    "controls' 95% prediction interval mean(S_c) +- t(0.975, K-1) * sd(S_c) * sqrt(1 + 1/K) over the K "
    "controls (K >= 2 needed, else 'uncertain'): the probed model must not look like one more draw of its "
    "controls. 'supported' needs the within-model verdict 'supported', every d_c > 0 (interval above 0), "
    "every margin > the control spread and S_probe outside the prediction interval; 'refuted' needs the "
    "within-model verdict 'refuted', every d_c < 0 (interval below 0), every margin > the control spread "
    "and S_probe outside the prediction interval; anything else is 'not_distinguishable_from_control': the "
    "probed model does not differ from its controls by more than the controls differ from each other."
)
CLAIM_SCORE = (
    "claim score S: for a category claim, the mean over the claimed components of the category's mean "
    "value minus the mean over the other components, divided by the layer's average component value over "
    "all tokens (positive = the claimed components lead); for 'e0 first', the mean over present "
    "categories of (e0's mean - the largest other component's mean), divided likewise"
)


def _claim_scores(stats: ModelStats, layer: int, claimed: Sequence[int] | None, cat: str | None) -> tuple[float, np.ndarray]:
    """(S, bootstrap draws of S) of one claim on one model (see CLAIM_SCORE); the claim's scores at
    every layer are computed together, once per model."""
    key = (cat, None if claimed is None else tuple(claimed))
    if key not in stats.claim_draws:
        stats.claim_draws[key] = _claim_scores_by_layer(stats, claimed, cat)
    points, draws = stats.claim_draws[key]
    li = stats.layers.index(layer)
    return float(points[li]), draws[:, li]


def _claim_scores_by_layer(
    stats: ModelStats, claimed: Sequence[int] | None, cat: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """(S (L,), draws (B, L)) of one claim at every layer: per layer the values of the per-layer
    formula (the same reductions, each over a contiguous last axis)."""
    if stats.claim_scale is None:  # the same for every claim of the model: computed once
        stats.claim_scale = (np.nanmean(stats.overall, axis=1),  # (L,): the layer's average component value
                             np.nanmean(stats.boot_overall, axis=2))  # (B, L)
    scale, boot_scale = stats.claim_scale
    k = stats.n_components
    if claimed is not None and cat is not None:
        ci = stats.categories.index(cat)
        mask = np.zeros(k, dtype=bool)
        mask[list(claimed)] = True

        def score(means: np.ndarray) -> np.ndarray:
            return means[..., mask].mean(axis=-1) - means[..., ~mask].mean(axis=-1)

        return score(stats.mean[ci]) / scale, score(stats.boot_mean[:, ci].astype(np.float64)) / boot_scale
    present = [ci for ci in range(len(stats.categories)) if stats.n_tokens[ci] > 0]

    def lead(means: np.ndarray) -> np.ndarray:  # (..., C', K)
        return (means[..., 0] - _max_last(means[..., 1:])).mean(axis=-1)

    point = lead(np.ascontiguousarray(np.moveaxis(stats.mean[present], 1, 0))) / scale  # (L, C', K) -> (L,)
    # the draws: lead() of the float64 (B, L, C', K) means, with e0 and the largest other component taken
    # in float32 (a cast keeps order and NaN) and only those two (B, L, C') arrays cast, laid out as there
    boot = stats.boot_mean if len(present) == len(stats.categories) else stats.boot_mean[:, present]  # (B, C', L, K)

    def as_blc(values: np.ndarray) -> np.ndarray:  # (B, C', L) float32 -> contiguous (B, L, C') float64
        return np.ascontiguousarray(np.moveaxis(values, 2, 1), dtype=np.float64)

    draws = (as_blc(boot[..., 0]) - as_blc(_max_last(boot[..., 1:]))).mean(axis=-1)
    return point, draws / boot_scale


def claims_across_models(
    stats: Mapping[str, ModelStats],
    probe_name: str,
    claims: Mapping[str, Sequence[int]] = ORIGINAL_CLAIM,
    *,
    n_docs: int,
    min_docs: int,
    n_docs_by_category: Mapping[str, int] | None = None,
    exclude_layers: Sequence[int] = (0,),
    top: int = 3,
) -> pd.DataFrame:
    """The claims tested on every model (one block of rows per model, a `model` column), with the
    within-model verdict of `claims_table` as `verdict_within_model`, the claim score S with its
    bootstrap interval, and for the probed model the verdict against the controls (CLAIM_RULE).

    Built from `_claims_rows` (claims_table's rows, only at the layers kept) and one DataFrame per
    model: the columns, order and dtypes of claims_table's frame filtered to those layers, with
    `model` and `role` in front and the claim-score columns at the end."""
    probe = stats[probe_name]
    controls = [s for name, s in stats.items() if name != probe_name and s.n_components == probe.n_components]
    layers = [layer for layer in probe.layers if layer not in exclude_layers]
    per_model: dict[str, tuple[list[dict], list[str]]] = {}
    draws: dict[tuple[str, int, str], np.ndarray] = {}
    points: dict[tuple[str, int, str], float] = {}
    for name, st in stats.items():
        if st.n_components != probe.n_components:
            continue
        role = "probed" if name == probe_name else "control"
        records: list[dict] = []
        pending: list[tuple[dict, np.ndarray]] = []  # (record, draws) whose interval is computed after the loop
        for row in _claims_rows(st, claims, top, layers=layers):
            record = {"model": name, "role": role}
            record.update(("verdict_within_model" if k == "verdict" else k, v) for k, v in row.items())
            records.append(record)
            if record["verdict_within_model"] == "not testable" or row["layer"] not in st.layers:
                record["claim_score"] = record["claim_score_ci_low"] = record["claim_score_ci_high"] = np.nan
                continue
            cat = None if row["category"] == "(every category)" else row["category"]
            claimed = claims[cat][:top] if cat is not None else None
            point, boot = _claim_scores(st, int(row["layer"]), claimed, cat)
            draws[(name, int(row["layer"]), row["category"])] = boot
            points[(name, int(row["layer"]), row["category"])] = point
            record["claim_score"] = point
            pending.append((record, boot))
        for (record, _), (low, high) in zip(pending, _intervals1([b for _, b in pending]), strict=True):
            record["claim_score_ci_low"], record["claim_score_ci_high"] = low, high
        columns = list(dict.fromkeys(k for r in records for k in r if not k.startswith("claim_score")))
        per_model[name] = records, [*columns, "claim_score", "claim_score_ci_low", "claim_score_ci_high"]
    probe_records, probe_columns = per_model[probe_name]
    control_names = [c.name for c in controls]
    keys = [(int(r["layer"]), r["category"]) for r in probe_records]
    bounds = _comparison_bounds([k for k in keys if (probe_name, *k) in draws], probe_name, control_names, draws)
    for record, key in zip(probe_records, keys, strict=True):
        verdict, note, spread, margin, diff_txt = _compare_claim(
            record["verdict_within_model"], key, probe_name, control_names, draws, points,
            n_docs=n_docs, min_docs=min_docs, n_docs_category=(n_docs_by_category or {}).get(record["category"]),
            bounds=bounds)
        record.update(verdict=verdict, control_spread=spread, min_margin=margin, diff_vs_controls=diff_txt,
                      rule_note=note)
    extra = ["verdict", "control_spread", "min_margin", "diff_vs_controls", "rule_note"]
    frames = [pd.DataFrame(probe_records, columns=[*probe_columns, *extra])]
    for name, (records, columns) in per_model.items():
        if name != probe_name:
            for record in records:
                record["verdict"] = "control"
            frames.append(pd.DataFrame(records, columns=[*columns, "verdict"]))
    return pd.concat(frames, ignore_index=True)


@functools.lru_cache(maxsize=64)
def _t975(df: int) -> float:
    """sps.t.ppf(0.975, df), once per df (scipy's ppf costs ~0.1 ms a call; every claim row asks)."""
    return sps.t.ppf(0.975, df)


def _gap_bound(gap: np.ndarray) -> float | None:
    """97.5th percentile of the finite entries of |S_ci - S_cj|'s draws (None: no finite draw)."""
    finite = gap[np.isfinite(gap)]
    return float(np.percentile(finite, 97.5)) if len(finite) else None


def _comparison_bounds(
    keys: Sequence[tuple[int, str]], probe_name: str, control_names: Sequence[str],
    draws: Mapping[tuple[str, int, str], np.ndarray],
) -> dict[tuple, object]:
    """The percentiles _compare_claim needs for every claim row at once: per (control, layer, category)
    the 95% interval of the paired difference S_probe - S_c (`_interval1`), per (control a, control b,
    layer, category) the upper bound `_gap_bound` of |S_a - S_b|. One np.percentile call over the
    columns whose draws are all finite (the same order statistics and interpolation per column as one
    call each, as in `_intervals1`) instead of about 6 calls per row."""
    diff_keys, diffs = [], []
    gap_keys, gaps = [], []
    for layer, cat in keys:
        p_draws = draws[(probe_name, layer, cat)]
        available = [c for c in control_names if (c, layer, cat) in draws]
        for c in available:
            diff_keys.append(("diff", c, layer, cat))
            diffs.append(p_draws - draws[(c, layer, cat)])
        for i, a in enumerate(available):
            for b in available[i + 1 :]:
                gap_keys.append(("gap", a, b, layer, cat))
                gaps.append(np.abs(draws[(a, layer, cat)] - draws[(b, layer, cat)]))
    out: dict[tuple, object] = dict(zip(diff_keys, _intervals1(diffs), strict=True))
    if gaps and len({len(g) for g in gaps}) == 1 and len(gaps[0]):
        stacked = np.stack(gaps, axis=1)  # (B, M)
        clean = np.isfinite(stacked).all(axis=0)
        upper = np.percentile(stacked[:, clean], 97.5, axis=0) if clean.any() else []
        values: list[float | None] = [None] * len(gaps)
        for i, value in zip(np.flatnonzero(clean), upper, strict=True):
            values[i] = float(value)
        for i in np.flatnonzero(~clean):
            values[i] = _gap_bound(stacked[:, i])
    else:
        values = [_gap_bound(g) for g in gaps]
    out.update(zip(gap_keys, values, strict=True))
    return out


def _compare_claim(
    own: str, key: tuple[int, str], probe_name: str, control_names: Sequence[str],
    draws: Mapping[tuple[str, int, str], np.ndarray], points: Mapping[tuple[str, int, str], float],
    *, n_docs: int, min_docs: int, n_docs_category: int | None, bounds: Mapping[tuple, object] | None = None,
) -> tuple[str, str, float, float, str]:
    """The probed model's verdict on one claim row (CLAIM_RULE). `bounds`: the percentiles from
    `_comparison_bounds` (computed here when absent)."""
    layer, cat = key
    if own == "not testable":
        return own, "", np.nan, np.nan, ""
    if n_docs < min_docs:
        return "uncertain", f"only {n_docs} documents (< min_docs {min_docs}): no verdict", np.nan, np.nan, ""
    if n_docs_category is not None and n_docs_category < min_docs:
        return "uncertain", f"category in only {n_docs_category} documents (< min_docs {min_docs})", np.nan, np.nan, ""
    available = [c for c in control_names if (c, layer, cat) in draws]
    if not available:
        return "uncertain", "no control has this layer: nothing to compare with", np.nan, np.nan, ""
    p_point = points[(probe_name, layer, cat)]
    signs, margins, texts = [], [], []
    if bounds is None:
        bounds = _comparison_bounds([key], probe_name, control_names, draws)
    for c in available:
        c_point = points[(c, layer, cat)]
        low, high = bounds[("diff", c, layer, cat)]  # type: ignore[misc]
        sign = 1 if low > 0 else (-1 if high < 0 else 0)
        signs.append(sign)
        margins.append(low if sign > 0 else (-high if sign < 0 else 0.0))
        texts.append(f"{c}: {p_point - c_point:+.4f} [{low:+.4f}, {high:+.4f}]")
    spread = 0.0
    for i, a in enumerate(available):
        for b in available[i + 1 :]:
            bound = bounds[("gap", a, b, layer, cat)]
            if bound is not None:
                spread = max(spread, bound)  # type: ignore[call-overload]
    margin = float(min(margins))
    c_points = np.array([points[(c, layer, cat)] for c in available], dtype=float)
    c_points = c_points[np.isfinite(c_points)]
    if own != "uncertain" and len(c_points) < 2:
        return ("uncertain", "fewer than 2 controls: their spread (the prediction interval) cannot be estimated",
                spread, margin, "; ".join(texts))
    k = len(c_points)
    halfwidth = float(_t975(k - 1) * np.std(c_points, ddof=1) * np.sqrt(1 + 1 / k)) if k >= 2 else np.nan
    outside = bool(abs(p_point - float(np.mean(c_points))) > halfwidth) if k >= 2 else False
    texts.append(f"controls' 95% prediction interval {float(np.mean(c_points)) if k else np.nan:+.4f} +- {halfwidth:.4f}")
    beyond = margin > spread and outside
    if own == "uncertain":
        return "uncertain", "within-model verdict uncertain", spread, margin, "; ".join(texts)
    if own == "supported" and all(s > 0 for s in signs) and beyond:
        return "supported", "", spread, margin, "; ".join(texts)
    if own == "refuted" and all(s < 0 for s in signs) and beyond:
        return "refuted", "", spread, margin, "; ".join(texts)
    return ("not_distinguishable_from_control",
            f"within-model verdict {own}, but the probed model does not differ from every control by more than "
            "the controls differ from each other", spread, margin, "; ".join(texts))

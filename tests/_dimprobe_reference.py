"""Reference implementations for tests/test_dimprobe_perf.py: verbatim copies of the dim-probe code
before the issue 14 item 7 speed-ups (git commit 00e9c6f: statistics, claim scores, top components,
the permutation plan and the accumulator; claims_table as of cd2be71), so the test can check that the
optimised path computes the same numbers, to its stated tolerance, in the same process (a stored
golden file would differ across CPUs through their BLAS kernels).

Only the definitions that changed are here; they call the module's unchanged helpers."""

# ruff: noqa: E501

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats as sps

from evalsuite.dimprobe.collect import Accumulated, _partial_permutations
from evalsuite.dimprobe.stats import (
    ALL,
    ORIGINAL_CLAIM,
    ModelStats,
    _compare_claim,
    _fmt_components,
    _intervals1,
    _rank_interval,
    _ranks_desc,
    adjust_pvalues,
)


def _interval(draws: np.ndarray, low: float = 2.5, high: float = 97.5) -> tuple[np.ndarray, np.ndarray]:
    """(_percentile(draws, low), _percentile(draws, high)) from one sort (a partial sort around the
    four order statistics needed when no draw is NaN, the usual case)."""
    n = draws.shape[0]
    if n > 1 and not np.isnan(draws).any():
        out = []
        kth = sorted({int(np.floor(q / 100.0 * (n - 1))) for q in (low, high)}
                     | {min(int(np.floor(q / 100.0 * (n - 1))) + 1, n - 1) for q in (low, high)})
        part = np.partition(draws, kth, axis=0)
        for q in (low, high):
            pos = q / 100.0 * (n - 1)
            lo = int(np.floor(pos))
            hi = min(lo + 1, n - 1)
            out.append(part[lo] + (part[hi] - part[lo]) * (pos - lo))
        return out[0], out[1]
    ordered = np.sort(draws, axis=0)
    valid = (~np.isnan(draws)).sum(axis=0)
    out = []
    for q in (low, high):
        pos = q / 100.0 * np.maximum(valid - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(valid - 1, 0))
        lo_val = np.take_along_axis(ordered, lo[None], axis=0)[0]
        hi_val = np.take_along_axis(ordered, hi[None], axis=0)[0]
        with np.errstate(invalid="ignore"):
            value = lo_val + (hi_val - lo_val) * (pos - lo)
        out.append(np.where(valid > 0, value, np.nan))
    return out[0], out[1]


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
        perm_dev = np.abs(acc.perm_sum - mu0[:, None, :] * acc.perm_n[:, :, None])  # (C, P, LK)
        exceed = (perm_dev >= (np.abs(dev) - tol)[:, None, :]).sum(axis=1)
        p_mc = (1.0 + exceed) / (n_perm + 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            perm_ratio = acc.perm_sum / acc.perm_n[:, :, None] / overall[None, None, :]
        perm_spec = np.abs(perm_ratio - 1.0).reshape(n_c, n_perm, n_l, n_k).max(axis=-1)  # (C, P, L)
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
            boot_mean[a : a + chunk] = ((w @ flat_cat).reshape(-1, n_c, lk) / nc_b[:, :, None]).astype(np.float32)
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
        boot_mean4 = boot_mean.reshape(n_boot, *shape4).astype(np.float64)
        # a resample without the category's tokens has no ranking: leave it out (ranking its NaN
        # means would hand out ranks 1..K in component order, e.g. rank 1 to e0)
        boot_rank = np.where(np.isnan(boot_mean4).all(axis=-1, keepdims=True), np.nan, _ranks_desc(boot_mean4))
        rk_low, rk_high = _rank_interval(boot_rank, n_k)
    else:
        rk_low = rk_high = np.full(shape4, np.nan)

    # specialisation
    spec = np.abs(ratio.reshape(shape4) - 1.0)
    spec_comp = np.argmax(np.where(np.isnan(spec), -np.inf, spec), axis=-1)  # (C, L)
    spec_val = np.nanmax(np.where(np.isnan(spec), -np.inf, spec), axis=-1)
    spec_val[~present] = np.nan
    boot_spec = np.abs(boot_ratio.reshape(n_boot, *shape4) - 1.0)
    with np.errstate(invalid="ignore"):
        boot_spec = np.where(np.isnan(boot_spec).all(axis=-1), np.nan,
                             np.nanmax(np.where(np.isnan(boot_spec), -np.inf, boot_spec), axis=-1))
    if acc.perm_sum is not None and acc.perm_sum.shape[1] > 0:
        spec_p = (1.0 + (np.nan_to_num(perm_spec, nan=np.inf) >= (spec_val - 1e-9)[:, None, :]).sum(axis=1)) \
            / (n_perm + 1.0)
        spec_p[~present] = np.nan
    null_for_excess = np.nan_to_num(spec_null, nan=0.0)
    spec_excess = spec_val - null_for_excess
    boot_spec_excess = boot_spec - null_for_excess[None]

    # tidy tables
    layer_idx, comp_idx = np.divmod(np.arange(lk), n_k)
    rows = []
    for ci, cat in enumerate(acc.categories):
        rows.append(pd.DataFrame({
            "model": name,
            "layer": np.asarray(acc.layers)[layer_idx],
            "component": [f"e{k}" for k in comp_idx],
            "category": cat,
            "mean": mean[ci], "ci_low": ci_low[ci], "ci_high": ci_high[ci],
            "sd": cat_sd[ci],
            "overall": overall, "ratio": ratio[ci], "ratio_ci_low": r_low[ci], "ratio_ci_high": r_high[ci],
            "z": z[ci], "z_perm": z_perm[ci],
            "p": p_mc[ci], "p_adj": p_adj[ci], "p_norm": p_norm[ci], "p_norm_adj": p_norm_adj[ci],
            "significant": p_adj[ci] < alpha,
            "rank_mean": rank_mean[ci].ravel(), "rank_mean_ci_low": rk_low[ci].ravel(),
            "rank_mean_ci_high": rk_high[ci].ravel(), "rank_ratio": rank_ratio[ci].ravel(),
            "n_tokens": int(n_cat[ci]), "n_docs": int(n_docs_cat[ci]),
        }))
    overall_rank = _ranks_desc(overall.reshape(n_l, n_k))
    rows.append(pd.DataFrame({
        "model": name, "layer": np.asarray(acc.layers)[layer_idx], "component": [f"e{k}" for k in comp_idx],
        "category": ALL, "mean": overall, "ci_low": all_low, "ci_high": all_high, "sd": sd,
        "overall": overall, "ratio": 1.0, "ratio_ci_low": np.nan, "ratio_ci_high": np.nan,
        "z": 0.0, "z_perm": np.nan, "p": np.nan, "p_adj": np.nan, "p_norm": np.nan, "p_norm_adj": np.nan,
        "significant": False, "rank_mean": overall_rank.ravel(), "rank_mean_ci_low": np.nan,
        "rank_mean_ci_high": np.nan, "rank_ratio": np.nan,
        "n_tokens": int(n_total), "n_docs": int((acc.doc_n_total > 0).sum()),
    }))
    table = pd.concat(rows, ignore_index=True)

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
        rank_ci_high=np.asarray(rk_high).reshape(shape4), p_adj=p_adj.reshape(shape4),
    )


def _claim_scores(stats: ModelStats, layer: int, claimed: Sequence[int] | None, cat: str | None) -> tuple[float, np.ndarray]:
    """(S, bootstrap draws of S) of one claim on one model (see CLAIM_SCORE)."""
    li = stats.layers.index(layer)
    scale = float(np.nanmean(stats.overall[li]))
    boot_scale = np.nanmean(stats.boot_overall[:, li, :], axis=1)
    k = stats.n_components
    if claimed is not None and cat is not None:
        ci = stats.categories.index(cat)
        mask = np.zeros(k, dtype=bool)
        mask[list(claimed)] = True

        def score(means: np.ndarray) -> np.ndarray:
            return means[..., mask].mean(axis=-1) - means[..., ~mask].mean(axis=-1)

        point = float(score(stats.mean[ci, li])) / scale
        draws = score(stats.boot_mean[:, ci, li, :].astype(np.float64)) / boot_scale
        return point, draws
    present = [ci for ci in range(len(stats.categories)) if stats.n_tokens[ci] > 0]

    def lead(means: np.ndarray) -> np.ndarray:  # (..., C', K)
        return (means[..., 0] - means[..., 1:].max(axis=-1)).mean(axis=-1)

    point = float(lead(stats.mean[present, li])) / scale
    draws = lead(stats.boot_mean[:, present, li, :].astype(np.float64)) / boot_scale
    return point, draws


def top_components(table: pd.DataFrame, top: int = 3, alpha: float = 0.05) -> pd.DataFrame:
    """Per (model, layer, category): the top components by mean and by ratio, with p_adj."""
    keys = ["model", "layer", "category"]
    cats = table[(table["category"] != ALL) & (table["n_tokens"] > 0)]
    if cats.empty:
        return pd.DataFrame()
    by_mean = cats.sort_values([*keys, "mean"], ascending=[True, True, True, False]).groupby(keys, sort=False).head(top)
    by_ratio = cats.sort_values([*keys, "ratio"], ascending=[True, True, True, False]).groupby(keys, sort=False).head(top)
    fmt = by_ratio.assign(r=by_ratio["ratio"].map("{:.3f}".format), q=by_ratio["p_adj"].map("{:.2g}".format))
    sig = cats.assign(up=(cats["p_adj"] < alpha) & (cats["ratio"] > 1), down=(cats["p_adj"] < alpha) & (cats["ratio"] < 1))
    out = pd.concat([
        cats.groupby(keys, sort=False)["n_tokens"].first(),
        by_mean.groupby(keys, sort=False)["component"].agg(" ".join).rename("top_by_mean"),
        fmt.groupby(keys, sort=False)["component"].agg(" ".join).rename("top_by_ratio"),
        fmt.groupby(keys, sort=False)["r"].agg(" ".join).rename("top_ratios"),
        fmt.groupby(keys, sort=False)["q"].agg(" ".join).rename("top_p_adj"),
        sig.groupby(keys, sort=False)["up"].sum().rename("n_significant_up"),
        sig.groupby(keys, sort=False)["down"].sum().rename("n_significant_down"),
    ], axis=1).reset_index()
    return out


# stats.claims_table before the statistics used the bootstrap ranks (commit cd2be71)
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
    rows = []
    n_k = stats.n_components
    for li, layer in enumerate(stats.layers):
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
            boot = stats.boot_mean[:, ci, li, :].astype(np.float64)
            valid = ~np.isnan(boot).any(axis=1)
            boot_top = np.argsort(-boot[valid], axis=1, kind="stable")[:, :top]
            claimed_arr = np.asarray(claimed[:top])
            p_ordered = float((boot_top == claimed_arr).all(axis=1).mean()) if valid.any() else np.nan
            p_set = float((np.sort(boot_top, axis=1) == np.sort(claimed_arr)).all(axis=1).mean()) if valid.any() else np.nan
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
            boot = stats.boot_mean[:, present, li, :].astype(np.float64)
            # only resamples that hold every present category can say "e0 first in every category"
            valid_all = ~np.isnan(boot).any(axis=(1, 2))
            boot_all = boot[valid_all].argmax(axis=-1) == 0  # (B', C')
            share_boot = float(boot_all.all(axis=1).mean()) if valid_all.any() else np.nan
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
    return pd.DataFrame(rows)


# --- collect.py of commit 00e9c6f: the plan (bags in replicate-major order) and the accumulator ---


@dataclass
class ReferencePlan:
    """Random word prefixes for one batch of documents (shared by every model with the same tokenizer).

    For document j: `cuts[j]` (sorted distinct subset sizes needed), `cat_cols[j]` (categories with
    0 < W < U words), `cat_cut[j]` (which cut each of those categories reads), `cat_complement[j]`
    (read total minus prefix), `full_cols[j]` (categories holding every word). `indices`/`offsets`
    feed one `embedding_bag` over the batch's concatenated unit rows."""

    n_permutations: int
    cuts: list[np.ndarray]
    cat_cols: list[np.ndarray]
    cat_cut: list[np.ndarray]
    cat_complement: list[np.ndarray]
    full_cols: list[np.ndarray]
    indices: torch.Tensor
    offsets: torch.Tensor
    out_rows: list[tuple[int, int]]  # per doc: (first segment within a replicate's R segments, count)



def plan_permutations(
    unit_labels: Sequence[np.ndarray], doc_indices: Sequence[int], n_permutations: int, seed: int
) -> ReferencePlan:
    """Draw the permutations of a batch of documents (`unit_labels[j]`: (U_j, C) word labels)."""
    p = n_permutations
    cuts_l, cols_l, cut_l, comp_l, full_l = [], [], [], [], []
    perm_parts: list[np.ndarray] = []  # (P, m_j) unit rows of document j's prefixes
    seg_parts: list[np.ndarray] = []  # segment starts of document j within one replicate's index run
    out_rows: list[tuple[int, int]] = []
    row, pos, out_row = 0, 0, 0
    for lab, doc_index in zip(unit_labels, doc_indices, strict=True):
        n_units = lab.shape[0]
        counts = lab.sum(axis=0)
        cols = np.flatnonzero((counts > 0) & (counts < n_units))
        need = np.minimum(counts[cols], n_units - counts[cols])
        cuts = np.unique(need)
        cuts_l.append(cuts)
        cols_l.append(cols)
        cut_l.append(np.searchsorted(cuts, need))
        comp_l.append(counts[cols] > n_units - counts[cols])
        full_l.append(np.flatnonzero((counts == n_units) & (n_units > 0)))
        if len(cuts):
            m = int(cuts[-1])
            rng = np.random.default_rng([seed, doc_index])
            perm_parts.append(_partial_permutations(rng, n_units, p, m) + row)
            seg_parts.append(pos + np.concatenate([[0], cuts[:-1]]))
            pos += m
            out_rows.append((out_row, len(cuts)))
            out_row += len(cuts)
        else:
            out_rows.append((out_row, 0))
        row += n_units
    # bags in (replicate, document, segment) order, so the embedding_bag output is (P, R, LK + 1)
    # with R = segments of the batch: one replicate's segments of every document are contiguous
    if perm_parts:
        indices = torch.from_numpy(np.concatenate(perm_parts, axis=1).ravel())
        seg_starts = np.concatenate(seg_parts)
        offsets = torch.from_numpy((np.arange(p, dtype=np.int64)[:, None] * pos + seg_starts[None, :]).ravel())
    else:
        indices = offsets = torch.zeros(0, dtype=torch.long)
    return ReferencePlan(p, cuts_l, cols_l, cut_l, comp_l, full_l, indices, offsets, out_rows)



def _unit_sums(values: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
    """(n_units, LK) sums of token rows per unit. Tokens of a word are consecutive, so unit ids
    arrive sorted and one reduceat does it; np.add.at covers anything else."""
    out = np.zeros((n_units, values.shape[1]))
    if len(unit) == 0:
        return out
    if np.all(np.diff(unit) >= 0):
        starts = np.flatnonzero(np.concatenate([[True], np.diff(unit) > 0]))
        out[unit[starts]] = np.add.reduceat(values, starts, axis=0)
    else:
        np.add.at(out, unit, values)
    return out



class ReferenceAccumulator:
    """collect.Accumulator of commit 00e9c6f."""

    def __init__(self, layers: Sequence[int], n_components: int, categories: Sequence[str], n_permutations: int):
        self.layers = list(layers)
        self.k = n_components
        self.categories = list(categories)
        self.c = len(self.categories)
        self.lk = len(self.layers) * n_components
        self.p = n_permutations
        self._doc: dict[str, list[Any]] = defaultdict(list)
        self.cat_sumsq = np.zeros((self.c, self.lk))
        self.perm_sum = np.zeros((self.c, self.p, self.lk)) if self.p else None
        self.perm_n = np.zeros((self.c, self.p)) if self.p else None

    def add_batch(
        self,
        doc_indices: Sequence[int],
        values: Sequence[np.ndarray],
        units: Sequence[np.ndarray],
        unit_labels: Sequence[np.ndarray],
        plan: ReferencePlan | None,
    ) -> None:
        """Document j: values[j] (N_j, L, K) magnitudes of its analysed tokens, units[j] (N_j,) the
        word unit of each token (-1 = none), unit_labels[j] (U_j, C)."""
        unit_rows = []
        for doc_index, v, unit, ulab in zip(doc_indices, values, units, unit_labels, strict=True):
            v64 = v.reshape(v.shape[0], self.lk).astype(np.float64)
            n_units = ulab.shape[0]
            aligned = unit >= 0
            unit_sum = _unit_sums(v64[aligned], unit[aligned], n_units)
            unit_n = np.bincount(unit[aligned], minlength=n_units).astype(np.float64)
            ulab_f = ulab.astype(np.float64)
            tok_lab = np.zeros((v.shape[0], self.c))
            tok_lab[aligned] = ulab_f[unit[aligned]]
            d = self._doc
            d["ids"].append(int(doc_index))
            d["n"].append(v.shape[0])
            d["n_cat"].append(tok_lab.sum(axis=0).astype(np.int64))
            d["sum"].append(v64.sum(axis=0))
            d["sumsq"].append(np.einsum("nl,nl->l", v64, v64))
            d["cat_sum"].append((ulab_f.T @ unit_sum).astype(np.float32))
            d["units"].append(n_units)
            d["units_cat"].append(ulab.sum(axis=0).astype(np.int64))
            d["unit_n"].append(unit_n.sum())
            d["unit_n2"].append((unit_n**2).sum())
            d["unit_sum"].append(unit_sum.sum(axis=0))
            d["unit_s2"].append(np.einsum("ul,ul->l", unit_sum, unit_sum))
            d["unit_sn"].append(unit_n @ unit_sum)
            self.cat_sumsq += tok_lab.T @ (v64 * v64)
            unit_rows.append(np.column_stack([unit_sum, unit_n]))
        if self.p and plan is not None:
            self._add_permutations(unit_rows, plan)

    def _add_permutations(self, unit_rows: Sequence[np.ndarray], plan: ReferencePlan) -> None:
        assert self.perm_sum is not None and self.perm_n is not None
        if plan.indices.numel():
            weight = torch.from_numpy(np.concatenate(unit_rows).astype(np.float32))
            seg = F.embedding_bag(plan.indices, weight, plan.offsets, mode="sum")  # (rows, LK + 1)
        else:
            seg = torch.zeros((0, self.lk + 1))
        # A category's permuted sum in document j is its prefix (the first `cut` segments summed) or
        # the total minus it (complement). Over the batch that is a signed (C, R) selection of the
        # segment sums, applied to all replicates in one batched matmul (no per-document prefix
        # sums or gathers); the totals (complements, categories holding every word) are float64 constants.
        const = np.zeros((self.c, self.lk + 1))
        n_segments = sum(n for _, n in plan.out_rows)
        select = np.zeros((self.c, n_segments), dtype=np.float32)
        for j, rows in enumerate(unit_rows):
            total = rows.sum(axis=0)  # (LK + 1,)
            full = plan.full_cols[j]
            if len(full):  # a category holding every word is constant under permutation
                const[full] += total[None, :]
            first, n_seg = plan.out_rows[j]
            if n_seg == 0:
                continue
            comp = plan.cat_complement[j]
            cols = plan.cat_cols[j]
            const[cols[comp]] += total[None, :]
            upto = (np.arange(n_seg)[None, :] <= plan.cat_cut[j][:, None]).astype(np.float32)
            np.add.at(select, (cols[:, None], first + np.arange(n_seg)[None, :]),
                      upto * np.where(comp, -1.0, 1.0).astype(np.float32)[:, None])
        if n_segments:
            seg = seg.view(self.p, n_segments, self.lk + 1)
            perm = torch.matmul(torch.from_numpy(select), seg).numpy()  # (P, C, LK + 1)
            self.perm_sum += perm[:, :, : self.lk].transpose(1, 0, 2)
            self.perm_n += perm[:, :, self.lk].T
        self.perm_sum += const[:, None, : self.lk]
        self.perm_n += const[:, None, self.lk]

    def finalize(self) -> Accumulated:
        d = self._doc
        n_docs = len(d["ids"])

        def stack(key: str, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
            return np.stack(d[key]).astype(dtype, copy=False) if n_docs else np.zeros((0, *shape), dtype=dtype)

        return Accumulated(
            layers=self.layers,
            n_components=self.k,
            categories=self.categories,
            doc_ids=np.asarray(d["ids"], dtype=np.int64),
            doc_n_total=np.asarray(d["n"], dtype=np.int64),
            doc_n_cat=stack("n_cat", (self.c,), np.int64),
            doc_sum=stack("sum", (self.lk,)),
            doc_sumsq=stack("sumsq", (self.lk,)),
            doc_cat_sum=stack("cat_sum", (self.c, self.lk), np.float32),
            cat_sumsq=self.cat_sumsq,
            doc_units=np.asarray(d["units"], dtype=np.int64),
            doc_units_cat=stack("units_cat", (self.c,), np.int64),
            doc_unit_n=np.asarray(d["unit_n"], dtype=np.float64),
            doc_unit_n2=np.asarray(d["unit_n2"], dtype=np.float64),
            doc_unit_sum=stack("unit_sum", (self.lk,)),
            doc_unit_s2=stack("unit_s2", (self.lk,)),
            doc_unit_sn=stack("unit_sn", (self.lk,)),
            perm_sum=self.perm_sum,
            perm_n=self.perm_n,
        )


# stats.claims_across_models of 3c08621 (before it built its rows without per-model DataFrames),
# with this module's claims_table and _claim_scores
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
    bootstrap interval, and for the probed model the verdict against the controls (CLAIM_RULE)."""
    probe = stats[probe_name]
    controls = [s for name, s in stats.items() if name != probe_name and s.n_components == probe.n_components]
    layers = [layer for layer in probe.layers if layer not in exclude_layers]
    per_model: dict[str, pd.DataFrame] = {}
    draws: dict[tuple[str, int, str], np.ndarray] = {}
    points: dict[tuple[str, int, str], float] = {}
    for name, st in stats.items():
        if st.n_components != probe.n_components:
            continue
        table = claims_table(st, claims, top=top)
        table = table[table["layer"].isin(layers)].reset_index(drop=True)
        table = table.rename(columns={"verdict": "verdict_within_model"})
        scores, lows, highs = [], [], []
        pending: list[tuple[int, np.ndarray]] = []  # (row, draws) whose interval is computed after the loop
        for row in table.to_dict("records"):  # plain dicts: iterrows builds a Series per row
            if row["verdict_within_model"] == "not testable" or row["layer"] not in st.layers:
                scores.append(np.nan), lows.append(np.nan), highs.append(np.nan)
                continue
            cat = None if row["category"] == "(every category)" else row["category"]
            claimed = claims[cat][:top] if cat is not None else None
            point, boot = _claim_scores(st, int(row["layer"]), claimed, cat)
            draws[(name, int(row["layer"]), row["category"])] = boot
            points[(name, int(row["layer"]), row["category"])] = point
            scores.append(point)
            lows.append(None), highs.append(None)
            pending.append((len(lows) - 1, boot))
        for (i, _), (low, high) in zip(pending, _intervals1([b for _, b in pending]), strict=True):
            lows[i], highs[i] = low, high
        table.insert(0, "model", name)
        table.insert(1, "role", "probed" if name == probe_name else "control")
        table["claim_score"], table["claim_score_ci_low"], table["claim_score_ci_high"] = scores, lows, highs
        per_model[name] = table
    probe_rows = per_model[probe_name]
    verdicts, notes, spreads, margins, diffs = [], [], [], [], []
    for row in probe_rows.to_dict("records"):
        key = (int(row["layer"]), row["category"])
        own = row["verdict_within_model"]
        verdict, note, spread, margin, diff_txt = _compare_claim(
            own, key, probe_name, [c.name for c in controls], draws, points,
            n_docs=n_docs, min_docs=min_docs, n_docs_category=(n_docs_by_category or {}).get(row["category"]))
        verdicts.append(verdict), notes.append(note), spreads.append(spread), margins.append(margin)
        diffs.append(diff_txt)
    probe_rows = probe_rows.assign(verdict=verdicts, control_spread=spreads, min_margin=margins,
                                   diff_vs_controls=diffs, rule_note=notes)
    rows = [probe_rows] + [t.assign(verdict="control") for n, t in per_model.items() if n != probe_name]
    return pd.concat(rows, ignore_index=True)

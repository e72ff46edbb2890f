"""Reference implementations for the bit-identity test of tests/test_dimprobe_perf.py
(`test_tables_are_bit_identical_to_main`): verbatim copies, from git commit e822e81 (main before the
controls pass of issue 14 item 7), of the dim-probe functions that pass changed. With them swapped in,
a probe run with the default controls must write exactly the same tables as with the package's code.

Only the definitions that changed are here; they call the module's unchanged helpers, and each other
through this module."""

# ruff: noqa: E501

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats as sps

from evalsuite.dimprobe.collect import Accumulated, PermutationPlan, _segment_sums
from evalsuite.dimprobe.stats import (
    ORIGINAL_CLAIM,
    ModelStats,
    _boot_ranks,
    _fmt_components,
    _interval1,
    _intervals1,
    _max_last,
)


def _boot_rank_interval(
    boot: np.ndarray, low: float = 2.5, high: float = 97.5, ranks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """_rank_interval(np.where(all-NaN row, NaN, _ranks_desc(boot)), K) for bootstrap draws
    boot (B, ..., K), with the ranks from pairwise comparisons (rank_i = 1 + #{j > i: v_j > v_i}
    + #{j < i: v_j >= v_i}, NaN as -inf: exactly the stable descending argsort's ranks; one
    comparison per pair), component-major so every comparison runs over one contiguous vector, and the
    cumulative counts per rank from one comparison and one count over the resamples per rank (int8
    ranks, int32 counts), instead of B x ... argsorts of K values."""
    n_boot, k = boot.shape[0], boot.shape[-1]
    rest = boot.shape[1:-1]
    ranks = (_boot_ranks(boot) if ranks is None else ranks).reshape(k, n_boot, -1)  # (K, B, M)
    valid = ~np.isnan(boot).all(axis=-1).reshape(n_boot, -1)  # (B, M): resamples holding the category
    ranks = np.where(valid[None], ranks, np.asarray(k + 1, dtype=ranks.dtype))  # left out: above every rank
    total = valid.sum(axis=0)  # (M,)
    cum = np.empty((k, k, ranks.shape[2]), dtype=np.int64)  # (rank r, K, M): resamples with rank <= r
    for r in range(k):
        cum[r] = (ranks <= r + 1).sum(axis=1, dtype=np.int32)
    out = []
    for q, rounding in ((low, np.floor), (high, np.ceil)):
        idx = rounding(q / 100.0 * np.maximum(total - 1, 0))
        value = 1.0 + (cum <= idx[None, None]).sum(axis=0)  # the (idx+1)-th smallest rank, (K, M)
        out.append(np.moveaxis(np.where(total[None] > 0, value, np.nan), 0, -1).reshape(*rest, k))
    return out[0], out[1]


def _interval_sorted(draws: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """_interval by a full sort (NaN draws sort last and are left out of the count)."""
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


def compare_with_control(probe: ModelStats, control: ModelStats) -> pd.DataFrame:
    """Paired bootstrap difference of spec_excess (probe - control) per (layer, category)."""
    rows = []
    diff_draws: list[np.ndarray] = []
    shared_layers = [layer for layer in probe.layers if layer in control.layers]
    for cat in probe.categories:
        if cat not in control.categories:
            continue
        ci_p, ci_c = probe.categories.index(cat), control.categories.index(cat)
        for layer in shared_layers:
            li_p, li_c = probe.layers.index(layer), control.layers.index(layer)
            diff_draws.append(probe.boot_spec_excess[:, ci_p, li_p] - control.boot_spec_excess[:, ci_c, li_c])
            diff = probe.spec_excess[ci_p, li_p] - control.spec_excess[ci_c, li_c]
            rows.append({
                "control": control.name, "layer": layer, "category": cat,
                "probe_spec_excess": probe.spec_excess[ci_p, li_p],
                "control_spec_excess": control.spec_excess[ci_c, li_c],
                "diff": diff,
                "n_tokens_probe": int(probe.n_tokens[ci_p]), "n_tokens_control": int(control.n_tokens[ci_c]),
            })
    for row, (low, high) in zip(rows, _intervals1(diff_draws), strict=True):
        row["diff_ci_low"], row["diff_ci_high"] = low, high
        row["exceeds_control"] = bool(np.isfinite(low) and low > 0)
    columns = ["control", "layer", "category", "probe_spec_excess", "control_spec_excess", "diff", "diff_ci_low",
               "diff_ci_high", "exceeds_control", "n_tokens_probe", "n_tokens_control"]
    return pd.DataFrame(rows, columns=columns if rows else None)


def _claims_rows(
    stats: ModelStats, claims: Mapping[str, Sequence[int]], top: int, layers: Sequence[int] | None = None
) -> list[dict]:
    """The rows of claims_table (one dict per row), only at `layers` (None: every layer)."""
    rows = []
    n_k = stats.n_components
    order = stats.boot_ranks if stats.boot_ranks is not None else _boot_ranks(stats.boot_mean)  # (K, B, C, L)
    holds = ~np.isnan(stats.boot_mean).any(axis=-1)  # (B, C, L): resamples holding the category
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
    scale = np.nanmean(stats.overall, axis=1)  # (L,): the layer's average component value
    boot_scale = np.nanmean(stats.boot_overall, axis=2)  # (B, L)
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
    for record in probe_records:
        key = (int(record["layer"]), record["category"])
        verdict, note, spread, margin, diff_txt = _compare_claim(
            record["verdict_within_model"], key, probe_name, [c.name for c in controls], draws, points,
            n_docs=n_docs, min_docs=min_docs, n_docs_category=(n_docs_by_category or {}).get(record["category"]))
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


def _compare_claim(
    own: str, key: tuple[int, str], probe_name: str, control_names: Sequence[str],
    draws: Mapping[tuple[str, int, str], np.ndarray], points: Mapping[tuple[str, int, str], float],
    *, n_docs: int, min_docs: int, n_docs_category: int | None,
) -> tuple[str, str, float, float, str]:
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
    p_draws = draws[(probe_name, layer, cat)]
    p_point = points[(probe_name, layer, cat)]
    signs, margins, texts = [], [], []
    for c in available:
        c_point = points[(c, layer, cat)]
        d = p_draws - draws[(c, layer, cat)]
        low, high = _interval1(d)
        sign = 1 if low > 0 else (-1 if high < 0 else 0)
        signs.append(sign)
        margins.append(low if sign > 0 else (-high if sign < 0 else 0.0))
        texts.append(f"{c}: {p_point - c_point:+.4f} [{low:+.4f}, {high:+.4f}]")
    spread = 0.0
    for i, a in enumerate(available):
        for b in available[i + 1 :]:
            gap = np.abs(draws[(a, layer, cat)] - draws[(b, layer, cat)])
            finite = gap[np.isfinite(gap)]
            if len(finite):
                spread = max(spread, float(np.percentile(finite, 97.5)))
    margin = float(min(margins))
    c_points = np.array([points[(c, layer, cat)] for c in available], dtype=float)
    c_points = c_points[np.isfinite(c_points)]
    if own != "uncertain" and len(c_points) < 2:
        return ("uncertain", "fewer than 2 controls: their spread (the prediction interval) cannot be estimated",
                spread, margin, "; ".join(texts))
    k = len(c_points)
    halfwidth = float(sps.t.ppf(0.975, k - 1) * np.std(c_points, ddof=1) * np.sqrt(1 + 1 / k)) if k >= 2 else np.nan
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


class Accumulator:
    """Streaming sums for one model (see the module docstring)."""

    def __init__(self, layers: Sequence[int], n_components: int, categories: Sequence[str], n_permutations: int):
        self.layers = list(layers)
        self.k = n_components
        self.categories = list(categories)
        self.c = len(self.categories)
        self.lk = len(self.layers) * n_components
        self.p = n_permutations
        self._doc: dict[str, list[Any]] = defaultdict(list)
        self.cat_sumsq = np.zeros((self.c, self.lk))
        self._perm_sum = np.zeros((self.c, self.p, self.lk)) if self.p else None  # (C, P, LK)
        self._perm_n = np.zeros((self.c, self.p)) if self.p else None  # (C, P)

    def add_batch(
        self,
        doc_indices: Sequence[int],
        values: Sequence[np.ndarray],
        units: Sequence[np.ndarray],
        unit_labels: Sequence[np.ndarray],
        plan: PermutationPlan | None,
    ) -> None:
        """Document j: values[j] (N_j, L, K) magnitudes of its analysed tokens, units[j] (N_j,) the
        word unit of each token (-1 = none), unit_labels[j] (U_j, C). The batch's documents are summed
        together: one token matrix, one unit matrix, and every per-document sum a segment sum."""
        n_docs = len(doc_indices)
        if n_docs == 0:
            return
        n_tok = np.fromiter((v.shape[0] for v in values), dtype=np.int64, count=n_docs)
        n_units = np.fromiter((lab.shape[0] for lab in unit_labels), dtype=np.int64, count=n_docs)
        first_unit = np.concatenate([[0], np.cumsum(n_units)[:-1]]).astype(np.int64)
        v64 = np.concatenate([v.reshape(v.shape[0], self.lk) for v in values]).astype(np.float64)  # (N, LK)
        unit = np.concatenate([np.where(u >= 0, u + start, -1) for u, start in zip(units, first_unit, strict=True)])
        ulab = np.concatenate(unit_labels)  # (U, C): the batch's units, document after document
        aligned = unit >= 0
        unit_sum = _unit_sums(v64[aligned], unit[aligned], int(n_units.sum()))  # (U, LK)
        unit_n = np.bincount(unit[aligned], minlength=int(n_units.sum())).astype(np.float64)
        ulab_f = ulab.astype(np.float64)
        tok_lab = np.zeros((v64.shape[0], self.c))
        tok_lab[aligned] = ulab_f[unit[aligned]]
        squares = v64 * v64
        d = self._doc
        d["ids"].append(np.asarray(doc_indices, dtype=np.int64))
        d["n"].append(n_tok)
        d["n_cat"].append(_segment_sums(tok_lab, n_tok).astype(np.int64))
        d["sum"].append(_segment_sums(v64, n_tok))
        d["sumsq"].append(_segment_sums(squares, n_tok))
        d["cat_sum"].append(np.stack([ulab_f[a : a + n].T @ unit_sum[a : a + n]
                                      for a, n in zip(first_unit, n_units, strict=True)]).astype(np.float32))
        d["units"].append(n_units)
        d["units_cat"].append(_segment_sums(ulab.astype(np.int64), n_units))
        d["unit_n"].append(_segment_sums(unit_n, n_units))
        d["unit_n2"].append(_segment_sums(unit_n**2, n_units))
        d["unit_sum"].append(_segment_sums(unit_sum, n_units))
        d["unit_s2"].append(_segment_sums(unit_sum * unit_sum, n_units))
        d["unit_sn"].append(_segment_sums(unit_sum * unit_n[:, None], n_units))
        self.cat_sumsq += tok_lab.T @ squares
        if self.p and plan is not None:
            rows = np.column_stack([unit_sum, unit_n])  # (U, LK + 1): each word's sums and token count
            self._add_permutations(rows, _segment_sums(rows, n_units), plan)

    def _add_permutations(self, rows: np.ndarray, totals: np.ndarray, plan: PermutationPlan) -> None:
        """rows (U, LK + 1): the batch's word rows (sums, token count); totals (D, LK + 1): per document."""
        assert self._perm_sum is not None and self._perm_n is not None
        # A category's permuted sum in document j is its prefix (the first `cut` segments summed) or
        # the total minus it (complement). Over the batch that is a signed (C, R) selection of the
        # segment sums: per block of replicates, one embedding_bag gives the (R, n x (LK + 1)) segment
        # sums and one GEMM their (C, n x (LK + 1)) category sums, added to the float64 running sums;
        # the totals (complements, categories holding every word) are float64 constants.
        const = np.zeros((self.c, self.lk + 1))
        for j, total in enumerate(totals):
            full = plan.full_cols[j]
            if len(full):  # a category holding every word is constant under permutation
                const[full] += total[None, :]
            if plan.out_rows[j][1] == 0:
                continue
            cols = plan.cat_cols[j]
            const[cols[plan.cat_complement[j]]] += total[None, :]
        if plan.chunks:
            select = torch.from_numpy(plan.selection(self.c))
            weight = torch.from_numpy(rows.astype(np.float32))
            n_segments = select.shape[1]
            for first, n, indices, offsets in plan.chunks:
                seg = F.embedding_bag(indices, weight, offsets, mode="sum").view(n_segments, -1)
                perm = torch.matmul(select, seg).numpy().reshape(self.c, n, self.lk + 1)
                self._perm_sum[:, first : first + n] += perm[:, :, : self.lk]
                self._perm_n[:, first : first + n] += perm[:, :, self.lk]
        self._perm_sum += const[:, None, : self.lk]
        self._perm_n += const[:, None, self.lk]

    def finalize(self) -> Accumulated:
        d = self._doc

        def stack(key: str, shape: tuple[int, ...] = (), dtype: Any = np.float64) -> np.ndarray:  # per-batch arrays
            return np.concatenate(d[key]).astype(dtype, copy=False) if d[key] else np.zeros((0, *shape), dtype=dtype)

        return Accumulated(
            layers=self.layers,
            n_components=self.k,
            categories=self.categories,
            doc_ids=stack("ids", (), np.int64),
            doc_n_total=stack("n", (), np.int64),
            doc_n_cat=stack("n_cat", (self.c,), np.int64),
            doc_sum=stack("sum", (self.lk,)),
            doc_sumsq=stack("sumsq", (self.lk,)),
            doc_cat_sum=stack("cat_sum", (self.c, self.lk), np.float32),
            cat_sumsq=self.cat_sumsq,
            doc_units=stack("units", (), np.int64),
            doc_units_cat=stack("units_cat", (self.c,), np.int64),
            doc_unit_n=stack("unit_n", (), np.float64),
            doc_unit_n2=stack("unit_n2", (), np.float64),
            doc_unit_sum=stack("unit_sum", (self.lk,)),
            doc_unit_s2=stack("unit_s2", (self.lk,)),
            doc_unit_sn=stack("unit_sn", (self.lk,)),
            perm_sum=self._perm_sum,
            perm_n=self._perm_n,
        )

"""From judge replies to numbers a paper can quote: tables, bootstrap CIs, test-retest agreement.

- `judgment_table`: one tidy row per (story, repeat) with status; failures stay as rows with NaN
  scores and their error, so n and the failure count are always visible.
- `story_scores`: one row per story (mean over the repeats that succeeded).
- `checkpoint_summary`: per checkpoint and dimension, the mean over stories with a 95% percentile
  bootstrap CI (resampling stories, the unit of analysis), n stories and n failed judgments.
- `test_retest`: with K >= 2 repeats, ICC(1,1) (one-way random: repeats are exchangeable, not
  distinct raters) with its F-based 95% CI, Spearman rho between repeats 0 and 1, exact-agreement
  share, and n complete stories.
- `logprob_expected_scores`: G-Eval style expected grade, sum_v p(v) * v over the score tokens in
  the top logprobs at the position where the judge wrote the grade.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from evalsuite.judge.rubric import Rubric
from evalsuite.stats import spearman

_INT_TOKEN = re.compile(r"\s*(\d+)\s*")


def logprob_expected_scores(text: str, tokens: list[dict[str, Any]], rubric: Rubric) -> dict[str, Any]:
    """Expected grade per dimension from the top logprobs of the grade token.

    `tokens` are the Chat Completions `logprobs.content` entries ({token, logprob, top_logprobs}).
    For each dimension we find where its value starts in the reply, take the token covering that
    character, and (if that token is the whole number) renormalise the probability over the
    alternatives that are integers in range: E = sum p_v v / sum p_v. `mass` is sum p_v (how much of
    the distribution the grade tokens cover). A grade split over several tokens (e.g. "1","0")
    gives None with the reason, never a guess. Caveat recorded in `_note`: with tokenizers that
    split digits, an alternative "1" may be the prefix of "10".
    """
    joined = "".join(t.get("token", "") for t in tokens)
    out: dict[str, Any] = {}
    if joined != text:
        # Offsets would not line up with the reply; refuse rather than misattribute.
        return {"_note": "logprob tokens do not reconstruct the reply text; no logprob scores"}
    starts = np.cumsum([0] + [len(t.get("token", "")) for t in tokens])
    for dim in rubric.dimensions:
        match = re.search(r'"' + re.escape(dim.name) + r'"\s*:\s*(-?\d+)', text)
        if match is None:
            out[dim.name] = None
            out[f"{dim.name}_reason"] = "grade not found in reply"
            continue
        pos = match.start(1)
        idx = int(np.searchsorted(starts, pos, side="right") - 1)
        tok = tokens[idx]
        chosen = _INT_TOKEN.fullmatch(tok.get("token", ""))
        if chosen is None or chosen.group(1) != match.group(1):
            out[dim.name] = None
            out[f"{dim.name}_reason"] = "grade spans several tokens or shares a token with other text"
            continue
        weights: dict[int, float] = {}
        for alt in tok.get("top_logprobs") or []:
            m = _INT_TOKEN.fullmatch(alt.get("token", ""))
            if m is None:
                continue
            value = int(m.group(1))
            if dim.min <= value <= dim.max:
                weights[value] = weights.get(value, 0.0) + math.exp(alt["logprob"])
        mass = sum(weights.values())
        if mass <= 0:
            out[dim.name] = None
            out[f"{dim.name}_reason"] = "no in-range grade tokens among the top logprobs"
            continue
        out[dim.name] = sum(v * p for v, p in weights.items()) / mass
        out[f"{dim.name}_mass"] = mass
    out["_note"] = "expected grade over in-range integer tokens in top_logprobs (renormalised)"
    return out


def judgment_table(results: list[Any], rubric: Rubric) -> pd.DataFrame:
    """One row per judged (story, repeat): item metadata, status, grades, logprob grades, key."""
    rows = []
    for res in results:
        row: dict[str, Any] = {k: v for k, v in res.item.meta.items() if not isinstance(v, (dict, list))}
        row.update(repeat=res.item.repeat, status=res.status, error=res.error, judgment_key=res.key, from_cache=res.from_cache)
        scores = res.scores if res.status == "ok" else None
        for dim in rubric.dimensions:
            row[dim.name] = float(scores[dim.name]) if scores else np.nan
        for cat in rubric.categorical:
            code = scores.get(cat.name) if scores else None
            row[cat.name] = code
            if cat.ordinal:
                row[f"{cat.name}_index"] = float(cat.index(code)) if code else np.nan
        lp = res.logprob_scores if res.status == "ok" else None
        if lp is not None:
            for dim in rubric.dimensions:
                value = lp.get(dim.name)
                row[f"{dim.name}_lp"] = float(value) if value is not None else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def score_columns(table: pd.DataFrame, rubric: Rubric) -> list[str]:
    """Numeric score columns present in a judgment table, in a stable order."""
    cols = list(rubric.dimension_names)
    cols += [f"{c.name}_index" for c in rubric.categorical if c.ordinal]
    cols += [f"{d}_lp" for d in rubric.dimension_names if f"{d}_lp" in table.columns]
    return [c for c in cols if c in table.columns]


def story_scores(table: pd.DataFrame, rubric: Rubric, unit: list[str]) -> pd.DataFrame:
    """Mean over successful repeats per story (`unit` = columns that identify a story)."""
    cols = score_columns(table, rubric)
    ok = table[table["status"] == "ok"]
    grouped = ok.groupby(unit, dropna=False, sort=True)
    means = grouped[cols].mean()
    means["n_repeats_ok"] = grouped.size()
    all_groups = table.groupby(unit, dropna=False, sort=True)
    out = pd.DataFrame({"n_repeats": all_groups.size()})
    out = out.join(means, how="left")
    out["n_repeats_ok"] = out["n_repeats_ok"].fillna(0).astype(int)
    return out.reset_index()


def bootstrap_ci(values: np.ndarray, *, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over stories: `evalsuite.stats.bootstrap_ci`, the project's one
    procedure. NaN for n < 2; a point for constant data."""
    from evalsuite.stats import bootstrap_ci as stats_bootstrap_ci

    ci = stats_bootstrap_ci(np.asarray(values, dtype=float), n_boot=n_resamples, confidence=confidence, seed=seed)
    return (ci.ci_low, ci.ci_high)


def checkpoint_summary(
    stories: pd.DataFrame, table: pd.DataFrame, rubric: Rubric, group: list[str], *, seed: int = 0, n_resamples: int = 10_000
) -> pd.DataFrame:
    """Per group (checkpoint) and score column: mean over stories, 95% bootstrap CI, n, failures."""
    cols = score_columns(table, rubric)
    rows = []
    for keys, sub in stories.groupby(group, dropna=False, sort=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        tsub = table
        for g, k in zip(group, keys, strict=True):
            tsub = tsub[tsub[g].isna()] if pd.isna(k) else tsub[tsub[g] == k]
        n_failed = int((tsub["status"] != "ok").sum())
        for col in cols:
            vals = sub[col].to_numpy(dtype=float)
            vals = vals[~np.isnan(vals)]
            low, high = bootstrap_ci(vals, seed=seed, n_resamples=n_resamples)
            rows.append({
                **dict(zip(group, keys, strict=True)),
                "score": col,
                "mean": float(np.mean(vals)) if len(vals) else math.nan,
                "ci_low": low,
                "ci_high": high,
                "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan,
                "n_stories": int(len(vals)),
                "n_judgments_failed": n_failed,
            })
    return pd.DataFrame(rows)


def category_shares(table: pd.DataFrame, rubric: Rubric, group: list[str]) -> pd.DataFrame:
    """Counts and shares of each categorical answer (e.g. age group) per checkpoint, over ok judgments."""
    rows = []
    ok = table[table["status"] == "ok"]
    for cat in rubric.categorical:
        for keys, sub in ok.groupby(group, dropna=False, sort=True):
            keys = keys if isinstance(keys, tuple) else (keys,)
            n = len(sub)
            for code, label in cat.options.items():
                count = int((sub[cat.name] == code).sum())
                rows.append({**dict(zip(group, keys, strict=True)), "question": cat.name, "code": code, "label": label,
                             "count": count, "n": n, "share": count / n if n else math.nan})
    # with no successful judgment there are no rows, but the table keeps its columns
    return pd.DataFrame(rows, columns=[*group, "question", "code", "label", "count", "n", "share"])


def icc_oneway(matrix: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """ICC(1,1) for an (n stories x k repeats) matrix, with the exact F-based CI (Shrout & Fleiss 1979)."""
    n, k = matrix.shape
    if n < 2 or k < 2:
        return {"icc": math.nan, "icc_ci_low": math.nan, "icc_ci_high": math.nan}
    grand = matrix.mean()
    row_means = matrix.mean(axis=1)
    msb = k * np.sum((row_means - grand) ** 2) / (n - 1)
    msw = np.sum((matrix - row_means[:, None]) ** 2) / (n * (k - 1))
    if msw == 0:
        # Every repeat identical (e.g. temperature 0): perfect agreement if stories differ at all.
        value = 1.0 if msb > 0 else math.nan
        return {"icc": value, "icc_ci_low": math.nan, "icc_ci_high": math.nan}
    icc = (msb - msw) / (msb + (k - 1) * msw)
    f_obs = msb / msw
    alpha = 1 - confidence
    df1, df2 = n - 1, n * (k - 1)
    f_low = f_obs / stats.f.ppf(1 - alpha / 2, df1, df2)
    f_high = f_obs * stats.f.ppf(1 - alpha / 2, df2, df1)
    return {
        "icc": float(icc),
        "icc_ci_low": float((f_low - 1) / (f_low + k - 1)),
        "icc_ci_high": float((f_high - 1) / (f_high + k - 1)),
    }


def test_retest(table: pd.DataFrame, rubric: Rubric, unit: list[str]) -> pd.DataFrame:
    """Agreement between repeats per score column, over stories whose every repeat succeeded."""
    repeats = sorted(table["repeat"].unique())
    rows = []
    if len(repeats) < 2:
        return pd.DataFrame(rows)
    ok = table[table["status"] == "ok"]
    for col in score_columns(table, rubric):
        wide = ok.pivot_table(index=unit, columns="repeat", values=col, aggfunc="first")
        wide = wide.reindex(columns=repeats).dropna()
        matrix = wide.to_numpy(dtype=float)
        n = len(matrix)
        row: dict[str, Any] = {"score": col, "n_stories": n, "k_repeats": len(repeats)}
        row.update(icc_oneway(matrix) if n >= 2 else {"icc": math.nan, "icc_ci_low": math.nan, "icc_ci_high": math.nan})
        if n >= 3 and np.std(matrix[:, 0]) > 0 and np.std(matrix[:, 1]) > 0:
            corr = spearman(matrix[:, 0], matrix[:, 1])
            row.update(spearman_r01=corr.rho, spearman_p=corr.p)
        else:
            row.update(spearman_r01=math.nan, spearman_p=math.nan)
        row["exact_agreement"] = float(np.mean(np.all(matrix == matrix[:, :1], axis=1))) if n else math.nan
        row["mean_abs_diff_r01"] = float(np.mean(np.abs(matrix[:, 0] - matrix[:, 1]))) if n else math.nan
        rows.append(row)
    return pd.DataFrame(rows)

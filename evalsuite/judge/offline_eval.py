"""gpt-eval without an LLM's written grades, as library calls: the offline modes of the local judge
(evalsuite.judge.offline: loglik, yesno, pairwise) and the judge-free scores (free_scores).

- `run_offline_validation`: the validity check (`gpt-eval --validate --judge-mode loglik,yesno,...|free`):
  each method's preference for the clean story over its corrupted copy, per corruption and rate.
- `run_offline_scoring`: samples scored by one pointwise mode (`--judge-mode loglik|yesno|free`).

Both return their tables and the meta.json dict; `write_*` writes them. Nothing here prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from evalsuite.judge.client import JudgeItem
from evalsuite.judge.validate import ValidationSet


@dataclass(frozen=True)
class OfflineJudge:
    """Which local judge runs in-process, and how much of each continuation it scores."""

    judge_gguf: str | os.PathLike | None = None
    use_packaged: bool = True
    max_chars: int = 400
    cache: str | os.PathLike | None = None  # default: $EVALSUITE_CACHE/judge_cache.sqlite

    def cache_path(self) -> Path:
        from corpora.paths import cache_dir

        return Path(self.cache) if self.cache else cache_dir() / "judge_cache.sqlite"


def _scorer_info(scorer: Any, **more: Any) -> dict[str, Any]:
    return {"offline_judge": {**scorer.info, "model_id": scorer.model_id, **more, **scorer.config.public_dict(),
                              "n_computed": scorer.n_computed, "n_cached": scorer.n_cached}}


# --- the validity check ------------------------------------------------------------------------

VALIDITY_COLUMNS = {
    "method": "offline:<mode> (the local judge's probabilities) or free:<score> (judge-free score)",
    "score": "the score compared (judge_bpc, p_yes_<dim>, pref_clean_<dim>, or a judge-free score)",
    "corruption": "the corruption applied to the continuation (evalsuite.judge.validate)",
    "rate": "the asked corruption rate (share of candidates changed)",
    "n_pairs": "story pairs (clean, corrupted) with both scores",
    "clean_preferred": "pairs where the clean text scored better",
    "ties": "pairs with equal scores",
    "corrupted_preferred": "pairs where the corrupted text scored better",
    "share_clean_preferred": "clean_preferred / n_pairs",
    "share_ci_low": "Wilson 95% CI of share_clean_preferred, low end",
    "share_ci_high": "Wilson 95% CI of share_clean_preferred, high end",
    "sign_test_p": "one-sided sign test (binomial, ties dropped) that clean is preferred more than half the time",
    "mean_diff": "mean over stories of the difference oriented so that > 0 favours clean",
    "diff_ci_low": "bootstrap 95% CI of mean_diff over stories, low end",
    "diff_ci_high": "bootstrap 95% CI of mean_diff over stories, high end",
    "d_z": "mean_diff / sd of the differences (paired standardized effect)",
    "meets_goal": "rate 1.0 only: share_clean_preferred >= 0.9",
    "sign_test_p_adj": "sign_test_p after Benjamini-Hochberg adjustment over all rows of this table",
    "separates": "sign_test_p_adj < 0.05 and the CI of mean_diff above 0: the score tells clean from corrupted",
}
_COMPUTED_BY = {"sign_test_p_adj": "evalsuite.stats.adjust_pvalues", "share_ci_low": "evalsuite.stats.wilson_ci",
                "share_ci_high": "evalsuite.stats.wilson_ci", "diff_ci_low": "evalsuite.stats.bootstrap_ci",
                "diff_ci_high": "evalsuite.stats.bootstrap_ci", "mean_diff": "evalsuite.stats.bootstrap_ci"}
VALIDITY_OUTPUTS = ("validity.csv", "validity_verdicts.csv", "validity_pairs.csv", "validity_scores.csv")


@dataclass
class OfflineValidationResult:
    table: pd.DataFrame  # validity.csv: per method x score x corruption x rate
    verdicts: pd.DataFrame  # validity_verdicts.csv: per method, passes / beats_chance
    pairs: pd.DataFrame  # validity_pairs.csv
    scores: pd.DataFrame  # validity_scores.csv
    meta: dict[str, Any] = field(default_factory=dict)  # validity_meta.json


def free_validation(validation: ValidationSet, *, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Judge-free scores of every validation variant, and their clean-vs-corrupted pairs."""
    from evalsuite.judge.free_scores import free_score_pairs, free_scores_table

    variants = validation.variants
    frame = free_scores_table([v.beginning for v in variants], [v.continuation for v in variants], progress=progress)
    for key in ("story_id", "corruption", "rate"):
        frame[key] = [getattr(v, key) for v in variants]
    return frame, free_score_pairs(frame)


def run_offline_validation(validation: ValidationSet, modes: list[str], judge: OfflineJudge, *,
                           free_scores: bool = True, seed: int = 0, progress: bool = False,
                           on_scorer: Callable[[Any], None] | None = None) -> OfflineValidationResult:
    """Each offline `mode` (and with `free_scores` each judge-free score): does it prefer the clean story?
    `on_scorer(scorer)` is told once the local judge is loaded, before the (long) scoring starts."""
    from evalsuite.judge.offline import offline_scorer
    from evalsuite.judge.validate import method_verdicts, offline_pairs, preference_table

    variants = validation.variants
    longest = max(len(v.beginning) for v in variants) + 2 * judge.max_chars + 1200
    scores, pairs, info = [], [], {}
    if modes:
        with offline_scorer(judge.judge_gguf, use_packaged=judge.use_packaged, max_chars=judge.max_chars,
                            cache=judge.cache, max_prompt_chars=longest, progress=progress) as scorer:
            if on_scorer is not None:
                on_scorer(scorer)
            for mode in modes:
                frame, pair = offline_pairs(variants, scorer, mode, validation.match, progress=progress)
                scores.append(frame)
                pairs.append(pair)
            info = _scorer_info(scorer)
    if free_scores:
        free_frame, free_pair = free_validation(validation, progress=progress)
        scores.append(free_frame)
        pairs.append(free_pair)
    all_pairs = pd.concat(pairs, ignore_index=True)
    table = preference_table(all_pairs, seed=seed)
    result = OfflineValidationResult(table=table, verdicts=method_verdicts(table), pairs=all_pairs,
                                     scores=pd.concat(scores, ignore_index=True))
    result.meta = _validity_meta(validation, judge.cache_path(), info, result)
    return result


def validity_columns(result: OfflineValidationResult) -> dict[str, dict[str, dict[str, str]]]:
    """meta.json `columns` of the four validity tables: every column described (ValueError otherwise)."""
    from evalsuite.judge import columns as cols
    from evalsuite.judge.free_scores import free_columns

    frames = dict(zip(VALIDITY_OUTPUTS, (result.table, result.verdicts, result.pairs, result.scores), strict=True))
    pairs_by = {"diff": "evalsuite.judge.validate.offline_pairs", "position_bias": "evalsuite.judge.offline.OfflineScorer.preference"}
    scores = {**cols.fixed(cols.VALIDITY_SCORE_COLUMNS, "evalsuite.judge.validate.offline_pairs",
                           {"story_id": "evalsuite.judge.validate.validation_set",
                            "corruption": "evalsuite.judge.validate.validation_set",
                            "rate": "evalsuite.judge.validate.validation_set"}),
              **free_columns()["free_story_scores.csv"]}
    definitions = {
        "validity.csv": cols.fixed(VALIDITY_COLUMNS, "evalsuite.judge.validate.preference_table", _COMPUTED_BY),
        "validity_verdicts.csv": cols.fixed(cols.VERDICT_COLUMNS, "evalsuite.judge.validate.method_verdicts"),
        "validity_pairs.csv": cols.fixed(cols.VALIDITY_PAIR_COLUMNS, "evalsuite.judge.validate.offline_pairs",
                                         pairs_by),
        "validity_scores.csv": scores,
    }
    return cols.table_columns(frames, definitions)


def _validity_meta(validation: ValidationSet, cache_path: Path, extra: dict[str, Any],
                   result: OfflineValidationResult) -> dict[str, Any]:
    from evalsuite.results import build_meta

    columns = validity_columns(result)
    return build_meta("gpt-eval", config={"mode": "validate", **validation.config()}, inputs=[validation.corpus],
                      seeds={"sample_and_corruptions": validation.sample_seed}, columns=columns,
                      outputs=list(VALIDITY_OUTPUTS), extra={"cache": str(cache_path), **extra})


def write_offline_validation(out: Path, result: OfflineValidationResult) -> list[Path]:
    """validity.csv, validity_verdicts.csv, validity_pairs.csv, validity_scores.csv, validity_meta.json."""
    from evalsuite.results import write_meta, write_table

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, frame in zip(VALIDITY_OUTPUTS, (result.table, result.verdicts, result.pairs, result.scores),
                           strict=True):
        written += write_table(frame, out / name)
    written.append(write_meta(out / "validity_meta.json", result.meta))
    return written


# --- scoring samples ---------------------------------------------------------------------------

STORY_FIELDS = ("checkpoint_id", "checkpoint", "story", "prompt_id", "model_family", "val_loss", "val_bpc",
                "tokens_seen")
CHECKPOINT_FACTS = ("checkpoint", "model_family", "val_loss", "val_bpc", "tokens_seen")


def story_frame(items: list[JudgeItem]) -> pd.DataFrame:
    """One row per story (repeat 0) of judge items: the fields that identify it, beginning, continuation."""
    rows = [{**{k: it.meta.get(k) for k in STORY_FIELDS}, "prompt": it.prompt, "completion": it.completion}
            for it in items if it.repeat == 0]
    return pd.DataFrame(rows)


@dataclass
class OfflineScoringResult:
    mode: str  # loglik, yesno or free
    stories: pd.DataFrame  # free_story_scores.csv: per story, judge-free scores (+ the judge's score)
    free: pd.DataFrame  # free_scores.csv: per checkpoint x judge-free score, mean + bootstrap CI
    summary: pd.DataFrame | None  # summary.csv (rubric mode's shape): per checkpoint x judge score; None for free
    meta: dict[str, Any] = field(default_factory=dict)

    def outputs(self) -> list[str]:
        names = ["free_story_scores.csv", "free_scores.csv"]
        return names + (["summary.csv", "summary.parquet"] if self.summary is not None else [])


def run_offline_scoring(items: list[JudgeItem], mode: str, judge: OfflineJudge, *, samples: dict[str, Any],
                        n_bootstrap: int = 10_000, seed: int = 0, progress: bool = False) -> OfflineScoringResult:
    """Samples scored by an offline mode of the local judge (loglik, yesno), or judge-free scores only (free).
    `samples` is what meta.json records of the inputs (`SampleInputs.context()`)."""
    from evalsuite.judge.free_scores import free_scores_summary, free_scores_table
    from evalsuite.judge.offline import offline_scorer, score_stories

    text = story_frame(items)
    scores = free_scores_table(list(text["prompt"]), list(text["completion"]), progress=progress)
    stories = text.drop(columns=["prompt", "completion"]).reset_index(drop=True).join(scores)
    info: dict[str, Any] = {}
    summary = None
    if mode != "free":
        longest = int(text["prompt"].str.len().max()) + judge.max_chars + 1200
        with offline_scorer(judge.judge_gguf, use_packaged=judge.use_packaged, max_chars=judge.max_chars,
                            cache=judge.cache, max_prompt_chars=longest, progress=progress) as scorer:
            judged = score_stories(scorer, mode, list(text["prompt"]), list(text["completion"]), progress=progress)
            info = _scorer_info(scorer, mode=mode)
        stories = stories.join(judged)
        summary = judge_summary(stories, list(judged.columns), n_bootstrap=n_bootstrap, seed=seed)
        summary = None if summary.empty else summary
    free = free_scores_summary(stories, ["checkpoint_id"], n_boot=n_bootstrap, seed=seed)
    result = OfflineScoringResult(mode=mode, stories=stories, free=free, summary=summary)
    result.meta = _scoring_meta(result, samples, n_bootstrap, seed, info)
    return result


def judge_summary(stories: pd.DataFrame, score_columns: list[str], *, n_bootstrap: int = 10_000,
                  seed: int = 0) -> pd.DataFrame:
    """Per checkpoint x judge score: mean with a bootstrap CI over stories, in the rubric summary's shape
    (so figures and report read it unchanged)."""
    from evalsuite.stats import bootstrap_ci

    rows = []
    facts = [c for c in CHECKPOINT_FACTS if c in stories]
    for ckpt, part in stories.groupby("checkpoint_id", sort=True):
        for col in score_columns:
            values = part[col].to_numpy(dtype=float)
            ci = bootstrap_ci(values, n_boot=n_bootstrap, seed=seed)
            rows.append({"checkpoint_id": ckpt, "score": col, "mean": ci.estimate, "ci_low": ci.ci_low,
                         "ci_high": ci.ci_high, "sd": float(part[col].std(ddof=1)), "n_stories": ci.n,
                         "n_judgments_failed": int(len(values) - ci.n), **{f: part[f].iloc[0] for f in facts}})
    return pd.DataFrame(rows)


def _scoring_meta(result: OfflineScoringResult, samples: dict[str, Any], n_bootstrap: int, seed: int,
                  info: dict[str, Any]) -> dict[str, Any]:
    from evalsuite.judge import columns as cols
    from evalsuite.results import build_meta

    frames = {"free_story_scores.csv": result.stories, "free_scores.csv": result.free}
    definitions = {"free_story_scores.csv": cols.free_story_definitions(result.stories.columns),
                   "free_scores.csv": cols.free_summary_definitions(result.free.columns)}
    if result.summary is not None:
        frames["summary.csv"] = result.summary
        definitions["summary.csv"] = cols.summary_definitions(result.summary.columns, {
            "score": ("the local judge's score (judge_bpc or p_yes_<dimension>)", "evalsuite.judge.offline.score_stories"),
            "mean": (f"mean over stories of the local judge's {result.mode} score", "evalsuite.stats.bootstrap_ci"),
            "ci_low": ("bootstrap 95% CI over stories, low end", "evalsuite.stats.bootstrap_ci"),
            "ci_high": ("bootstrap 95% CI over stories, high end", "evalsuite.stats.bootstrap_ci"),
            "sd": ("standard deviation over stories (ddof 1)", "evalsuite.judge.offline_eval.judge_summary"),
            "n_stories": ("stories with the score", "evalsuite.stats.bootstrap_ci"),
            "n_judgments_failed": ("stories without a score (empty continuation)",
                                   "evalsuite.judge.offline.score_stories")})
    columns = cols.table_columns(frames, definitions)
    return build_meta("gpt-eval", config={"mode": result.mode, "n_bootstrap": n_bootstrap},
                      inputs=samples["samples_files"], seeds={"bootstrap": seed}, columns=columns,
                      outputs=result.outputs(), extra={"generated": samples.get("generated"), **info})


def write_offline_scoring(out: Path, result: OfflineScoringResult) -> list[Path]:
    """free_story_scores.csv, free_scores.csv, summary.{csv,parquet} (judge modes), meta.json."""
    from evalsuite.results import write_meta, write_table

    out.mkdir(parents=True, exist_ok=True)
    written = write_table(result.stories, out / "free_story_scores.csv")
    written += write_table(result.free, out / "free_scores.csv")
    if result.summary is not None:
        written += write_table(result.summary, out / "summary.csv", parquet=True)
    written.append(write_meta(out / "meta.json", result.meta))
    return written

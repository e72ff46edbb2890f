"""gpt-eval as a library: samples.jsonl -> judge items -> judgments -> tidy tables -> files.

The command (evalsuite/commands/gpt_eval.py) is a thin layer over one library call per mode:
`run_gpt_eval` (rubric grades of samples), `run_validation` (rubric validity check),
`evalsuite.judge.offline_eval.run_offline_scoring` / `run_offline_validation` (offline modes of the
local judge and judge-free scores); `samples_from_inputs` turns its inputs into judge items.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from corpora.errors import UserError
from corpora.provenance import file_sha256
from evalsuite.judge.cache import JudgeCache
from evalsuite.judge.client import (
    JudgeItem,
    JudgePlan,
    JudgeResult,
    JudgeRun,
    JudgeSettings,
    dump_result,
    execute_plan,
    plan_judgments,
)
from evalsuite.judge.rubric import Rubric
from evalsuite.judge.scoring import (
    category_shares,
    checkpoint_summary,
    judgment_table,
    story_scores,
    test_retest,
)
from evalsuite.samples import read_samples

STORY_UNIT = ["checkpoint_id", "story"]
CHECKPOINT_FIELDS = ["checkpoint", "model_family", "val_loss", "val_bpc", "tokens_seen"]


def load_samples(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Read samples.jsonl files (from `evalsuite generate`, or written by hand).

    Each line is a JSON object with string `prompt` (the story beginning) and `completion`. Missing
    `prompt_id` / `checkpoint_id` follow evalsuite.samples' one rule (line number; `checkpoint`, else
    the file's stem). A story is
    identified by (checkpoint_id, prompt_id, occurrence), so several samples per prompt stay apart.
    """
    samples: list[dict[str, Any]] = []
    seen: dict[tuple[str, str, str], int] = {}
    # one reader and one defaulting rule for checkpoint_id/prompt_id (evalsuite.samples.read_samples)
    for obj in read_samples(paths, require=("prompt", "completion")):
        obj["prompt_id"] = str(obj["prompt_id"])
        pair = (obj["samples_file"], obj["checkpoint_id"], obj["prompt_id"])
        occurrence = seen.get(pair, 0)
        seen[pair] = occurrence + 1
        obj["story"] = f"{obj['prompt_id']}#{occurrence}"
        samples.append(obj)
    return samples


def samples_to_items(samples: list[dict[str, Any]], repeats: int) -> list[JudgeItem]:
    if repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {repeats}")
    return [
        JudgeItem(prompt=s["prompt"], completion=s["completion"], repeat=r, meta=dict(s))
        for s in samples
        for r in range(repeats)
    ]


@dataclass
class GptEvalTables:
    judgments: pd.DataFrame
    stories: pd.DataFrame
    summary: pd.DataFrame
    categories: pd.DataFrame
    reliability: pd.DataFrame


def score_run(
    results: list[JudgeResult], rubric: Rubric, *, unit: list[str] | None = None, group: list[str] | None = None,
    seed: int = 0, n_resamples: int = 10_000,
) -> GptEvalTables:
    """Tidy tables from judge results: per judgment, per story, per checkpoint (with CIs), reliability."""
    unit = unit or STORY_UNIT
    group = group or ["checkpoint_id"]
    table = judgment_table(results, rubric)
    for col in unit + group:
        if col not in table.columns:
            raise UserError(f"judged items lack the field {col!r}")
    stories = story_scores(table, rubric, unit)
    summary = checkpoint_summary(stories, table, rubric, group, seed=seed, n_resamples=n_resamples)
    # Carry checkpoint facts (loss, bpc, tokens seen) into the summary so figures need no join.
    facts = [c for c in CHECKPOINT_FIELDS if c in table.columns and c not in group]
    if facts and not summary.empty:
        first = table.groupby(group, dropna=False)[facts].first().reset_index()
        summary = summary.merge(first, on=group, how="left")
    categories = category_shares(table, rubric, group)
    reliability = test_retest(table, rubric, unit)
    return GptEvalTables(table, stories, summary, categories, reliability)


def failed_checkpoints(results: list[JudgeResult], field: str = "checkpoint_id") -> list[tuple[str, int, str]]:
    """(checkpoint, n judgements, last failure) for each checkpoint none of whose judgements succeeded."""
    by: dict[str, list[JudgeResult]] = {}
    for res in results:
        by.setdefault(str(res.item.meta.get(field)), []).append(res)
    out = []
    for ckpt, group in by.items():
        if all(r.status != "ok" for r in group):
            last = max(group, key=lambda r: (r.row or {}).get("finished_at") or "")
            out.append((ckpt, len(group), f"{last.status}: {last.error}"))
    return out


@dataclass
class GptEvalConfig:
    """Everything one gpt-eval run depends on, once the stories are known (the command builds it)."""

    items: list[JudgeItem]
    rubric: Rubric
    settings: JudgeSettings
    cache_path: Path
    score: bool = True  # per-story / per-checkpoint tables (False for --validate, which has its own)
    free_scores: bool = True
    n_resamples: int = 10_000
    seed: int = 0
    progress: bool = False


@dataclass
class GptEvalResult:
    plan: JudgePlan
    run: JudgeRun | None  # None: on_plan stopped the run (dry run)
    tables: GptEvalTables | None = None
    free_stories: pd.DataFrame | None = None
    free_summary: pd.DataFrame | None = None
    failed: list[tuple[str, int, str]] | None = None  # checkpoints none of whose judgements succeeded


def run_gpt_eval(config: GptEvalConfig, *, on_plan: Callable[[JudgePlan], bool] | None = None) -> GptEvalResult:
    """gpt-eval as one library call: plan (cache look-up, cost estimate), judge, score, judge-free scores.

    `on_plan(plan)` sees the plan before any request and returns False to stop there (dry run).
    Nothing is printed or written; `write_*` and the command do that."""
    with JudgeCache(config.cache_path) as store:
        plan = plan_judgments(config.items, config.rubric, config.settings, store)
        if on_plan is not None and not on_plan(plan):
            return GptEvalResult(plan=plan, run=None)
        run = execute_plan(plan, config.rubric, config.settings, store, progress=config.progress)
    result = GptEvalResult(plan=plan, run=run, failed=failed_checkpoints(run.results))
    if config.score:
        result.tables = score_run(run.results, config.rubric, seed=config.seed, n_resamples=config.n_resamples)
    if config.free_scores:
        from evalsuite.judge.free_scores import free_scores_summary, free_scores_table

        first = [it for it in config.items if it.repeat == 0]
        keep = [k for k in ("checkpoint_id", "story", "prompt_id") if all(k in it.meta for it in first)]
        stories = pd.DataFrame([{k: it.meta[k] for k in keep} for it in first])
        scores = free_scores_table([it.prompt for it in first], [it.completion for it in first],
                                   progress=config.progress)
        result.free_stories = stories.join(scores)
        if "checkpoint_id" in keep:
            result.free_summary = free_scores_summary(result.free_stories, ["checkpoint_id"],
                                                      n_boot=min(config.n_resamples, 10_000), seed=config.seed)
    return result


def write_gpt_eval(out: Path, result: GptEvalResult, config: GptEvalConfig, *, samples: dict[str, Any],
                   repeats: int = 1, judge_info: dict[str, Any] | None = None) -> list[Path]:
    """judgments.jsonl, summary / story_scores / judgments / categories (/ reliability, free scores) as CSV +
    Parquet, and meta.json (evalsuite.results schema). `samples` is `SampleInputs.context()`."""
    from evalsuite.results import write_meta as write_schema_meta

    run, tables = result.run, result.tables
    if run is None or tables is None:
        raise ValueError("a dry run, or a run without score=True, has no score tables to write")
    settings, rubric = config.settings, config.rubric
    out.mkdir(parents=True, exist_ok=True)
    written = [write_judgments_jsonl(out / "judgments.jsonl", run.results)]
    frames = {"judgments": tables.judgments.drop(columns=["prompt", "completion"], errors="ignore"),
              "story_scores": tables.stories, "summary": tables.summary, "categories": tables.categories}
    if not tables.reliability.empty:
        frames["reliability"] = tables.reliability
    if result.free_stories is not None:  # judge-free scores beside the rubric, same stories
        frames["free_story_scores"] = result.free_stories
    if result.free_summary is not None:
        frames["free_scores"] = result.free_summary
    written += write_tables(out, frames)
    legacy = run_meta(run, rubric, settings.public_dict(), {
        "repeats": repeats, "bootstrap": {"n_resamples": config.n_resamples, "seed": config.seed},
        "inputs": samples, "cache": str(config.cache_path), **({"embedded_judge": judge_info} if judge_info else {}),
    })
    meta = gpt_eval_meta(legacy, inputs=samples["samples_files"],
                         config={"rubric": rubric.identity(), "judge": settings.public_dict(), "repeats": repeats,
                                 "n_bootstrap": config.n_resamples},
                         seeds={"bootstrap": config.seed, "judge": settings.seed if settings.seed is not None else -1},
                         outputs=[f"{name}.{ext}" for name in frames for ext in ("csv", "parquet")] + ["judgments.jsonl"],
                         columns=gpt_eval_columns(frames, rubric))
    written.append(write_schema_meta(out / "meta.json", meta))
    return written


@dataclass
class SampleInputs:
    """The judge items of samples.jsonl inputs, and where each sample file came from."""

    items: list[JudgeItem]
    samples_files: list[str]
    generated: list[dict[str, str]]  # {checkpoint, samples} for each checkpoint turned into samples here

    def context(self) -> dict[str, Any]:
        """What meta.json records of the inputs (its `samples` key)."""
        return {"samples_files": self.samples_files, "generated": self.generated}


def samples_from_inputs(inputs: list[Path], out: Path, *, repeats: int = 1, prompts: str = "tinystories",
                        sampling: Any = None, device: str = "cpu", progress: bool = False,
                        on_generate: Callable[[Path, int, Path], None] | None = None) -> SampleInputs:
    """samples.jsonl inputs as they are; checkpoints are turned into samples first, written through
    evalsuite.samples.SamplesWriter to `out/samples/<checkpoint>.jsonl`. `sampling` is an
    evalsuite.generate.SamplingConfig; `on_generate(checkpoint, n_prompts, target)` is told before each
    checkpoint's generation starts (minutes on a CPU)."""
    from tqdm import tqdm

    from evalsuite.generate import iter_samples, load_prompt_set, safe_name
    from evalsuite.samples import SamplesWriter

    sample_files: list[Path] = []
    generated: list[dict[str, str]] = []
    for path in inputs:
        if path.suffix == ".jsonl":
            sample_files.append(path)
            continue
        prompt_set = load_prompt_set(prompts)
        target = out / "samples" / f"{safe_name(str(path))}.jsonl"
        if on_generate is not None:
            on_generate(path, len(prompt_set.prompts), target)
        with SamplesWriter(target) as writer, tqdm(
            total=len(prompt_set.prompts), desc=f"generating {path.name}", unit="story", disable=not progress
        ) as bar:
            for row in iter_samples(path, prompt_set, sampling, device=device):
                writer.write(row)
                bar.update(1)
        sample_files.append(target)
        generated.append({"checkpoint": str(path), "samples": str(target)})
    items = samples_to_items(load_samples(sample_files), repeats)
    return SampleInputs(items=items, samples_files=[str(p) for p in sample_files], generated=generated)


@dataclass
class ValidationConfig:
    """A rubric validity check (`gpt-eval --validate`): the judge grades real stories and their corruptions."""

    validation: Any  # evalsuite.judge.validate.ValidationSet
    rubric: Rubric
    settings: JudgeSettings
    cache_path: Path
    repeats: int = 1
    seed: int = 0  # bootstrap seed of the report's CIs
    progress: bool = False

    def items(self) -> list[JudgeItem]:
        from evalsuite.judge.validate import variant_items

        return variant_items(self.validation.variants, self.repeats)


@dataclass
class ValidationResult:
    plan: JudgePlan
    run: JudgeRun | None  # None: on_plan stopped the run (dry run)
    stories: pd.DataFrame | None = None  # one row per (story_id, corruption, rate): grades + realised rate
    report: Any = None  # evalsuite.judge.validate.ValidationReport (pairs, trend)
    failed: list[tuple[str, int, str]] | None = None


def run_validation(config: ValidationConfig, *, items: list[JudgeItem] | None = None,
                   on_plan: Callable[[JudgePlan], bool] | None = None) -> ValidationResult:
    """The rubric validity check as one library call: judge every variant, then per corruption and rate
    the share of stories graded clean > corrupted on the matching dimension, and the rate-grade trend.
    `items` (default `config.items()`) lets a caller that already built them pass them in."""
    from evalsuite.judge.validate import realized_rates_table, validation_report

    items = config.items() if items is None else items
    judged = run_gpt_eval(GptEvalConfig(items=items, rubric=config.rubric, settings=config.settings,
                                        cache_path=config.cache_path, score=False, free_scores=False,
                                        seed=config.seed, progress=config.progress), on_plan=on_plan)
    result = ValidationResult(plan=judged.plan, run=judged.run, failed=judged.failed)
    if judged.run is None:
        return result
    table = judgment_table(judged.run.results, config.rubric)
    stories = story_scores(table, config.rubric, ["story_id", "corruption", "rate"])
    realized = realized_rates_table(config.validation.variants)
    result.stories = stories.merge(realized, on=["story_id", "corruption", "rate"], how="left")
    result.report = validation_report(result.stories, config.validation.match, seed=config.seed)
    return result


def write_validation(out: Path, result: ValidationResult, config: ValidationConfig,
                     judge_info: dict[str, Any] | None = None) -> list[Path]:
    """validation_judgments.jsonl, validation_{pairs,trend,story_scores}.{csv,parquet}, validation_meta.json."""
    if result.run is None or result.report is None:
        raise ValueError("a dry run has nothing to write")
    vset = config.validation
    out.mkdir(parents=True, exist_ok=True)
    written = [write_judgments_jsonl(out / "validation_judgments.jsonl", result.run.results)]
    frames = {"validation_pairs": result.report.pairs, "validation_trend": result.report.trend,
              "validation_story_scores": result.stories}
    written += write_tables(out, frames)
    legacy = run_meta(result.run, config.rubric, config.settings.public_dict(), {
        "corpus": vset.corpus, "n_stories": vset.n_stories,
        "rates": vset.rates, "match": vset.match, "cache": str(config.cache_path),
        **({"embedded_judge": judge_info} if judge_info else {}),
    })
    settings = config.settings
    meta = gpt_eval_meta(legacy, inputs=[vset.corpus],
                         config={"mode": "validate", "rubric": config.rubric.identity(), "judge": settings.public_dict(),
                                 "repeats": config.repeats, **vset.config()},
                         seeds={"sample_and_corruptions": vset.sample_seed, "bootstrap": config.seed,
                                "judge": settings.seed if settings.seed is not None else -1},
                         outputs=[f"{name}.{ext}" for name in frames for ext in ("csv", "parquet")]
                         + ["validation_judgments.jsonl"],
                         columns=validation_columns(frames, config.rubric))
    written.append(write_meta(out / "validation_meta.json", meta))
    return written


def validation_columns(frames: dict[str, pd.DataFrame], rubric: Rubric) -> dict[str, dict[str, dict[str, str]]]:
    """meta.json `columns` of the rubric validity check's tables, every column described."""
    from evalsuite.judge import columns as cols
    from evalsuite.results import column

    validate = "evalsuite.judge.validate.validation_report"
    stories = frames["validation_story_scores"]
    keys = {c: column(d, f) for c, (d, f) in cols.VALIDATION_STORY_KEYS.items()}
    definitions = {
        "validation_pairs.csv": cols.fixed(cols.VALIDATION_PAIR_COLUMNS, validate,
                                           {"drop_ci_low": "evalsuite.judge.scoring.bootstrap_ci",
                                            "drop_ci_high": "evalsuite.judge.scoring.bootstrap_ci"}),
        "validation_trend.csv": cols.fixed(cols.VALIDATION_TREND_COLUMNS, validate,
                                           {"spearman_rate_vs_grade": "evalsuite.stats.spearman",
                                            "spearman_p": "evalsuite.stats.spearman"}),
        "validation_story_scores.csv": {**cols.story_definitions(rubric, [c for c in stories.columns if c not in keys]),
                                        **keys},
    }
    return cols.table_columns({f"{n}.csv": f for n, f in frames.items()}, definitions)


def run_meta(run: JudgeRun, rubric: Rubric, settings_public: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """meta.json: versions, rubric identity, judge settings, run statistics, and what failed."""
    import numpy
    import openai
    import scipy

    return {
        "versions": {
            "python": platform.python_version(),
            "openai": openai.__version__,
            "pandas": pd.__version__,
            "numpy": numpy.__version__,
            "scipy": scipy.__version__,
        },
        "rubric": {"id": rubric.id, "version": rubric.version, "path": rubric.path,
                   "sha256": file_sha256(rubric.path) if rubric.path else None},
        "judge": settings_public,
        "run": {
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "judgments": len(run.results),
            "status_counts": run.counts(),
            "from_cache": run.n_cached,
            "requests_made": run.requests_made,
            "prompt_tokens": run.prompt_tokens,
            "completion_tokens": run.completion_tokens,
            "cost_usd": run.cost_usd,
            "stopped_reason": run.stopped_reason,
            "response_format_used": run.response_format_used,
            "estimate_before_run": run.estimate.__dict__,
        },
        "policy": (
            "failed judgments (malformed or out-of-range after retries, transport errors, budget skips) are "
            "excluded from means and counted in n_judgments_failed; they are never imputed. CIs: 95% percentile "
            "bootstrap over stories (repeats averaged within a story first)."
        ),
        **extra,
    }


def write_tables(out_dir: Path, tables: dict[str, pd.DataFrame]) -> list[Path]:
    """Each table as CSV and Parquet, written atomically (evalsuite.results.write_table)."""
    from evalsuite.results import write_table

    written: list[Path] = []
    for name, frame in tables.items():
        written += write_table(frame, out_dir / f"{name}.csv", parquet=True)
    return written


SUMMARY_COLUMNS = {
    "score": ("rubric dimension (1-10), <categorical>_index (ordinal code index) or <dim>_lp (logprob-weighted grade)",
              "evalsuite.judge.scoring.checkpoint_summary"),
    "mean": ("mean over stories of the story score (repeats averaged within a story first)",
             "evalsuite.judge.scoring.checkpoint_summary"),
    "ci_low": ("95% percentile bootstrap CI of mean over stories, low end", "evalsuite.stats.bootstrap_ci"),
    "ci_high": ("95% percentile bootstrap CI of mean over stories, high end", "evalsuite.stats.bootstrap_ci"),
    "sd": ("standard deviation over stories (ddof 1)", "evalsuite.judge.scoring.checkpoint_summary"),
    "n_stories": ("stories with at least one successful judgment", "evalsuite.judge.scoring.checkpoint_summary"),
    "n_judgments_failed": ("judgments of the checkpoint that failed (invalid, error, skipped); never imputed",
                           "evalsuite.judge.scoring.checkpoint_summary"),
}
RELIABILITY_COLUMNS = {
    "icc": ("ICC(1,1) one-way random over repeats", "evalsuite.judge.scoring.icc_oneway"),
    "icc_ci_low": ("F-based 95% CI of the ICC, low end", "evalsuite.judge.scoring.icc_oneway"),
    "icc_ci_high": ("F-based 95% CI of the ICC, high end", "evalsuite.judge.scoring.icc_oneway"),
    "spearman_r01": ("Spearman rho between repeats 0 and 1", "evalsuite.stats.spearman"),
    "spearman_p": ("two-sided p of spearman_r01", "evalsuite.stats.spearman"),
}


def gpt_eval_columns(frames: dict[str, pd.DataFrame], rubric: Rubric) -> dict[str, dict[str, dict[str, str]]]:
    """meta.json `columns` of the rubric run's tables (`frames`: name without .csv -> frame): every column of
    every table described (a column without a definition is a ValueError, evalsuite.results.describe_columns)."""
    from evalsuite.judge import columns as cols
    from evalsuite.results import column

    def make(name: str, frame: pd.DataFrame) -> dict[str, dict[str, str]]:
        names = list(frame.columns)
        if name == "judgments":
            return cols.judgment_definitions(rubric, names)
        if name == "story_scores":
            return cols.story_definitions(rubric, names)
        if name == "summary":
            return cols.summary_definitions(names, SUMMARY_COLUMNS)
        if name == "categories":
            return {**cols.sample_field_definitions(["checkpoint_id"]),
                    **cols.fixed(cols.CATEGORY_COLUMNS, "evalsuite.judge.scoring.category_shares")}
        if name == "reliability":
            return {**cols.fixed(cols.RELIABILITY_EXTRA, "evalsuite.judge.scoring.test_retest"),
                    **{c: column(d, f) for c, (d, f) in RELIABILITY_COLUMNS.items()}}
        if name == "free_story_scores":
            return cols.free_story_definitions(names)
        if name == "free_scores":
            return cols.free_summary_definitions(names)
        raise ValueError(f"no column definitions for the table {name!r}")

    return cols.table_columns({f"{n}.csv": f for n, f in frames.items()},
                              {f"{n}.csv": make(n, f) for n, f in frames.items()})


def gpt_eval_meta(legacy: dict[str, Any], *, inputs: list[str], config: dict[str, Any], seeds: dict[str, int],
                  outputs: list[str], columns: dict[str, dict[str, dict[str, str]]]) -> dict[str, Any]:
    """meta.json in the project schema (evalsuite.results.build_meta); `legacy` (run_meta's dict: versions,
    rubric, judge settings, run statistics, policy, and what the caller adds) stays at the top level under
    its own keys (`inputs` is kept as `samples`; `command` is the schema's)."""
    from evalsuite.results import build_meta

    extra = {k: v for k, v in legacy.items() if k not in ("command", "inputs")}
    if "inputs" in legacy:
        extra["samples"] = legacy["inputs"]
    return build_meta("gpt-eval", config=config, inputs=inputs, seeds=seeds, columns=columns, outputs=outputs,
                      extra=extra)


def write_judgments_jsonl(path: Path, results: list[JudgeResult]) -> Path:
    """Every judgment with its inputs, the raw reply, the request and all attempts (traceability)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for res in results:
            handle.write(dump_result(res) + "\n")
    tmp.replace(path)
    return path


def write_meta(path: Path, meta: dict[str, Any]) -> Path:
    path.write_text(json.dumps(meta, indent=2, default=str, ensure_ascii=False) + "\n", encoding="utf-8")
    return path

"""Column definitions of every table gpt-eval writes, for meta.json's `columns` (evalsuite.results schema).

`table_columns(frames, definitions)` describes each written table through
evalsuite.results.describe_columns, so a column without a definition fails loudly (ValueError).
Fields carried over from the input samples (any key of a samples.jsonl line) are described as such:
a hand-written samples file may carry keys this project does not know, and they are written as given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from evalsuite.judge.rubric import Rubric

Definitions = dict[str, dict[str, str]]

_SCORING = "evalsuite.judge.scoring"


def _col(definition: str, computed_by: str) -> dict[str, str]:
    from evalsuite.results import column

    return column(definition, computed_by)


def sample_field_definitions(names: Iterable[str], *, passthrough: bool = False) -> Definitions:
    """Columns carried over from the input samples: the samples schema where known; with `passthrough`
    (a table that copies every field of the samples line) any other field as "written as given", else
    unknown names are left out, so that describe_columns fails on them."""
    from evalsuite.samples import sample_columns

    known = sample_columns()
    local = {
        "samples_file": _col("the samples.jsonl file the story came from", "evalsuite.samples.read_samples"),
        "samples_line": _col("line number of the story in samples_file", "evalsuite.samples.read_samples"),
        "checkpoint_id_from": _col("where checkpoint_id came from: checkpoint_id, checkpoint or file name (the "
                                   "samples' defaulting rule)", "evalsuite.samples.read_samples"),
        "story": _col("<prompt_id>#<occurrence>: one story of a checkpoint (several samples per prompt stay apart)",
                      "evalsuite.judge.evaluate.load_samples"),
    }
    out: Definitions = {}
    for name in names:
        name = str(name)
        if name in local:
            out[name] = local[name]
        elif name in known:
            out[name] = dict(known[name])
        elif passthrough:
            out[name] = _col(f"field {name!r} of the input samples.jsonl line, written as given",
                             "evalsuite.samples.read_samples")
    return out


def rubric_score_definitions(rubric: Rubric, *, per: str) -> Definitions:
    """The grade columns of a rubric (dimensions, ordinal indexes, logprob grades); `per` says over what."""
    out: Definitions = {}
    for dim in rubric.dimensions:
        out[dim.name] = _col(f"judge grade of {dim.name} ({dim.min}-{dim.max}), {per}",
                             "evalsuite.judge.scoring.judgment_table")
        out[f"{dim.name}_lp"] = _col(f"G-Eval expected grade of {dim.name} from the judge's top logprobs, {per}",
                                     "evalsuite.judge.scoring.logprob_expected_scores")
    for cat in rubric.categorical:
        out[cat.name] = _col(f"judge answer code of {cat.name} ({', '.join(cat.options)})",
                             "evalsuite.judge.scoring.judgment_table")
        if cat.ordinal:
            out[f"{cat.name}_index"] = _col(f"ordinal index of the {cat.name} code, {per}",
                                            "evalsuite.judge.scoring.judgment_table")
    return out


def judgment_definitions(rubric: Rubric, columns: Iterable[str]) -> Definitions:
    """judgments.csv / validation judgments: one row per judged (story, repeat)."""
    own = {
        "repeat": _col("repeat index of the judgment of this story (0..K-1)", "evalsuite.judge.evaluate.samples_to_items"),
        "status": _col("ok, invalid (malformed / out of range after retries), error or skipped (budget)",
                       "evalsuite.judge.client.execute_plan"),
        "error": _col("why the judgment failed (empty when ok)", "evalsuite.judge.client.execute_plan"),
        "judgment_key": _col("sha256 cache key of (rubric, judge settings, prompt, completion, repeat)",
                             "evalsuite.judge.client.plan_judgments"),
        "from_cache": _col("the reply came from the judge cache, not a new request", "evalsuite.judge.client.plan_judgments"),
        **rubric_score_definitions(rubric, per="of this judgment (NaN when it failed)"),
    }
    return {**sample_field_definitions((c for c in columns if c not in own), passthrough=True), **own}


def story_definitions(rubric: Rubric, columns: Iterable[str]) -> Definitions:
    """story_scores.csv: one row per story, mean over its successful repeats."""
    own = {
        "n_repeats": _col("judgments of the story (repeats)", "evalsuite.judge.scoring.story_scores"),
        "n_repeats_ok": _col("successful judgments of the story", "evalsuite.judge.scoring.story_scores"),
        **{k: _col(v["definition"], "evalsuite.judge.scoring.story_scores")
           for k, v in rubric_score_definitions(rubric, per="mean over the story's successful repeats").items()},
    }
    return {**sample_field_definitions(c for c in columns if c not in own), **own}


def summary_definitions(columns: Iterable[str], scores: Mapping[str, tuple[str, str]]) -> Definitions:
    """summary.csv: per checkpoint x score; the score columns from `scores` (column -> (definition, function)),
    the checkpoint facts from the samples."""
    own = {c: _col(d, f) for c, (d, f) in scores.items()}
    return {**sample_field_definitions(c for c in columns if c not in own), **own}


CATEGORY_COLUMNS = {
    "question": "the rubric's categorical question (e.g. age_group)",
    "code": "one answer code of the question",
    "label": "what the code means (the rubric's option label)",
    "count": "successful judgments of the checkpoint answering this code",
    "n": "successful judgments of the checkpoint",
    "share": "count / n (NaN when n = 0)",
}
RELIABILITY_EXTRA = {
    "score": "score column compared between repeats",
    "n_stories": "stories whose every repeat succeeded",
    "k_repeats": "repeats per story",
    "exact_agreement": "share of stories with the same score in every repeat",
    "mean_abs_diff_r01": "mean absolute difference between repeats 0 and 1",
}
VALIDATION_PAIR_COLUMNS = {
    "corruption": "the corruption applied to the continuation (evalsuite.judge.validate)",
    "dimension": "the rubric dimension the corruption should lower",
    "rate": "the asked corruption rate",
    "realized_rate_mean": "mean over stories of the share of candidates actually changed",
    "n_pairs": "stories with both the clean and the corrupted grade",
    "clean_higher": "pairs where the clean text got the higher grade",
    "ties": "pairs with equal grades",
    "corrupted_higher": "pairs where the corrupted text got the higher grade",
    "share_clean_higher": "clean_higher / n_pairs",
    "sign_test_p": "one-sided sign test (binomial, ties dropped) that clean is graded higher more than half the time",
    "mean_drop": "mean over stories of clean grade - corrupted grade",
    "drop_ci_low": "bootstrap 95% CI of mean_drop over stories, low end",
    "drop_ci_high": "bootstrap 95% CI of mean_drop over stories, high end",
}
VALIDATION_TREND_COLUMNS = {
    "corruption": "the corruption",
    "dimension": "the rubric dimension graded",
    "spearman_rate_vs_grade": "Spearman rho between corruption rate (clean = 0) and grade over all variants",
    "spearman_p": "two-sided p of spearman_rate_vs_grade",
    "n": "variants with a grade",
}
VALIDATION_STORY_KEYS = {
    "story_id": ("id of the corpus story", "evalsuite.judge.validate.validation_set"),
    "corruption": ("the corruption applied (clean = none)", "evalsuite.judge.validate.validation_set"),
    "rate": ("the asked corruption rate (0 for clean)", "evalsuite.judge.validate.validation_set"),
    "realized_rate": ("share of candidates actually changed", "evalsuite.judge.validate.realized_rates_table"),
    "n_candidates": ("words/sentences the corruption could change", "evalsuite.judge.validate.realized_rates_table"),
}
VALIDITY_PAIR_COLUMNS = {
    "method": "offline:<mode> (the local judge) or free:<score> (judge-free score)",
    "score": "the score compared",
    "story_id": "id of the corpus story",
    "corruption": "the corruption applied to the continuation",
    "rate": "the asked corruption rate",
    "diff": "clean-vs-corrupted difference oriented so that > 0 favours clean (pairwise: p(prefer clean) - 0.5)",
    "position_bias": "pairwise: the judge's preference for the first position, averaged over both orders",
}
VALIDITY_SCORE_COLUMNS = {
    "method": "offline:<mode> (the local judge); judge-free rows carry the free scores as columns",
    "score": "the local judge's score (judge_bpc or p_yes_<dimension>)",
    "story_id": "id of the corpus story",
    "corruption": "the corruption applied (clean = none)",
    "rate": "the asked corruption rate",
    "value": "the local judge's score of this variant",
    "n_tokens": "loglik: tokens of the scored continuation",
    "mass": "yesno: probability mass on the yes/no tokens",
}
VERDICT_COLUMNS = {
    "method": "offline:<mode> or free:<score>",
    "scores": "the scores of the method, comma-separated",
    "n_corruptions": "corruptions at rate 1.0",
    "passes": "every corruption at rate 1.0 has share_clean_preferred >= 0.9",
    "beats_chance": "every corruption at rate 1.0 has sign_test_p < 0.05",
    "worst_corruption": "corruption with the lowest share_clean_preferred at rate 1.0",
    "worst_share": "lowest share_clean_preferred at rate 1.0",
    "n_pairs_min": "fewest pairs of any corruption at rate 1.0",
}
OFFLINE_STORY_SCORES = {
    "judge_bpc": ("loglik: bits per character of the continuation under the local judge",
                  "evalsuite.judge.offline.score_stories"),
    "p_yes_<dimension>": ("yesno: the local judge's probability of yes to the question on <dimension>",
                          "evalsuite.judge.offline.score_stories"),
}


def fixed(defs: Mapping[str, str], computed_by: str, overrides: Mapping[str, str] | None = None) -> Definitions:
    """column(definition, function) for each entry; `overrides` names a different function per column."""
    return {c: _col(d, (overrides or {}).get(c, computed_by)) for c, d in defs.items()}


def table_columns(frames: Mapping[str, Any], definitions: Mapping[str, Mapping[str, Mapping[str, str]]]
                  ) -> dict[str, dict[str, dict[str, str]]]:
    """meta.json `columns` of each written table `name` (a file name): every column described, in table order."""
    from evalsuite.results import describe_columns

    return {name: describe_columns(frame.columns, definitions[name], name) for name, frame in frames.items()}


def templated(definitions: Mapping[str, Mapping[str, str]], names: Iterable[str]) -> Definitions:
    """Definitions for concrete names that match a templated entry (`p_yes_<dimension>` -> `p_yes_grammar`)."""
    import re

    out: Definitions = {}
    for name in names:
        for key, entry in definitions.items():
            pattern = "".join(".+" if p.startswith("<") else re.escape(p) for p in re.split(r"(<[^>]+>)", key))
            if re.fullmatch(pattern, str(name)):
                out[str(name)] = dict(entry)
                break
    return out


def free_story_definitions(columns: Iterable[str]) -> Definitions:
    """free_story_scores.csv: the story fields, the judge-free scores, and the local judge's scores."""
    from evalsuite.judge.free_scores import free_columns

    columns = [str(c) for c in columns]
    own = dict(free_columns()["free_story_scores.csv"])
    own.update(templated({k: _col(d, f) for k, (d, f) in OFFLINE_STORY_SCORES.items()}, columns))
    return {**sample_field_definitions(c for c in columns if c not in own), **own}


def free_summary_definitions(columns: Iterable[str]) -> Definitions:
    """free_scores.csv: per checkpoint x judge-free score."""
    from evalsuite.judge.free_scores import free_columns

    own = dict(free_columns()["free_scores.csv"])
    own["score"] = _col("the judge-free score (a column of free_story_scores.csv)", "evalsuite.judge.free_scores.FREE_SCORES")
    return {**sample_field_definitions(c for c in columns if c not in own), **own}



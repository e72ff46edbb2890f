"""Judge-free scores of a story continuation, beside the rubric: no LLM, every number traces to text.

Each score reads the continuation (the part the model wrote) and, where continuity is measured, the
beginning it continues. Definitions (words = letter runs with inner apostrophes):

- grammar_errors_per_100w      hits of the child-language error detectors (evalsuite.childes.detectors:
                               article omission, pronoun case, agreement, overregularisation, missing
                               copula/auxiliary, missing morpheme) in the continuation, per 100 words.
                               The beginning is parsed with it (context) but its hits are not counted.
- repeated_3gram_share         1 - distinct / total word 3-grams of the continuation (lower case).
- immediate_repetitions_per_100w  the detectors' immediate repetitions (a word or up to 4 words said
                               twice in a row, "the dog the dog ran") per 100 words.
- mean_aoa_years               mean Kuperman age of acquisition of the continuation's rated words
                               (evalsuite.aoa.mean_aoa); lower = words learnt earlier.
- names_kept                   share of the names of the beginning (capitalised spaCy PROPN, or a
                               capitalised word inside a sentence) that the continuation uses again
                               (same spelling); NaN when the beginning names nobody.
- pronoun_breaks_per_100w      the detectors' pronoun_antecedent hits in the continuation (a he/she
                               with no compatible earlier mention, the beginning included) per 100 words.

`FREE_SCORES` says for each score whether lower is better: the validity check orients the clean vs
corrupted difference with it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
GRAMMAR_TYPES = frozenset({"article_omission", "pronoun_case", "subject_verb_agreement", "overregularization",
                           "missing_copula_aux", "missing_morpheme"})

# name -> (definition, lower_is_better)
FREE_SCORES: dict[str, tuple[str, bool]] = {
    "grammar_errors_per_100w": ("error-detector hits (grammar types) in the continuation per 100 words", True),
    "repeated_3gram_share": ("1 - distinct/total word 3-grams of the continuation", True),
    "immediate_repetitions_per_100w": ("immediate repetitions (detector) per 100 words of the continuation", True),
    "mean_aoa_years": ("mean Kuperman age of acquisition (years) of the continuation's rated words", True),
    "names_kept": ("share of the beginning's person names mentioned again in the continuation", False),
    "pronoun_breaks_per_100w": ("he/she with no compatible earlier mention, per 100 words of the continuation", True),
}


def words(text: str) -> list[str]:
    return WORD.findall(text)


def repeated_ngram_share(tokens: Sequence[str], n: int = 3) -> float:
    grams = [tuple(t.lower() for t in tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else math.nan


def _names(doc, end_char: int) -> set[str]:
    """Person-name candidates before `end_char`: capitalised proper nouns (spaCy PROPN), or capitalised
    words inside a sentence (not its first word), minus the pronoun I."""
    return {t.text for t in doc if t.idx < end_char and t.text[:1].isupper() and t.text != "I" and t.is_alpha
            and (t.pos_ == "PROPN" or (not t.is_sent_start and t.pos_ in ("NOUN", "ADJ", "ADV")))}


def free_scores_table(beginnings: Sequence[str], continuations: Sequence[str], *, nlp: Any = None,
                      progress: bool = False) -> pd.DataFrame:
    """One row per (beginning, continuation) with every score of `FREE_SCORES` and the word count."""
    from evalsuite.aoa import mean_aoa
    from evalsuite.childes.detectors import iter_detect, load_nlp

    if len(beginnings) != len(continuations):
        raise ValueError("beginnings and continuations differ in length")
    nlp = nlp or load_nlp()
    texts = [b + c for b, c in zip(beginnings, continuations, strict=True)]
    docs = nlp.pipe(texts, batch_size=64)
    if progress:
        from tqdm import tqdm

        docs = tqdm(docs, total=len(texts), desc="judge-free scores", unit="story")
    # each story is one unit: the antecedent context runs from the beginning into the continuation
    parsed = iter_detect(((str(i), doc, 0) for i, doc in enumerate(docs)), context_window=0)
    rows = []
    for unit, beginning, continuation in zip(parsed, beginnings, continuations, strict=True):
        cut = len(beginning)
        doc = unit.span.doc
        cont_words = words(continuation)
        n = len(cont_words)

        def per100(k: int, n: int = n) -> float:
            return 100.0 * k / n if n else math.nan

        hits = [h for h in unit.hits if h.start >= cut]
        first_names = _names(doc, cut)
        kept = first_names & set(cont_words)  # mentioned again, wherever in a sentence
        rows.append({
            "n_words": n,
            "grammar_errors_per_100w": per100(sum(h.error_type in GRAMMAR_TYPES for h in hits)),
            "repeated_3gram_share": repeated_ngram_share(cont_words),
            "immediate_repetitions_per_100w": per100(sum(h.error_type == "immediate_repetition" for h in hits)),
            "mean_aoa_years": mean_aoa(cont_words).mean_years,
            "names_kept": len(kept) / len(first_names) if first_names else math.nan,
            "pronoun_breaks_per_100w": per100(sum(h.error_type == "pronoun_antecedent" for h in hits)),
        })
    return pd.DataFrame(rows)


def free_score_pairs(frame: pd.DataFrame, clean: str = "clean") -> pd.DataFrame:
    """Clean-vs-corrupted differences of every judge-free score (> 0 favours the clean text).

    `frame`: free_scores_table rows plus story_id, corruption, rate."""
    rows = []
    ref = frame[frame["corruption"] == clean].set_index("story_id")
    for row in frame[frame["corruption"] != clean].to_dict("records"):
        if row["story_id"] not in ref.index:
            continue
        base = ref.loc[row["story_id"]]
        for name, (_, lower_better) in FREE_SCORES.items():
            c, x = float(base[name]), float(row[name])
            diff = (x - c) if lower_better else (c - x)
            rows.append({"method": f"free:{name}", "score": name, "story_id": row["story_id"],
                         "corruption": row["corruption"], "rate": row["rate"], "diff": diff})
    return pd.DataFrame(rows)


def free_scores_summary(stories: pd.DataFrame, group: Sequence[str], *, n_boot: int = 2000,
                        seed: int = 0) -> pd.DataFrame:
    """Per group (checkpoint) and score: mean over stories with a bootstrap 95% CI (evalsuite.stats)."""
    from evalsuite.stats import bootstrap_ci

    rows = []
    for keys, part in stories.groupby(list(group), dropna=False, sort=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        for name, (_, lower_better) in FREE_SCORES.items():
            ci = bootstrap_ci(part[name].to_numpy(dtype=float), n_boot=n_boot, seed=seed)
            rows.append({**dict(zip(group, keys, strict=True)), "score": name, "mean": ci.estimate,
                         "ci_low": ci.ci_low, "ci_high": ci.ci_high, "n_stories": ci.n,
                         "lower_is_better": lower_better})
    return pd.DataFrame(rows)


FREE_SUMMARY_COLUMNS = {"mean": "mean over stories of the score", "ci_low": "bootstrap 95% CI over stories, low end",
                        "ci_high": "bootstrap 95% CI over stories, high end", "n_stories": "stories with the score",
                        "lower_is_better": "direction of the score"}


def free_columns() -> dict[str, dict[str, dict[str, str]]]:
    """meta.json `columns` of free_story_scores.csv and free_scores.csv."""
    from evalsuite.results import column

    stories = {"n_words": column("words of the continuation", "evalsuite.judge.free_scores.free_scores_table")}
    stories.update({name: column(definition, "evalsuite.judge.free_scores.free_scores_table")
                    for name, (definition, _) in FREE_SCORES.items()})
    summary = {c: column(d, "evalsuite.stats.bootstrap_ci" if c != "lower_is_better"
                         else "evalsuite.judge.free_scores.FREE_SCORES") for c, d in FREE_SUMMARY_COLUMNS.items()}
    return {"free_story_scores.csv": stories, "free_scores.csv": summary}

"""Validity check for a judge: does it rank real stories above controlled corruptions of them?

Each real story is cut into a beginning (the first ~20% of words, possibly mid-sentence, as in the
TinyStories evaluation prompts) and a continuation. The continuation is judged clean, and with
one corruption at a time, at known rates:

- drop_articles     a share r of the the/a/an removed                  -> grammar
- swap_pronoun_case a share r of he/him, she/her, they/them, I/me, we/us
                    swapped to the other case                          -> grammar
- shuffle_sentences a share r of the sentences permuted among
                    their positions (no sentence left in place)        -> consistency
- shuffle_words     the words of a share r of the sentences shuffled   -> grammar

"A share r" is exactly round(r * candidates), at least one, chosen at random (seeded).

The realised rate (changes / candidates) is recorded for each variant. A useful judge gives the
clean text a higher grade on the matching dimension; `validation_report` gives, per corruption and
rate, the share of stories where clean > corrupted (ties and losses shown, with n and a one-sided
sign-test p-value), the mean drop with a bootstrap CI, and per corruption the Spearman correlation
between rate (0 = clean) and grade.
"""

from __future__ import annotations

import math
import os
import random
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from corpora.errors import UserError
from evalsuite.judge.client import JudgeItem
from evalsuite.judge.rubric import Rubric
from evalsuite.judge.scoring import bootstrap_ci
from evalsuite.stats import spearman

DEFAULT_RATES = (0.25, 0.5, 1.0)
DEFAULT_MATCH = {
    "drop_articles": "grammar",
    "swap_pronoun_case": "grammar",
    "shuffle_sentences": "consistency",
    "shuffle_words": "grammar",
}
CLEAN = "clean"

_WORD = re.compile(r"\S+")
_ARTICLE = re.compile(r"\b(the|a|an)\b\s?", flags=re.IGNORECASE)
_PRONOUN_SWAP = {"he": "him", "him": "he", "she": "her", "her": "she", "they": "them", "them": "they",
                 "i": "me", "me": "I", "we": "us", "us": "we"}
_PRONOUN = re.compile(r"\b(" + "|".join(_PRONOUN_SWAP) + r")\b", flags=re.IGNORECASE)
_SENTENCE = re.compile(r"[^.!?]+(?:[.!?]+[\"”’']?|$)\s*")


@dataclass(frozen=True)
class Variant:
    story_id: str
    corruption: str
    rate: float
    realized_rate: float
    n_candidates: int
    beginning: str
    continuation: str


def usable_story(text: str, min_words: int = 8) -> bool:
    """Long enough for split_story (a beginning of min_words and a continuation of at least 5 words)."""
    return len(_WORD.findall(text)) >= min_words + 5


def split_story(text: str, begin_fraction: float = 0.2, min_words: int = 8) -> tuple[str, str]:
    """Beginning = the first ~20% of words (at least `min_words`); the cut may fall mid-sentence."""
    words = list(_WORD.finditer(text))
    if len(words) < min_words + 5:
        raise UserError(f"story too short to validate with ({len(words)} words): {text[:60]!r}...")
    n_begin = max(min_words, round(begin_fraction * len(words)))
    cut = words[n_begin].start()
    return text[:cut].rstrip(), " " + text[cut:].strip()


def _choose(n: int, rate: float, rng: random.Random) -> set[int]:
    """Exactly round(rate * n) of n positions (at least one when rate > 0 and n > 0): the realised
    rate is the asked rate up to rounding, and a variant is never silently identical to the clean text."""
    if n == 0 or rate <= 0:
        return set()
    k = min(n, max(1, round(rate * n)))
    return set(rng.sample(range(n), k))


def drop_articles(text: str, rate: float, rng: random.Random) -> tuple[str, int, int]:
    matches = list(_ARTICLE.finditer(text))
    chosen = _choose(len(matches), rate, rng)
    out = text
    for i in sorted(chosen, reverse=True):
        m = matches[i]
        out = out[: m.start()] + out[m.end():]
    return out, len(chosen), len(matches)


def swap_pronoun_case(text: str, rate: float, rng: random.Random) -> tuple[str, int, int]:
    matches = list(_PRONOUN.finditer(text))
    chosen = _choose(len(matches), rate, rng)
    swap = {matches[i].start() for i in chosen}

    def replace(m: re.Match) -> str:
        if m.start() not in swap:
            return m.group(0)
        word = m.group(0)
        new = _PRONOUN_SWAP[word.lower()]
        if new != "I" and word[0].isupper():
            new = new.capitalize()
        return new

    return _PRONOUN.sub(replace, text), len(swap), len(matches)


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.findall(text.strip()) if s.strip()]


def _trailing_space(sentence: str) -> str:
    return sentence[len(sentence.rstrip()):]


def shuffle_sentences(text: str, rate: float, rng: random.Random) -> tuple[str, int, int]:
    sents = _sentences(text)
    n = len(sents)
    k = min(n, max(2, round(rate * n))) if n >= 2 and rate > 0 else 0
    if k < 2:
        return text, 0, n
    chosen = sorted(rng.sample(range(n), k))
    # A cyclic shift of a random order of the chosen positions moves every chosen sentence.
    order = chosen[:]
    rng.shuffle(order)
    target = order[1:] + order[:1]
    new = sents[:]
    for src, dst in zip(order, target, strict=True):
        new[dst] = sents[src]
    # each position keeps its own trailing whitespace (paragraph breaks stay where they were), so
    # the variant differs from the clean text only by the moved sentences
    return " " + "".join(s.strip() + _trailing_space(sents[i]) for i, s in enumerate(new)), k, n


def shuffle_words(text: str, rate: float, rng: random.Random) -> tuple[str, int, int]:
    sents = _sentences(text)
    eligible = [i for i, sent in enumerate(sents) if len(set(sent.split())) > 1]
    chosen = {eligible[j] for j in _choose(len(eligible), rate, rng)}
    out = []
    for i, sent in enumerate(sents):
        if i not in chosen:  # untouched sentences stay verbatim (layout included)
            out.append(sent)
            continue
        words = sent.split()
        shuffled = words[:]
        while shuffled == words:  # terminates: the sentence has two different words
            rng.shuffle(shuffled)
        out.append(" ".join(shuffled) + _trailing_space(sent))
    return " " + "".join(out), len(chosen), len(eligible)


CORRUPTIONS = {
    "drop_articles": drop_articles,
    "swap_pronoun_case": swap_pronoun_case,
    "shuffle_sentences": shuffle_sentences,
    "shuffle_words": shuffle_words,
}


def make_variants(
    stories: list[str], *, rates: tuple[float, ...] = DEFAULT_RATES, corruptions: tuple[str, ...] | None = None, seed: int = 0
) -> list[Variant]:
    """Clean + corrupted variants of each story (corruption applied to the continuation only)."""
    names = tuple(corruptions or CORRUPTIONS)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise UserError(f"unknown corruption(s) {unknown}; known: {', '.join(CORRUPTIONS)}")
    if not rates or any(not 0 < r <= 1 for r in rates):
        raise UserError(f"corruption rates must be in (0, 1], got {rates}")
    if not stories:
        raise UserError("no stories to validate with")
    variants = []
    for i, story in enumerate(stories):
        story_id = f"story-{i + 1:04d}"
        beginning, continuation = split_story(story)
        variants.append(Variant(story_id, CLEAN, 0.0, 0.0, 0, beginning, continuation))
        for name in names:
            for rate in rates:
                rng = random.Random(f"{seed}:{story_id}:{name}:{rate}")
                text, changed, candidates = CORRUPTIONS[name](continuation, rate, rng)
                realized = changed / candidates if candidates else math.nan
                variants.append(Variant(story_id, name, float(rate), realized, candidates, beginning, text))
    return variants


def variant_items(variants: list[Variant], repeats: int = 1) -> list[JudgeItem]:
    items = []
    for v in variants:
        meta = {
            "checkpoint": "validation",
            "checkpoint_id": "validation",
            "story_id": v.story_id,
            "prompt_id": f"{v.story_id}:{v.corruption}:{v.rate}",
            "corruption": v.corruption,
            "rate": v.rate,
            "realized_rate": v.realized_rate,
            "n_candidates": v.n_candidates,
            "prompt": v.beginning,
            "completion": v.continuation,
        }
        for r in range(repeats):
            items.append(JudgeItem(prompt=v.beginning, completion=v.continuation, repeat=r, meta=meta))
    return items


@dataclass
class ValidationSet:
    """The stories a validity check judges: a seeded sample of a corpus and its corrupted variants."""

    corpus: str
    n_corpus_stories: int  # usable stories in the corpus, before the sample
    stories: list[str]
    rates: tuple[float, ...]
    sample_seed: int
    variants: list[Variant]
    match: dict[str, str]

    @property
    def n_stories(self) -> int:
        return len(self.stories)

    def config(self) -> dict[str, Any]:
        """What meta.json records of the sample (the `config` of a validity run)."""
        return {"rates": self.rates, "match": self.match, "n_stories": self.n_stories,
                "n_corpus_stories": self.n_corpus_stories}


def validation_set(rubric: Rubric, corpus: str | os.PathLike | None, *, data_dir: str | os.PathLike | None = None,
                   rates: tuple[float, ...] = DEFAULT_RATES, limit: int = 0, seed: int = 0) -> ValidationSet:
    """Real stories (default: the shared TinyStories subset), a seeded sample of `limit` of them
    (0 = all), and their corruptions at `rates`."""
    from corpora.documents import read_documents
    from corpora.paths import find_data_dir

    if corpus is None:
        corpus = find_data_dir(data_dir) / "tinystories" / "tinystories_subset.jsonl"
    docs = [d for d in read_documents(corpus) if usable_story(d)]
    if not docs:
        raise UserError(f"no story in {corpus} is long enough to validate with")
    n_corpus = len(docs)
    if limit and limit < len(docs):
        # a seeded shuffle, then the first N: a smaller sample is a prefix of a larger one (same seed)
        order = list(range(len(docs)))
        random.Random(seed).shuffle(order)
        docs = [docs[i] for i in order[:limit]]
    check_match(rubric, DEFAULT_MATCH)
    variants = make_variants(docs, rates=tuple(rates), seed=seed)
    return ValidationSet(corpus=str(corpus), n_corpus_stories=n_corpus, stories=docs, rates=tuple(rates),
                         sample_seed=seed, variants=variants, match=dict(DEFAULT_MATCH))


def check_match(rubric: Rubric, match: dict[str, str]) -> None:
    for corruption, dim in match.items():
        if dim not in rubric.dimension_names:
            raise UserError(
                f"validation maps {corruption} to dimension {dim!r}, which rubric {rubric.id} lacks "
                f"(has: {', '.join(rubric.dimension_names)})"
            )


@dataclass
class ValidationReport:
    """`pairs`: one row per corruption and rate (clean vs corrupted on the matching dimension).
    `trend`: one row per corruption, Spearman between rate (clean = 0) and grade."""

    pairs: pd.DataFrame
    trend: pd.DataFrame


def validation_report(stories: pd.DataFrame, match: dict[str, str] | None = None, *, seed: int = 0) -> ValidationReport:
    """Rank agreement per corruption and rate. `stories`: one row per (story_id, corruption, rate)
    with the repeat-averaged grades (scoring.story_scores over the validation judgment table)."""
    match = match or DEFAULT_MATCH
    pair_rows: list[dict[str, Any]] = []
    trend_rows: list[dict[str, Any]] = []
    clean = stories[stories["corruption"] == CLEAN].set_index("story_id")
    for corruption, dim in match.items():
        sub = stories[stories["corruption"] == corruption]
        if sub.empty:
            continue
        for rate, part in sub.groupby("rate", sort=True):
            part = part.set_index("story_id")
            both = part[[dim, "realized_rate"]].join(clean[[dim]].rename(columns={dim: f"{dim}_clean"}), how="inner")
            both = both.dropna(subset=[dim, f"{dim}_clean"])
            diff = (both[f"{dim}_clean"] - both[dim]).to_numpy(dtype=float)
            n = len(diff)
            wins, ties, losses = int((diff > 0).sum()), int((diff == 0).sum()), int((diff < 0).sum())
            p_sign = stats.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue if wins + losses else math.nan
            low, high = bootstrap_ci(diff, seed=seed)
            pair_rows.append({
                "corruption": corruption, "dimension": dim, "rate": float(rate),
                "realized_rate_mean": float(both["realized_rate"].mean()) if n else math.nan,
                "n_pairs": n, "clean_higher": wins, "ties": ties, "corrupted_higher": losses,
                "share_clean_higher": wins / n if n else math.nan,
                "sign_test_p": float(p_sign),
                "mean_drop": float(diff.mean()) if n else math.nan, "drop_ci_low": low, "drop_ci_high": high,
            })
        both = pd.concat([stories[stories["corruption"] == CLEAN], sub])[["rate", dim]].dropna()
        rho = p = math.nan
        if len(both) >= 3 and both[dim].nunique() > 1:
            corr = spearman(both["rate"].to_numpy(float), both[dim].to_numpy(float))
            rho, p = corr.rho, corr.p
        trend_rows.append({"corruption": corruption, "dimension": dim, "spearman_rate_vs_grade": float(rho),
                           "spearman_p": float(p), "n": int(len(both))})
    return ValidationReport(pairs=pd.DataFrame(pair_rows), trend=pd.DataFrame(trend_rows))


def realized_rates_table(variants: list[Variant]) -> pd.DataFrame:
    return pd.DataFrame([
        {"story_id": v.story_id, "corruption": v.corruption, "rate": v.rate, "realized_rate": v.realized_rate,
         "n_candidates": v.n_candidates}
        for v in variants
    ])


# --- preference tables shared by the offline judge modes and the judge-free scores ---------------

GOAL_RATE = 1.0
TIE_TOLERANCE = 1e-9
GOAL_SHARE = 0.9  # clean preferred in >= 90% of pairs for each corruption at rate 1.0


def preference_table(pairs: pd.DataFrame, *, seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """One row per (method, score, corruption, rate) from one row per story pair.

    `pairs` columns: method, score, corruption, rate, story_id, diff (> 0: the clean text is preferred;
    for lower-is-better scores diff = corrupted - clean). Gives n, preferred/ties/against, the share
    of pairs where clean is preferred with its Wilson 95% CI, a one-sided sign test, the mean diff with
    a bootstrap 95% CI over stories, d_z (mean / sd of the diffs) and whether the goal is met
    (share >= 0.9 at rate 1.0; empty at other rates)."""
    from evalsuite.stats import bootstrap_ci as stats_bootstrap
    from evalsuite.stats import wilson_ci

    rows = []
    keys = ["method", "score", "corruption", "rate"]
    for key, part in pairs.dropna(subset=["diff"]).groupby(keys, sort=True):
        diff = part["diff"].to_numpy(dtype=float)
        # the same numbers summed in another order (shuffled sentences) differ by float dust: a tie
        diff = np.where(np.abs(diff) < TIE_TOLERANCE, 0.0, diff)
        n = len(diff)
        wins, ties, losses = int((diff > 0).sum()), int((diff == 0).sum()), int((diff < 0).sum())
        p_sign = stats.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue if wins + losses else math.nan
        lo, hi = wilson_ci(wins, n)
        ci = stats_bootstrap(diff, n_boot=n_boot, seed=seed)
        sd = float(diff.std(ddof=1)) if n > 1 else math.nan
        share = wins / n if n else math.nan
        rate = float(key[3])
        rows.append({
            **dict(zip(keys, key, strict=True)), "n_pairs": n, "clean_preferred": wins, "ties": ties,
            "corrupted_preferred": losses, "share_clean_preferred": share, "share_ci_low": lo, "share_ci_high": hi,
            "sign_test_p": float(p_sign), "mean_diff": ci.estimate, "diff_ci_low": ci.ci_low, "diff_ci_high": ci.ci_high,
            "d_z": ci.estimate / sd if sd and sd > 0 else math.nan,
            "meets_goal": (share >= GOAL_SHARE) if rate == GOAL_RATE else None,
        })
    table = pd.DataFrame(rows)
    if not table.empty:
        from evalsuite.stats import adjust_pvalues

        # many scores x corruptions x rates: "separates" survives a BH false-discovery adjustment
        table["sign_test_p_adj"] = adjust_pvalues(table["sign_test_p"].to_numpy(float), "bh")
        table["separates"] = (table["sign_test_p_adj"] < 0.05) & (table["diff_ci_low"] > 0)
    return table


def method_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Per method: passes = for every corruption at rate 1.0, clean is preferred in >= 90% of pairs
    (on the score that matches the corruption); beats_chance = every such sign test has p < 0.05."""
    rows = []
    for method, part in table.groupby("method", sort=True):
        at_goal = part[part["rate"] == GOAL_RATE]
        worst = at_goal.loc[at_goal["share_clean_preferred"].idxmin()] if not at_goal.empty else None
        rows.append({
            "method": method, "scores": ",".join(sorted(part["score"].unique())),
            "n_corruptions": int(at_goal["corruption"].nunique()),
            "passes": bool(len(at_goal) and at_goal["meets_goal"].astype(bool).all()),
            "beats_chance": bool(len(at_goal) and (at_goal["sign_test_p"] < 0.05).all()),
            "worst_corruption": worst["corruption"] if worst is not None else None,
            "worst_share": float(worst["share_clean_preferred"]) if worst is not None else math.nan,
            "n_pairs_min": int(at_goal["n_pairs"].min()) if not at_goal.empty else 0,
        })
    return pd.DataFrame(rows)


def clean_by_story(variants: list[Variant]) -> dict[str, Variant]:
    return {v.story_id: v for v in variants if v.corruption == CLEAN}


def offline_pairs(variants: list[Variant], scorer: Any, mode: str, match: dict[str, str] | None = None,
                  *, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-variant scores, per-pair diffs) of one offline judge mode (evalsuite.judge.offline) over the
    validation variants. loglik: diff = bpc(corrupted) - bpc(clean); yesno: P(yes | clean) -
    P(yes | corrupted) on the matching dimension; pairwise: preference for clean - 0.5 (both orders)."""
    match = match or DEFAULT_MATCH
    clean = clean_by_story(variants)
    todo = [v for v in variants if v.corruption in match or v.corruption == CLEAN]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"offline judge ({mode})", unit="text")
    scores: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    for v in todo:
        base = {"method": f"offline:{mode}", "story_id": v.story_id, "corruption": v.corruption, "rate": v.rate}
        if mode == "loglik":
            s = scorer.loglik(v.beginning, v.continuation)
            scores.append({**base, "score": "judge_bpc", "value": s["bpc"], "n_tokens": s["n_tokens"]})
        elif mode == "yesno":
            dims = sorted(set(match.values())) if v.corruption == CLEAN else [match[v.corruption]]
            for dim in dims:
                s = scorer.yes_probability(v.beginning, v.continuation, dim)
                scores.append({**base, "score": f"p_yes_{dim}", "value": s["p_yes"], "mass": s["mass"]})
        elif mode == "pairwise":
            if v.corruption != CLEAN:
                dim = match[v.corruption]
                ref = clean[v.story_id]
                s = scorer.preference(v.beginning, ref.continuation, v.continuation, dim)
                pairs.append({**base, "score": f"pref_clean_{dim}", "diff": s["pref_first"] - 0.5,
                              "position_bias": s["position_bias"]})
        else:
            raise UserError(f"unknown offline judge mode {mode!r}")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    frame = pd.DataFrame(scores)
    if mode != "pairwise" and not frame.empty:
        lower_better = mode == "loglik"
        for row in frame[frame["corruption"] != CLEAN].itertuples():
            ref = frame[(frame["story_id"] == row.story_id) & (frame["corruption"] == CLEAN)
                        & (frame["score"] == row.score)]
            if ref.empty:
                continue
            c = float(ref["value"].iloc[0])
            diff = (row.value - c) if lower_better else (c - row.value)
            pairs.append({"method": row.method, "story_id": row.story_id, "corruption": row.corruption,
                          "rate": row.rate, "score": row.score, "diff": diff})
    return frame, pd.DataFrame(pairs)

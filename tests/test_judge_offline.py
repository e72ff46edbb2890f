"""Offline judge modes: scoring arithmetic, both-order pairwise, caching, the validity pipeline;
and, where the `.[judge]` extra is installed, the real model's forced decoding and first-token probabilities."""

from __future__ import annotations

import math
import re

import pytest

from evalsuite.judge.cache import JudgeCache
from evalsuite.judge.local_model import INSTALL_HINT, local_judge_installed
from evalsuite.judge.offline import OfflineConfig, OfflineScorer, clip_text, option_mass, score_stories
from evalsuite.judge.validate import make_variants, method_verdicts, offline_pairs, preference_table

STORY = ("Once upon a time, there was a little girl named Lily. She had a red ball. She played with the ball "
         "in the park every day. One day the ball rolled away, and a kind dog brought it back. Lily was happy "
         "and said thank you to the dog. Then they played together until the sun went down.")


def has_the(text: str) -> bool:
    return re.search(r"\bthe\b", text, flags=re.IGNORECASE) is not None


class CountingBackend:
    """A deterministic stand-in for the local model's two probability calls: each character of a text
    costs log-prob -1, plus -5 per article-less noun phrase marker ("dog." without "the"); yes/no and A/B
    answers favour the text with more articles, and A is favoured by a fixed position bias."""

    def __init__(self):
        self.forced = 0
        self.next = 0

    def forced_logprobs(self, prompt: str, text: str) -> list[float]:
        self.forced += 1
        return [-1.0 - 4.0 * (not has_the(text))] * max(1, len(text) // 4)

    def next_token_logprobs(self, messages, top=20):
        self.next += 1
        user = messages[-1]["content"].split("\n\nQuestion:")[0]
        if "written by a student:" in user:
            p_yes = 0.9 if has_the(user.split("student:")[1]) else 0.4
            return [("Yes", math.log(p_yes)), ("No", math.log(1 - p_yes)), (" yes", math.log(1e-4))]
        a, b = user.split("Continuation A:")[1].split("Continuation B:")
        pa = (0.5 + 0.3 * (has_the(a) - has_the(b))) + 0.1  # +0.1: position bias towards A
        return [("A", math.log(pa)), ("B", math.log(1 - pa))]


@pytest.fixture
def scorer(tmp_path):
    with JudgeCache(tmp_path / "c.sqlite") as cache:
        yield OfflineScorer(CountingBackend(), cache, "counting", OfflineConfig(max_chars=120))


def test_clip_and_option_mass():
    assert clip_text("one two three", 9) == "one two" and clip_text("short", 100) == "short"
    mass = option_mass([("Yes", math.log(0.5)), (" yes", math.log(0.1)), ("No", math.log(0.2)), ("x", 0.0)],
                       ("Yes", "No"))
    assert mass["Yes"] == pytest.approx(0.6) and mass["No"] == pytest.approx(0.2)


def test_loglik_is_bits_per_character_and_cached(scorer):
    first = scorer.loglik("Once upon a time", " the dog ran to the park.")
    n_tok = len(" the dog ran to the park.") // 4
    assert first["n_tokens"] == n_tok and first["bpc"] == pytest.approx(n_tok / (25 * math.log(2)))
    bare = scorer.loglik("Once upon a time", " dog ran to park.")
    assert bare["bpc"] == pytest.approx(5 * (len(" dog ran to park.") // 4) / (17 * math.log(2)))
    again = scorer.loglik("Once upon a time", " the dog ran to the park.")
    assert scorer.backend.forced == 2 and again["bpc"] == first["bpc"] and scorer.n_cached == 1


def test_pairwise_cancels_position_bias(scorer):
    s = scorer.preference("Once", " the dog ran.", " dog ran.", "grammar")
    # as A: 0.5 + 0.3 + 0.1 = 0.9; as B: 1 - (0.5 - 0.3 + 0.1) = 0.7; the mean 0.8 has no position term
    assert s["pref_first_as_a"] == pytest.approx(0.9) and s["pref_first_as_b"] == pytest.approx(0.7)
    assert s["pref_first"] == pytest.approx(0.8) and s["position_bias"] == pytest.approx(0.1)
    assert scorer.backend.next == 2  # both orders asked


def test_offline_pairs_feed_the_validity_table(scorer):
    variants = make_variants([STORY, STORY.replace("Lily", "Anna")], rates=(1.0,), corruptions=("drop_articles",))
    for mode in ("loglik", "yesno", "pairwise"):
        _, pairs = offline_pairs(variants, scorer, mode)
        table = preference_table(pairs)
        row = table.iloc[0]
        assert row.n_pairs == 2 and row.clean_preferred == 2, mode  # articles dropped: clean wins each time
        assert bool(method_verdicts(table).iloc[0].passes)


def test_score_stories_handles_empty_continuations(scorer):
    frame = score_stories(scorer, "yesno", ["Once", "Once"], [" the dog ran.", "   "])
    assert frame.loc[0, "p_yes_grammar"] == pytest.approx((0.9 + 1e-4) / (1 + 1e-4)) and math.isnan(frame.loc[1, "p_yes_grammar"])


@pytest.mark.slow
@pytest.mark.skipif(not local_judge_installed(), reason=f"the local judge is not installed ({INSTALL_HINT})")
def test_real_model_forced_decoding_and_first_token_probabilities(tmp_path):
    from evalsuite.judge.local_model import DEFAULT_SPEC, XLlamaCppBackend, ensure_local_gguf
    from evalsuite.judge.offline import yesno_messages

    gguf = ensure_local_gguf(DEFAULT_SPEC, cache_root=tmp_path)  # assembled and verified here, removed below
    backend = XLlamaCppBackend(gguf, model_name=DEFAULT_SPEC.name, n_ctx=512)
    try:
        text = " She had a red ball."
        lps = backend.forced_logprobs("Once upon a time, there was a girl named Lily.", text)
        assert 3 <= len(lps) <= len(text) and all(lp <= 0 for lp in lps)
        shuffled = backend.forced_logprobs("Once upon a time, there was a girl named Lily.", " ball had red a She.")
        assert sum(shuffled) < sum(lps)  # the model finds word salad less likely
        top = backend.next_token_logprobs(yesno_messages("Once upon a time", text, "grammar"), 10)
        mass = option_mass(top, ("Yes", "No"))
        assert 0.5 < mass["Yes"] + mass["No"] <= 1.0 + 1e-6
    finally:
        backend.close()
        gguf.unlink(missing_ok=True)  # 1.1 GB


def _assert_every_column_described(columns: dict, frames: dict) -> None:
    for name, frame in frames.items():
        assert list(columns[name]) == list(frame.columns), name  # every column, in table order
        assert all(e["definition"] and e["computed_by"].split(".")[0] in ("evalsuite", "corpora", "trainers") for e in columns[name].values())


def test_validity_meta_describes_every_column_of_every_mode(scorer):
    """The offline validity tables of all three modes plus the judge-free scores: meta.json names every column
    (value / n_tokens / mass of the scores, position_bias of the pairs, n_words of the free scores)."""
    import pandas as pd

    from evalsuite.judge.free_scores import free_score_pairs, free_scores_table
    from evalsuite.judge.offline_eval import VALIDITY_OUTPUTS, OfflineValidationResult, validity_columns

    variants = make_variants([STORY, STORY.replace("Lily", "Anna")], rates=(1.0,), corruptions=("drop_articles",))
    scores, pairs = [], []
    for mode in ("loglik", "yesno", "pairwise"):
        frame, pair = offline_pairs(variants, scorer, mode)
        scores.append(frame)
        pairs.append(pair)
    free = free_scores_table([v.beginning for v in variants], [v.continuation for v in variants])
    for key in ("story_id", "corruption", "rate"):
        free[key] = [getattr(v, key) for v in variants]
    scores.append(free)
    pairs.append(free_score_pairs(free))
    all_pairs = pd.concat(pairs, ignore_index=True)
    table = preference_table(all_pairs)
    result = OfflineValidationResult(table=table, verdicts=method_verdicts(table), pairs=all_pairs,
                                     scores=pd.concat(scores, ignore_index=True))
    frames = dict(zip(VALIDITY_OUTPUTS, (result.table, result.verdicts, result.pairs, result.scores), strict=True))
    assert {"position_bias", "diff"} <= set(result.pairs.columns) and {"value", "mass", "n_tokens"} <= set(result.scores)
    _assert_every_column_described(validity_columns(result), frames)
    result.scores["unexplained"] = 1.0  # a column nobody defined fails loudly
    with pytest.raises(ValueError, match="unexplained"):
        validity_columns(result)


@pytest.mark.parametrize("mode", ["loglik", "yesno"])
def test_offline_scoring_meta_describes_every_column(scorer, tmp_path, mode):
    """Samples scored by loglik / yesno: free_story_scores (story fields, free scores, judge_bpc or p_yes_*),
    free_scores and summary (checkpoint facts included) are fully described in meta.json."""
    from evalsuite.judge.client import JudgeItem
    from evalsuite.judge.free_scores import free_scores_summary, free_scores_table
    from evalsuite.judge.offline_eval import OfflineScoringResult, _scoring_meta, judge_summary, story_frame
    from evalsuite.results import validate_meta

    samples = tmp_path / "s.jsonl"
    samples.write_text("{}\n", encoding="utf-8")
    items = [JudgeItem(prompt="Once upon a time", completion=c, meta={
        "checkpoint_id": ck, "checkpoint": f"runs/{ck}", "story": f"p{i}#0", "prompt_id": f"p{i}",
        "model_family": "spinnet", "val_loss": 1.5, "val_bpc": 0.6, "tokens_seen": 1000})
        for ck in ("a", "b") for i, c in enumerate((" the dog ran to the park.", " dog ran to park.", " the cat sat."))]
    text = story_frame(items)
    stories = text.drop(columns=["prompt", "completion"]).join(
        free_scores_table(list(text["prompt"]), list(text["completion"])))
    judged = score_stories(scorer, mode, list(text["prompt"]), list(text["completion"]))
    stories = stories.join(judged)
    summary = judge_summary(stories, list(judged.columns), n_bootstrap=200)
    result = OfflineScoringResult(mode=mode, stories=stories, free=free_scores_summary(stories, ["checkpoint_id"]),
                                  summary=summary)
    meta = _scoring_meta(result, {"samples_files": [str(samples)], "generated": []}, 200, 0, {})
    assert validate_meta(meta) == []
    _assert_every_column_described(meta["columns"], {"free_story_scores.csv": result.stories,
                                                     "free_scores.csv": result.free, "summary.csv": summary})
    assert {"val_bpc", "tokens_seen", "model_family"} <= set(meta["columns"]["summary.csv"])

"""Judge-free scores: each definition on hand-made text, the clean-vs-corrupted tables, the CLI paths."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from evalsuite.cli import main
from evalsuite.judge.free_scores import (
    FREE_SCORES,
    free_score_pairs,
    free_scores_summary,
    free_scores_table,
    repeated_ngram_share,
)
from evalsuite.judge.validate import method_verdicts, preference_table

BEGIN = "Once upon a time, Tom and Lily went to the park."
CLEAN = " Tom saw a big dog. The dog was happy. Lily laughed and they played."


def run_cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def test_repeated_ngram_share():
    assert repeated_ngram_share(["a", "b", "c", "a", "b", "c"]) == pytest.approx(1 - 3 / 4)
    assert repeated_ngram_share(["a", "b", "c", "d"]) == 0.0
    assert math.isnan(repeated_ngram_share(["a", "b"]))


@pytest.mark.slow  # the first spaCy + name-list load of the session
def test_each_score_moves_with_its_own_fault():
    texts = {
        "clean": CLEAN,
        "no_articles": " Tom saw big dog. Dog was happy. Lily laughed and they played.",
        "repeats": " Tom saw a big dog the dog the dog ran away. Tom saw a big dog. Tom saw a big dog.",
        "new_names": " Sam saw a big dog. The dog was happy. Max laughed and they played.",
        "hard_words": " Tom perceived an enormous canine. The animal was jubilant. Lily chuckled.",
        "pronoun_break": " She saw a big dog. She was happy. She laughed and played.",
    }
    frame = free_scores_table([BEGIN] * len(texts), list(texts.values())).set_index(pd.Index(list(texts)))
    clean = frame.loc["clean"]
    assert clean["grammar_errors_per_100w"] == 0 and clean["repeated_3gram_share"] == 0
    assert clean["names_kept"] == 1.0  # Tom and Lily both come back
    assert frame.loc["no_articles", "grammar_errors_per_100w"] > 0
    assert frame.loc["no_articles", "n_words"] == 12
    assert frame.loc["repeats", "repeated_3gram_share"] > 0.2
    assert frame.loc["repeats", "immediate_repetitions_per_100w"] > 0
    assert frame.loc["new_names", "names_kept"] == 0.0
    assert frame.loc["hard_words", "mean_aoa_years"] > clean["mean_aoa_years"] + 1
    # "Lily" is the beginning's only female candidate, so "She" has an antecedent; with no woman it would not
    no_woman = free_scores_table(["Once upon a time, Tom went to the park."], [texts["pronoun_break"]])
    assert no_woman.loc[0, "pronoun_breaks_per_100w"] > 0
    assert frame.loc["pronoun_break", "pronoun_breaks_per_100w"] == 0


def test_pairs_are_oriented_so_that_positive_favours_clean():
    frame = free_scores_table([BEGIN, BEGIN], [CLEAN, " Tom saw big dog. Dog was happy. Lily laughed and they played."])
    frame["story_id"] = ["s1", "s1"]
    frame["corruption"] = ["clean", "drop_articles"]
    frame["rate"] = [0.0, 1.0]
    pairs = free_score_pairs(frame)
    assert set(pairs["score"]) == set(FREE_SCORES)
    grammar = pairs[pairs["score"] == "grammar_errors_per_100w"]["diff"].iloc[0]
    assert grammar > 0  # more errors in the corrupted text favours clean


def test_preference_table_counts_ci_and_goal():
    rows = [{"method": "m", "score": "s", "corruption": "c", "rate": 1.0, "story_id": f"s{i}", "diff": d}
            for i, d in enumerate([1, 2, 0.5, 1, -1, 0, 3, 1, 1, 2])]
    rows += [{"method": "m", "score": "s", "corruption": "c", "rate": 0.5, "story_id": f"s{i}", "diff": 1.0}
             for i in range(4)]
    table = preference_table(pd.DataFrame(rows), seed=0)
    top = table[table["rate"] == 1.0].iloc[0]
    assert (top.n_pairs, top.clean_preferred, top.ties, top.corrupted_preferred) == (10, 8, 1, 1)
    assert top.share_clean_preferred == 0.8 and not top.meets_goal
    assert top.share_ci_low < 0.8 < top.share_ci_high
    assert top.mean_diff == pytest.approx(1.05) and top.diff_ci_low < 1.05 < top.diff_ci_high
    assert table[table["rate"] == 0.5].iloc[0]["meets_goal"] is None  # the goal is set at rate 1.0 only
    verdict = method_verdicts(table).iloc[0]
    assert not verdict.passes and verdict.worst_share == 0.8


def test_summary_has_bootstrap_cis_per_checkpoint():
    frame = free_scores_table([BEGIN] * 4, [CLEAN, CLEAN, " Tom saw big dog.", " Dog was happy ran."])
    frame["checkpoint_id"] = ["a", "a", "b", "b"]
    summary = free_scores_summary(frame, ["checkpoint_id"], n_boot=200)
    assert set(summary["score"]) == set(FREE_SCORES) and set(summary["n_stories"]) <= {1, 2}
    a = summary[(summary.checkpoint_id == "a") & (summary.score == "grammar_errors_per_100w")].iloc[0]
    assert a["mean"] == 0 and a["ci_low"] == 0 and a["ci_high"] == 0  # constant data: a point interval


def test_free_scores_beside_the_rubric_and_alone(tmp_path, capsys):
    from judge_scripted import ScriptedBackend

    from evalsuite.judge.server import ChatServer

    samples = tmp_path / "s.jsonl"
    rows = [{"prompt_id": f"p{i}", "prompt": BEGIN, "completion": CLEAN if i % 2 else " Tom saw big dog. Dog ran.",
             "checkpoint_id": "ck"} for i in range(4)]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ChatServer(ScriptedBackend()) as server:
        assert run_cli(["gpt-eval", str(samples), "--base-url", server.base_url, "--model", "scripted-judge",
                        "--cache", str(tmp_path / "c.sqlite"), "--out", str(tmp_path / "out"), "--no-progress",
                        "--n-bootstrap", "200"]) == 0
    free = pd.read_csv(tmp_path / "out" / "free_scores.csv")
    assert set(free["score"]) == set(FREE_SCORES) and (free["n_stories"] <= 4).all()
    stories = pd.read_csv(tmp_path / "out" / "free_story_scores.csv")
    assert len(stories) == 4 and stories["grammar_errors_per_100w"].iloc[0] > 0
    # judge-free only: no judge needed at all
    assert run_cli(["gpt-eval", str(samples), "--judge-mode", "free", "--no-local-judge", "--out",
                    str(tmp_path / "free"), "--no-progress", "--n-bootstrap", "200"]) == 0
    meta = json.loads((tmp_path / "free" / "meta.json").read_text())
    assert meta["columns"]["free_scores.csv"]["ci_low"]["computed_by"] == "evalsuite.stats.bootstrap_ci"
    assert pd.read_csv(tmp_path / "free" / "free_scores.csv").equals(free)


def test_validate_free_scores_on_the_tinystories_subset(shared_data, tmp_path, capsys):
    out = tmp_path / "v"
    assert run_cli(["gpt-eval", "--validate", "--judge-mode", "free", "--data-dir", str(shared_data),
                    "--validate-limit", "6", "--rates", "1.0", "--out", str(out), "--no-progress"]) == 0
    table = pd.read_csv(out / "validity.csv")
    assert set(table["corruption"]) == {"drop_articles", "swap_pronoun_case", "shuffle_sentences", "shuffle_words"}
    assert (table["n_pairs"] <= 6).all() and (table["n_pairs"] >= 4).all()
    meta = json.loads((out / "validity_meta.json").read_text())
    assert meta["inputs"][0]["path"].endswith("tinystories_subset.jsonl") and meta["config"]["n_stories"] == 6
    grammar = table[(table.score == "grammar_errors_per_100w") & (table.corruption == "drop_articles")].iloc[0]
    assert grammar.share_clean_preferred >= 0.5  # the article detector sees dropped articles

"""Statistics of gpt-eval: bootstrap CIs, ICC, test-retest, summaries with failures, logprob grades."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from evalsuite.judge.client import JudgeItem, JudgeResult
from evalsuite.judge.evaluate import score_run
from evalsuite.judge.rubric import load_rubric
from evalsuite.judge.scoring import bootstrap_ci, icc_oneway, logprob_expected_scores

RUBRIC = load_rubric("tinystories_gpt_eval")


def test_bootstrap_ci_width_and_centre():
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 1.0, size=400)
    low, high = bootstrap_ci(x, n_resamples=4000, seed=0)
    assert low < x.mean() < high
    normal_width = 2 * 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert (high - low) == pytest.approx(normal_width, rel=0.15)


def test_bootstrap_ci_coverage():
    rng = np.random.default_rng(2)
    hits = 0
    trials = 150
    for t in range(trials):
        x = rng.normal(0.0, 1.0, size=40)
        low, high = bootstrap_ci(x, n_resamples=1000, seed=t)
        hits += low <= 0.0 <= high
    assert 0.86 <= hits / trials <= 0.99  # ~95% nominal; the percentile bootstrap runs a bit narrow at n=40


def test_bootstrap_ci_degenerate_inputs():
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([3.0])))
    assert bootstrap_ci(np.array([4.0, 4.0, 4.0])) == (4.0, 4.0)
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([np.nan, 2.0])))


def test_icc_matches_shrout_fleiss_example():
    # Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges; ICC(1,1) = 0.17.
    data = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)
    res = icc_oneway(data)
    assert res["icc"] == pytest.approx(0.17, abs=0.005)
    assert res["icc_ci_low"] < res["icc"] < res["icc_ci_high"]
    assert res["icc_ci_low"] == pytest.approx(-0.13, abs=0.02)  # exact F-based interval
    assert res["icc_ci_high"] == pytest.approx(0.72, abs=0.02)


def test_icc_perfect_and_noise():
    stories = np.arange(10, dtype=float)
    assert icc_oneway(np.column_stack([stories, stories, stories]))["icc"] == 1.0
    rng = np.random.default_rng(3)
    noise = rng.normal(size=(60, 2))
    res = icc_oneway(noise)
    assert abs(res["icc"]) < 0.3 and res["icc_ci_low"] < 0 < res["icc_ci_high"]


def result(ck: str, story: str, repeat: int, scores: dict | None, status: str = "ok") -> JudgeResult:
    item = JudgeItem(prompt="p", completion=f"{ck}-{story}", repeat=repeat, meta={"checkpoint_id": ck, "story": story,
                                                                                  "val_loss": 2.5})
    full = None
    if scores is not None:
        full = {"grammar": 5, "creativity": 5, "consistency": 5, "plot": 5, "age_group": "B", **scores}
    return JudgeResult(item=item, key=f"{ck}{story}{repeat}", status=status, scores=full,
                       error=None if status == "ok" else "invalid reply")


def test_summary_counts_failures_and_averages_repeats_first():
    results = [
        result("a", "s1", 0, {"grammar": 2}), result("a", "s1", 1, {"grammar": 4}),   # story mean 3
        result("a", "s2", 0, {"grammar": 9}), result("a", "s2", 1, None, "invalid"),  # story mean 9 (1 ok)
        result("a", "s3", 0, None, "error"), result("a", "s3", 1, None, "invalid"),   # no score at all
        result("b", "s1", 0, {"grammar": 7, "age_group": "D"}), result("b", "s1", 1, {"grammar": 7}),
    ]
    tables = score_run(results, RUBRIC, n_resamples=500)
    g = tables.summary[(tables.summary.checkpoint_id == "a") & (tables.summary.score == "grammar")].iloc[0]
    assert g["mean"] == pytest.approx(6.0)  # mean of story means (3, 9); failures never become numbers
    assert g["n_stories"] == 2 and g["n_judgments_failed"] == 3
    assert g["val_loss"] == 2.5
    b = tables.summary[(tables.summary.checkpoint_id == "b") & (tables.summary.score == "grammar")].iloc[0]
    assert b["n_stories"] == 1 and math.isnan(b["ci_low"])  # n=1: no interval is claimed
    stories = tables.stories.set_index(["checkpoint_id", "story"])
    assert stories.loc[("a", "s3"), "n_repeats_ok"] == 0 and math.isnan(stories.loc[("a", "s3"), "grammar"])
    cats = tables.categories[(tables.categories.checkpoint_id == "b")].set_index("code")
    assert cats.loc["D", "count"] == 1 and cats.loc["B", "count"] == 1 and cats.loc["D", "share"] == 0.5
    age = tables.summary[(tables.summary.checkpoint_id == "b") & (tables.summary.score == "age_group_index")]
    assert age["mean"].iloc[0] == pytest.approx((4 + 2) / 2)  # D=4, B=2, averaged within the story


def test_test_retest_table():
    grades0 = [1, 2, 3, 4, 5, 6, 7, 8]
    grades1 = [2, 2, 3, 5, 5, 6, 8, 8]
    results = [result("a", f"s{i}", r, {"grammar": g}) for r, gs in enumerate([grades0, grades1])
               for i, g in enumerate(gs)]
    rel = score_run(results, RUBRIC, n_resamples=200).reliability.set_index("score")
    row = rel.loc["grammar"]
    assert row["n_stories"] == 8 and row["k_repeats"] == 2
    assert row["exact_agreement"] == pytest.approx(5 / 8)
    assert row["mean_abs_diff_r01"] == pytest.approx(3 / 8)
    assert 0.9 < row["icc"] <= 1.0 and 0.9 < row["spearman_r01"] <= 1.0
    single = score_run([result("a", "s", 0, {"grammar": 3})], RUBRIC, n_resamples=200).reliability
    assert single.empty  # no agreement claimed from one repeat


def test_logprob_scores_refuse_split_numbers_and_misaligned_tokens():
    text = '{"assessment": "x", "grammar": 10, "creativity": 5, "consistency": 5, "plot": 5, "age_group": "A"}'
    head, rest = text.split("10", 1)
    tokens = [{"token": head, "logprob": 0.0, "top_logprobs": []},
              {"token": "1", "logprob": -0.1, "top_logprobs": [{"token": "1", "logprob": -0.1}]},
              {"token": "0", "logprob": 0.0, "top_logprobs": []},
              {"token": rest, "logprob": 0.0, "top_logprobs": []}]
    out = logprob_expected_scores(text, tokens, RUBRIC)
    assert out["grammar"] is None and "several tokens" in out["grammar_reason"]
    assert out["creativity"] is None  # shares a token with other text
    misaligned = logprob_expected_scores(text + " ", tokens, RUBRIC)
    assert set(misaligned) == {"_note"}


def test_judgment_table_columns():
    tables = score_run([result("a", "s1", 0, {"grammar": 2})], RUBRIC, n_resamples=200)
    assert {"grammar", "creativity", "consistency", "plot", "age_group", "age_group_index", "status",
            "judgment_key"} <= set(tables.judgments.columns)
    assert isinstance(tables.judgments, pd.DataFrame)

"""Validity check: controlled corruptions at known rates, and the rank-agreement report."""

from __future__ import annotations

import random
import re
from collections import Counter

import pandas as pd
import pytest
from judge_scripted import ScriptedBackend

from corpora.documents import read_documents
from evalsuite.cli import main
from evalsuite.judge.server import ChatServer
from evalsuite.judge.validate import (
    CLEAN,
    drop_articles,
    make_variants,
    shuffle_sentences,
    shuffle_words,
    split_story,
    swap_pronoun_case,
    validation_report,
)

STORY = ("Once upon a time there was a little girl named Mia. She had a red kite and an old hat. "
         "One day, Mia took the kite to the hill. The wind was strong! He saw her and she waved at him. "
         "They ran to the park with us. We played until the sun went down. Then Mia went home.")


def words(text: str) -> list[str]:
    return re.findall(r"\S+", text)


def test_drop_articles_rates():
    out, changed, candidates = drop_articles(STORY, 1.0, random.Random(0))
    assert candidates == 9 and changed == 9
    assert not re.search(r"\b(the|a|an)\b", out, flags=re.IGNORECASE)
    out0, changed0, _ = drop_articles(STORY, 0.0, random.Random(0))
    assert out0 == STORY and changed0 == 0
    out_half, changed_half, _ = drop_articles(STORY, 0.5, random.Random(1))
    assert changed_half == round(0.5 * 9)  # exactly the asked share
    assert len(re.findall(r"\b(the|a|an)\b", out_half, flags=re.IGNORECASE)) == 9 - changed_half
    assert drop_articles("A cat.", 0.1, random.Random(0))[1] == 1  # at least one change


def test_swap_pronoun_case():
    out, changed, candidates = swap_pronoun_case("He saw her and she waved at him. They met us.", 1.0, random.Random(0))
    assert out == "Him saw she and her waved at he. Them met we."
    assert changed == candidates == 6


def test_shuffle_sentences_keeps_sentences_and_moves_them():
    _, cont = split_story(STORY)
    out, moved, n = shuffle_sentences(cont, 1.0, random.Random(0))
    before = [s.strip() for s in re.split(r"(?<=[.!?])\s+", cont.strip())]
    after = [s.strip() for s in re.split(r"(?<=[.!?])\s+", out.strip())]
    assert Counter(before) == Counter(after) and moved == n == len(before)
    assert all(a != b for a, b in zip(before, after, strict=True))  # a cyclic shift leaves nothing in place
    out_half, moved_half, n_half = shuffle_sentences(cont, 0.5, random.Random(1))
    assert moved_half == round(0.5 * n_half)
    after_half = [s.strip() for s in re.split(r"(?<=[.!?])\s+", out_half.strip())]
    assert sum(a != b for a, b in zip(before, after_half, strict=True)) == moved_half


def test_shuffle_words_keeps_words():
    out, changed, n = shuffle_words(STORY, 1.0, random.Random(0))
    assert Counter(words(out)) == Counter(words(STORY)) and out.strip() != STORY
    assert changed == n == 8
    _, changed_half, _ = shuffle_words(STORY, 0.5, random.Random(0))
    assert changed_half == round(0.5 * 8)


def test_split_story_and_variants():
    beginning, cont = split_story(STORY)
    assert (beginning + cont).replace(" ", "") == STORY.replace(" ", "")
    assert len(words(beginning)) == max(8, round(0.2 * len(words(STORY))))
    variants = make_variants([STORY, STORY.replace("Mia", "Sam")], rates=(0.5, 1.0))
    assert len(variants) == 2 * (1 + 4 * 2)
    assert all(v.beginning == beginning for v in variants[:9])  # only the continuation is corrupted
    again = make_variants([STORY, STORY.replace("Mia", "Sam")], rates=(0.5, 1.0))
    assert [v.continuation for v in again] == [v.continuation for v in variants]  # seeded
    full = [v for v in variants if v.rate == 1.0 and v.corruption in ("drop_articles", "swap_pronoun_case")]
    assert all(v.realized_rate == 1.0 for v in full)


def test_report_counts_wins_ties_and_trend():
    rows = []
    for i in range(6):
        rows.append({"story_id": f"s{i}", "corruption": CLEAN, "rate": 0.0, "realized_rate": 0.0,
                     "grammar": 8.0, "consistency": 8.0})
        for rate, g in ((0.5, 6.0), (1.0, 3.0)):
            grammar = 8.0 if (i == 0 and rate == 0.5) else g  # one tie
            rows.append({"story_id": f"s{i}", "corruption": "drop_articles", "rate": rate, "realized_rate": rate,
                         "grammar": grammar, "consistency": 8.0})
    report = validation_report(pd.DataFrame(rows), {"drop_articles": "grammar"})
    half = report.pairs.set_index("rate").loc[0.5]
    assert half["n_pairs"] == 6 and half["clean_higher"] == 5 and half["ties"] == 1 and half["corrupted_higher"] == 0
    assert half["share_clean_higher"] == pytest.approx(5 / 6)
    assert half["sign_test_p"] == pytest.approx(1 / 32)  # 5 of 5 non-tied pairs, one-sided
    full = report.pairs.set_index("rate").loc[1.0]
    assert full["mean_drop"] == pytest.approx(5.0) and full["share_clean_higher"] == 1.0
    trend = report.trend.iloc[0]
    assert trend["spearman_rate_vs_grade"] < -0.8 and trend["n"] == 18


def test_validate_cli_with_a_judge_that_prefers_clean_text(tmp_path, capsys, shared_data):
    corpus = shared_data / "tinystories" / "tinystories_sample.txt"
    docs = read_documents(corpus)
    assert len(docs) == 5
    clean = {split_story(d)[1] for d in docs}

    def grades(completion: str) -> dict:
        g = 9 if completion in clean else 3
        return {"assessment": "scripted", "grammar": g, "creativity": 5, "consistency": g, "plot": g, "age_group": "C"}

    backend = ScriptedBackend(grades=grades)
    out = tmp_path / "val"
    with ChatServer(backend) as server:
        with pytest.raises(SystemExit) as exit_info:
            main(["gpt-eval", "--validate", "--corpus", str(corpus), "--base-url", server.base_url, "--model", "s",
                  "--cache", str(tmp_path / "c.sqlite"), "--out", str(out), "--no-progress", "--rates", "0.5,1.0",
                  "--n-bootstrap", "500", "--concurrency", "4"])
        assert exit_info.value.code == 0
        assert server.requests_seen == 5 * (1 + 4 * 2)  # every variant differs from the clean text
    pairs = pd.read_csv(out / "validation_pairs.csv")
    assert set(pairs.corruption) == {"drop_articles", "swap_pronoun_case", "shuffle_sentences", "shuffle_words"}
    assert (pairs.n_pairs == 5).all() and (pairs.share_clean_higher == 1.0).all()
    assert set(pairs.loc[pairs.corruption == "shuffle_sentences", "dimension"]) == {"consistency"}
    trend = pd.read_csv(out / "validation_trend.csv")
    assert (trend.spearman_rate_vs_grade < 0).all() and (trend.n == 15).all()
    assert (out / "validation_meta.json").is_file() and (out / "validation_pairs.parquet").is_file()
    printed = capsys.readouterr().out
    assert "validity:" in printed and "5/5" in printed


def test_shuffles_change_only_the_chosen_sentences_and_keep_the_layout():
    """A variant must differ from the clean text by the corruption alone: paragraph breaks and the
    sentences that were not chosen stay as they were (a judge must not be able to tell the variant
    by its lost line breaks)."""
    text = " Tom ran to the park. He saw a big dog.\n\nThe dog was very big. Tom smiled at it.\nThey played all day."
    clean_sents = ["Tom ran to the park.", "He saw a big dog.", "The dog was very big.", "Tom smiled at it.",
                   "They played all day."]
    for seed in range(5):
        out, changed, n = shuffle_words(text, 0.2, random.Random(seed))
        assert changed == 1 and n == 5
        assert out.count("\n\n") == 1 and out.count("\n") == 3
        assert sum(s in out for s in clean_sents) == 4  # the other four sentences verbatim
        out_s, moved, n_s = shuffle_sentences(text, 1.0, random.Random(seed))
        assert moved == n_s == 5
        assert [m.start() for m in re.finditer("\n", out_s)] != [] and out_s.count("\n") == 3
        assert Counter(re.split(r"(?<=[.!?])\s+", out_s.strip())) == Counter(clean_sents)

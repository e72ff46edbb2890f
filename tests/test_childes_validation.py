"""Detectors against the humans and against known injected error rates, on real data.

1. Brown: precision/recall of the detectors against the transcribers' `[* ...]` and `[/]` codes on
   the six transcripts with the most error codes (the full 75-file numbers are in the benchmark and
   the command's validation.csv), and MLU from our parse vs MLU from %mor on the same files.
   Floors are set from the measurement on these files (see each assert), never below 0.5.
2. TinyStories: controlled corruptions at rates 0, 0.1, 0.2, 0.4; each detector's measured rate
   must track the injected rate with a slope in [0.7, 1.3]. The slope estimates (hit rate on
   corrupted sentences) - (false-alarm rate on their clean twins); with 20-50 eligible sentences the
   binomial standard error of a hit rate near 0.85 is about 0.06, so +-0.3 is several SEs: a slope
   outside it is a real loss of sensitivity (or a flood of false alarms), not sampling noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from corpora.chat import read_chat
from evalsuite.childes import validation
from evalsuite.childes.compare import CompareConfig, analyze_child_utterances
from evalsuite.childes.corruptions import CORRUPTIONS, injection_curve, story_sentences
from evalsuite.childes.detectors import load_nlp
from evalsuite.stats import bootstrap_ci

# the six Brown transcripts with the most [* ...] codes on the child tier
CODED_FILES = ["Adam/030707.cha", "Eve/020200a.cha", "Eve/020100b.cha", "Eve/020000a.cha",
               "Adam/040624.cha", "Adam/050212.cha"]


@pytest.fixture(scope="module")
def brown_units(shared_data) -> pd.DataFrame:
    root = shared_data / "childes" / "Brown"
    frame = pd.concat([read_chat(root / f) for f in CODED_FILES], ignore_index=True)
    return analyze_child_utterances(frame, CompareConfig(), load_nlp())


@pytest.fixture(scope="module")
def brown_validation(brown_units) -> pd.DataFrame:
    table, _ = validation.validate_detectors(brown_units)
    return table.set_index("target")


@pytest.mark.slow
@pytest.mark.shared_data
def test_overregularization_matches_human_codes(brown_validation):
    row = brown_validation.loc["overregularization (all over-marking codes)"]
    # measured on these six files: precision 1.00 (59/59), recall 0.95 (59/62);
    # on all 75 files: precision 0.88 (190/215), recall 0.83 (190/229)
    assert row["n_codes"] >= 50
    assert row["precision"] >= 0.8
    assert row["recall"] >= 0.8
    verbs = brown_validation.loc["verbs: +ed +ed-sup ed-en +es"]  # measured 1.00 (25/25), 0.96 (25/26)
    assert verbs["n_codes"] >= 20 and verbs["precision"] >= 0.8 and verbs["recall"] >= 0.8
    pron = brown_validation.loc["pronoun/quantifier +s: +s-pos +'s"]  # measured 1.00 (30/30), 0.97 (30/31)
    assert pron["n_codes"] >= 20 and pron["precision"] >= 0.8 and pron["recall"] >= 0.8


@pytest.mark.slow
@pytest.mark.shared_data
def test_repetition_matches_transcribers_retracing_marks(brown_validation):
    row = brown_validation.loc["immediate_repetition ([/])"]
    # measured on these six files: precision 0.75 (149/199), recall 0.83 (141/170);
    # on all 75 files 0.54 / 0.69: transcribers leave many deliberate repeats unmarked
    assert row["n_codes"] >= 100
    assert row["precision"] >= 0.6
    assert row["recall"] >= 0.7


@pytest.mark.slow
@pytest.mark.shared_data
def test_unvalidated_types_are_reported_as_such(brown_validation):
    for name in validation.UNVALIDATED:
        assert brown_validation.loc[name, "n_codes"] == 0
        assert "not validated" in brown_validation.loc[name, "note"]


@pytest.mark.slow
@pytest.mark.shared_data
def test_mlu_from_text_agrees_with_mlu_from_mor(brown_units):
    per_file, summary = validation.mlu_agreement(brown_units)
    assert summary["n_files"] == len(CODED_FILES)
    m = summary["morphemes"]
    # measured on these files: r 0.9996, mean |diff| 1.8 %, 94 % of utterances identical;
    # on all 75 files: r 0.9998, mean |diff| 1.3 %, 95.5 % identical
    assert m["pearson_r"] > 0.99
    assert m["mean_abs_rel_diff"] < 0.03
    assert m["utterances_exact"] > 0.9
    assert summary["words"]["mean_abs_rel_diff"] < 0.01
    assert (per_file["mlu_m_mor"] > per_file["mlu_w_chat"]).all()  # morphemes >= words, by definition


@pytest.fixture(scope="module")
def story_sents(shared_data) -> list[str]:
    text = (shared_data / "tinystories" / "tinystories_sample.txt").read_text(encoding="utf-8")
    stories = [s.strip() for s in text.split("<|endoftext|>") if s.strip()]
    return story_sentences(stories, load_nlp())


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_detector_rate_tracks_injected_rate(story_sents, kind):
    curve = injection_curve(story_sents, kind, rates=(0.0, 0.1, 0.2, 0.4), replicates=20, seed=0)
    assert curve.n_eligible >= 15, "too few eligible sentences for a slope"
    assert 0.7 <= curve.slope <= 1.3, (curve.slope, curve.base_rate, curve.hit_rate_corrupted)
    at_zero = curve.points[curve.points.rate == 0.0]["measured_rate"]
    assert at_zero.eq(curve.base_rate).all()  # nothing injected: the clean rate, every replicate
    assert abs(curve.intercept - curve.base_rate) < 0.02
    assert curve.base_rate < 0.1  # the clean human-written stories rarely trigger the detector


def _old_validate_detectors(
    units: pd.DataFrame, cluster: str = "file", n_boot: int = 1000, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """validate_detectors before it skipped units with no code and no hit and bootstrapped per-transcript
    sums (kept as the reference the fast one must equal)."""
    rows, disagreements = [], []
    groups = units[cluster].to_numpy() if cluster in units else np.arange(len(units))
    for target in validation.TARGETS:
        per_unit = np.zeros((len(units), 4))  # tp_hits, n_hits, tp_codes, n_codes
        hits_on_other_codes = 0
        for i, (idx, text, anns, hits) in enumerate(zip(
            units.index, units["text"], units["annotations"], units["hits"], strict=True
        )):
            codes = [a for a in anns if a["code"] in target.codes and target.keeps(a["word"])]
            mine = [
                h for h in hits
                if h["error_type"] == target.detector and (target.kinds is None or h["kind"] in target.kinds)
                and target.keeps(h["text"])
            ]
            for ann in codes:
                per_unit[i, 3] += 1
                if any(validation._overlap(h, ann) for h in mine):
                    per_unit[i, 2] += 1
                else:
                    disagreements.append({"target": target.name.strip(), "unit": idx, "text": text,
                                          "missed": "false_negative", "span": ann["word"], "code": ann["code"]})
            others = [a for a in anns if a["code"] not in target.codes and a["code"] != "[/]"]
            for hit in mine:
                per_unit[i, 1] += 1
                if any(validation._overlap(hit, ann) for ann in codes):
                    per_unit[i, 0] += 1
                else:
                    on_other = any(validation._overlap(hit, ann) for ann in others)
                    hits_on_other_codes += on_other
                    disagreements.append({"target": target.name.strip(), "unit": idx, "text": text,
                                          "missed": "false_positive", "span": hit["text"], "code": hit["kind"],
                                          "file": units[cluster].iloc[i] if cluster in units else None,
                                          "on_other_code": on_other})
        tp_hits, n_hits, tp_codes, n_codes = (int(v) for v in per_unit.sum(axis=0))
        prec = bootstrap_ci(per_unit[:, :2], validation._ratio, groups=groups, n_boot=n_boot, seed=seed)
        rec = bootstrap_ci(per_unit[:, 2:], validation._ratio, groups=groups, n_boot=n_boot, seed=seed)
        enough = n_codes >= validation.MIN_CODES_FOR_ESTIMATE
        rows.append({
            "target": target.name.strip(), "detector": target.detector, "codes": " ".join(sorted(target.codes)),
            "n_codes": n_codes, "n_hits": n_hits, "tp_codes": tp_codes, "tp_hits": tp_hits,
            "precision": tp_hits / n_hits if n_hits else float("nan"), "precision_ci_low": prec.ci_low,
            "precision_ci_high": prec.ci_high,
            "recall": tp_codes / n_codes if n_codes else float("nan"), "recall_ci_low": rec.ci_low,
            "recall_ci_high": rec.ci_high, "n_transcripts": int(len(np.unique(groups.astype(str)))),
            "ci_method": "cluster bootstrap over transcripts (evalsuite.stats.bootstrap_ci)",
            "hits_on_other_codes": hits_on_other_codes,
            # a hit on another code (often a bare [*] of unspecified type) is a coded error all the same
            "precision_any_code": (tp_hits + hits_on_other_codes) / n_hits if n_hits else float("nan"),
            "note": "" if enough else f"only {n_codes} human code(s): no reliable estimate",
        })
    for name in validation.UNVALIDATED:
        n_hits = int(sum(any(h["error_type"] == name for h in hits) for hits in units["hits"]))
        rows.append({"target": name, "detector": name, "codes": "", "n_codes": 0, "n_hits": n_hits,
                     "note": "no human codes for this error type in these transcripts: not validated"})
    return pd.DataFrame(rows), pd.DataFrame(disagreements)


@pytest.mark.slow
@pytest.mark.shared_data
def test_fast_validation_equals_the_per_unit_loop(brown_units):
    units = brown_units.set_index(brown_units.index + 1000)  # positions and labels differ
    assert sum(map(len, units["annotations"])) > 20
    for frame in (units, units.drop(columns=[c for c in units if c.startswith("has_")])):
        new_table, new_dis = validation.validate_detectors(frame, n_boot=200)
        old_table, old_dis = _old_validate_detectors(frame, n_boot=200)
        pd.testing.assert_frame_equal(new_table, old_table)
        pd.testing.assert_frame_equal(new_dis, old_dis)


@pytest.mark.slow
@pytest.mark.shared_data
def test_validate_by_split_equals_validating_each_split_of_the_whole_frame(brown_units):
    """validate_by_split copies only the columns validation reads into each split: same tables as the
    whole frame's rows, split by corpus (a fake second corpus gives a scoring split), as it did before."""
    units = brown_units.copy()
    units["corpus"] = ["Brown" if k % 3 else "Other" for k in range(len(units))]
    units["file"] = [f if c == "Brown" else "Other/" + f.split("/", 1)[-1] for f, c in zip(units["file"], units["corpus"],
                                                                                     strict=True)]
    table, dis = validation.validate_by_split(units, n_boot=200)
    dev = units["corpus"] == "Brown"
    for split, mask in (("development", dev), ("scoring", ~dev)):
        ref_table, ref_dis = _old_validate_detectors(units[mask], n_boot=200)
        got = table[table["split"] == split].drop(columns=["split", "corpora"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, ref_table)
        got_dis = dis[dis["split"] == split].drop(columns=["split"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(got_dis, ref_dis)
    assert set(table["split"]) == {"development", "scoring"} and table["n_hits"].sum() > 0

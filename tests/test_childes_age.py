"""childes-age: parser-free features, the age model (CV against baselines, intervals, in_range, saving),
the loss-to-age test with synthetic checkpoints whose answer is known, and the CLI on real CHILDES data."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from corpora.errors import UserError
from evalsuite.childes import age_features as af
from evalsuite.childes import developmental_age as dev
from evalsuite.childes.loss_age import CONTRADICTED, NOT_TESTABLE, SUPPORTED, LossAgeConfig, loss_age_test
from evalsuite.cli import main
from evalsuite.results import validate_meta

# ----------------------------------------------------------------------------- features


def test_words_compounds_and_fillers():
    assert af.words_of("thank_you Mommy um .") == ["thank_you", "mommy"]
    assert af.word_analysis("thank_you")[0] == 1  # a compound is one word and one morpheme
    assert af.word_analysis("dogs")[0] == 2
    assert af.word_analysis("walked")[0] == 2
    assert af.word_analysis("can't")[0] == 2
    assert af.word_analysis("went") == (1, 0, 1)  # irregular past: an opportunity, no error
    assert af.word_analysis("goed")[1:] == (1, 1)
    assert af.word_analysis("foots")[1:] == (1, 1)
    assert af.word_analysis("dreamed")[1] == 0  # an accepted regular form of an irregular verb
    assert af.word_analysis("is")[0] == 1


def test_document_features_excludes_filler_only_utterances():
    utts = pd.DataFrame({"file": ["a"] * 4, "utterance": ["um .", "I goed home .", "I went .", "two dogs ."],
                         "unintelligible": [False, False, False, False]})
    doc = af.document_features(utts, "file").iloc[0]
    assert doc["n_utterances"] == 3  # "um ." is not an utterance
    assert doc["mlu_m"] == pytest.approx((4 + 2 + 3) / 3)  # I go-ed home / I went / two dog-s
    assert doc["overreg_rate"] == pytest.approx(1 / 2)  # goed over goed + went
    assert math.isnan(doc["ndw_100"])  # fewer than 100 words
    clan = pd.DataFrame({"file": ["a", "a"], "utterance": ["xxx ball .", "big ball ."], "unintelligible": [True, False]})
    assert af.document_features(clan, "file").iloc[0]["n_utterances"] == 1
    assert af.document_features(clan, "file", clan_unintelligible=False).iloc[0]["n_utterances"] == 2


def test_brown_stage_bounds():
    assert [af.brown_stage(v) for v in (1.5, 2.0, 2.7, 3.5, 4.0, 5.0)] == ["I", "II", "III", "IV", "V", "V+"]
    assert af.brown_stage(float("nan")) == ""


def test_miller_chapman_inversion():
    # MLU = -0.548 + 0.103 * age  <=>  age = (MLU + 0.548) / 0.103
    age = dev.miller_chapman_age(2.0)
    assert float(age) == pytest.approx(24.7379, abs=1e-3)
    assert -0.548 + 0.103 * float(age) == pytest.approx(2.0)


# ----------------------------------------------------------------------------- the model on synthetic children


def _synthetic_docs(n_children: int = 30, per_child: int = 6, seed: int = 0) -> pd.DataFrame:
    """Children whose MLU grows with age and whose level differs by child (a real-looking structure)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_children):
        offset = rng.normal(0, 0.2)
        for k in range(per_child):
            age = rng.uniform(18, 60)
            mlu = max(1.05, -0.5 + 0.1 * age + offset + rng.normal(0, 0.15))
            rows.append({"file": f"Corp{c % 3}/kid{c}/{k}.cha", "corpus": f"Corp{c % 3}", "child": f"kid{c}", "age_months": age,
                         "n_utterances": 120, "mlu_m": mlu, "mean_aoa": 4.2 + 0.002 * age + rng.normal(0, 0.03),
                         "ndw_100": 30 + 0.5 * age + rng.normal(0, 3),
                         "overreg_rate": rng.uniform(0, 0.1) if k % 2 else np.nan})
    return pd.DataFrame(rows)


def test_fit_validate_and_baselines_on_same_folds():
    docs = _synthetic_docs()
    result = dev.fit_and_validate(docs, dev.AgeFitConfig(n_boot=200, n_splits=5))
    s = result.summary.set_index(["scheme", "method"])
    assert set(s.index.get_level_values("scheme")) == {"by_child", "by_corpus"}
    for scheme in ("by_child", "by_corpus"):
        assert s.loc[(scheme, "age_model"), "n_transcripts"] == s.loc[(scheme, "mlu_only"), "n_transcripts"] == len(docs)
    assert s.loc[("by_child", "age_model"), "mae_months"] < 5  # the structure is learnable
    assert s.loc[("by_child", "age_model"), "mae_ci_low"] <= s.loc[("by_child", "age_model"), "mae_months"]
    # no child is in both the train and the test part of a fold
    pred = result.predictions[result.predictions.scheme == "by_child"]
    assert pred.groupby("child_id")["fold"].nunique().max() == 1
    assert 0.8 <= s.loc[("by_child", "age_model"), "interval_coverage"] <= 1.0
    assert sorted(result.model.training_children) == sorted(result.children["child_id"])
    assert len(result.model.training_children) == 30


def test_out_of_range_gets_no_age_and_model_round_trips(tmp_path):
    docs = _synthetic_docs()
    result = dev.fit_and_validate(docs, dev.AgeFitConfig(n_boot=100, n_splits=5))
    model = result.model
    probe = docs.iloc[:3].copy()
    probe.loc[probe.index[1], "mlu_m"] = 11.0  # story-like sentences: far beyond any child
    probe.loc[probe.index[2], "n_utterances"] = 10
    out = model.predict(probe)
    assert out["in_range"].tolist() == [True, False, False]
    assert out["predicted_age_months"].isna().tolist() == [False, True, True]
    assert "mlu_m" in out["out_of_range_reason"].iloc[1] and "utterances" in out["out_of_range_reason"].iloc[2]
    assert out["ci_low"].iloc[0] < out["predicted_age_months"].iloc[0] < out["ci_high"].iloc[0]
    model.save(tmp_path / "m", result.children)
    loaded = dev.load_model(tmp_path / "m")
    pd.testing.assert_frame_equal(loaded.predict(probe), out)
    saved = pd.read_csv(tmp_path / "m" / dev.CHILDREN_FILE)
    assert len(saved) == 30
    with pytest.raises(UserError):
        dev.load_model(tmp_path / "nothing")


def test_too_few_children_is_a_user_error():
    docs = _synthetic_docs(n_children=2)
    with pytest.raises(UserError, match="at least 3 children"):
        dev.fit_and_validate(docs)


# ----------------------------------------------------------------------------- loss-to-age test


def _checkpoints(n_runs: int, per_run: int, slope: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_runs):
        level = rng.normal(0, 5)
        for bpc in np.linspace(1.4, 0.7, per_run):
            age = 40 + level + slope * (bpc - 1.0) + rng.normal(0, 2)
            rows.append({"run": f"run{r}", "checkpoint_id": f"run{r}/{bpc:.2f}", "val_bpc": bpc, "val_loss": bpc * 2.8,
                         "predicted_age_months": age, "ci_low": age - 8, "ci_high": age + 8, "in_range": True})
    return pd.DataFrame(rows)


def test_loss_age_supported_when_lower_loss_means_older():
    res = loss_age_test(_checkpoints(4, 8, slope=-30), LossAgeConfig(n_perm=1000, n_sim=200))
    assert res.verdict == SUPPORTED
    assert res.combined_rho < -0.8 and res.p_negative < 0.01 and res.power > 0.8
    assert res.mixed_slope_months_per_bpc < 0 and res.mixed_ci_high < 0
    assert len(res.per_run) == 4
    from evalsuite.hypothesis import hypothesis_band

    pts = _checkpoints(4, 8, slope=-30)
    with_band = sum(hypothesis_band(r.val_loss, r.val_bpc)[1] == hypothesis_band(r.val_loss, r.val_bpc)[1]
                    for r in pts.itertuples())
    assert 0 < res.n_with_band == with_band < 32  # some bpc fall in the seed's gap (3.0-3.5 nats/token)


def test_loss_age_contradicted_by_the_opposite_and_by_a_powerful_null():
    assert loss_age_test(_checkpoints(4, 8, slope=+30), LossAgeConfig(n_perm=1000, n_sim=200)).verdict == CONTRADICTED
    null = loss_age_test(_checkpoints(6, 12, slope=0), LossAgeConfig(n_perm=1000, n_sim=200))
    assert null.power >= 0.8
    assert null.verdict == CONTRADICTED and "power" in null.reason


def test_loss_age_not_testable_with_too_few_or_out_of_range():
    few = loss_age_test(_checkpoints(1, 5, slope=0), LossAgeConfig(n_perm=500, n_sim=200))
    assert few.verdict == NOT_TESTABLE and few.power < 0.8
    pts = _checkpoints(3, 6, slope=-30)
    pts["in_range"] = False
    pts["predicted_age_months"] = np.nan
    res = loss_age_test(pts)
    assert res.verdict == NOT_TESTABLE and res.n_checkpoints == 0


# ----------------------------------------------------------------------------- CLI on real data


@pytest.mark.slow
def test_cli_fit_then_apply_to_transcripts_and_samples(shared_data, tmp_path):
    talkbank = shared_data / "childes" / "talkbank" / "Bates.zip"
    eve = shared_data / "childes" / "Brown" / "Eve"
    if not talkbank.is_file():
        pytest.skip(f"{talkbank} not in the shared data")
    model_dir = tmp_path / "model"
    with pytest.raises(SystemExit) as exc:
        main(["childes-age", "--fit", str(talkbank), str(eve), "--model", str(model_dir), "--n-bootstrap", "100",
              "--n-splits", "3", "--min-utterances", "30"])
    assert exc.value.code == 0
    saved = json.loads((model_dir / dev.MODEL_FILE).read_text())
    assert len(saved["training_children"]) >= 3 and "Brown/Eve" in saved["training_children"]
    assert not validate_meta(json.loads((model_dir / "meta.json").read_text()))
    cv = pd.read_csv(model_dir / "cv_summary.csv")
    assert set(cv["method"]) == {"age_model", "mlu_only", "miller_chapman", "constant"}

    stories = [json.loads(line)["text"] for line in
               (shared_data / "tinystories" / "tinystories_subset.jsonl").read_text().splitlines()[:30]]
    samples = tmp_path / "samples.jsonl"
    with samples.open("w") as fh:
        for i, text in enumerate(stories):
            ckpt = f"runs/r{i % 2}/step_{i % 3}"
            fh.write(json.dumps({"prompt": "", "completion": text, "checkpoint": ckpt, "checkpoint_id": ckpt,
                                 "val_loss": 2.0 + (i % 3) / 3, "val_bpc": 0.7 + (i % 3) / 10}) + "\n")
    out = tmp_path / "ages.csv"
    with pytest.raises(SystemExit) as exc:
        main(["childes-age", str(eve), str(samples), "-o", str(out), "--model", str(model_dir)])
    assert exc.value.code == 0
    frame = pd.read_csv(out)
    for col in ("file", "checkpoint_id", "child", "age_months", "predicted_age_months", "ci_low", "ci_high", "in_range"):
        assert col in frame
    kids = frame[frame["file"].notna()]
    models = frame[frame["checkpoint_id"].notna()]
    assert len(kids) == 20 and kids["age_months"].notna().all() and kids["in_range"].any()
    assert len(models) == 6 and models["age_months"].isna().all()
    # story sentences are far longer than any child utterance: no extrapolated age, ever
    assert not models["in_range"].any() and models["predicted_age_months"].isna().all()
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert not validate_meta(meta)
    assert meta["loss_age"]["verdict"] == NOT_TESTABLE


def test_cli_user_errors(tmp_path, capsys):
    for argv in (["childes-age", str(tmp_path / "missing.cha"), "-o", str(tmp_path / "o.csv"), "--model", str(tmp_path)],
                 ["childes-age", str(tmp_path)]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


# ----------------------------------------------------------------------------- register matching


def test_register_of_paths_and_matched_comparison():
    from evalsuite.childes.register import register_comparison, register_of

    assert register_of("HSLLD/HV1/ER/acker1.cha") == "elicited narrative"
    assert register_of("HSLLD/HV2/BR/gresbr2.cha") == "book reading"
    assert register_of("Bates/Story28/edst.cha") == "story task"
    assert register_of("Brown/Adam/020304.cha") == "conversation"
    kids = pd.DataFrame({
        "file": [f"HSLLD/HV1/ER/k{i}er1.cha" for i in range(6)] + [f"Brown/Adam/0{i}.cha" for i in range(4)],
        "corpus": ["HSLLD"] * 6 + ["Brown"] * 4, "child": [f"k{i}" for i in range(6)] + ["Adam"] * 4,
        "age_months": [44, 45, 46, 47, 52, 53, 30, 31, 32, 33], "mlu_m": [4.0, 4.2, 4.4, 4.6, 5.0, 5.2, 3, 3, 3, 3],
        "mlu_w": [3.8] * 10, "mean_aoa": [4.3] * 10, "ndw_100": [50.0] * 10, "overreg_rate": [0.0] * 10,
        "brown_stage": ["V"] * 4 + ["V+"] * 2 + ["III"] * 4,
    })
    models = pd.DataFrame({"checkpoint_id": ["c1"], "mlu_m": [9.0], "mlu_w": [8.0], "mean_aoa": [4.5],
                           "ndw_100": [60.0], "overreg_rate": [np.nan], "brown_stage": ["V+"]})
    table = register_comparison(kids, models, "stories", n_boot=200)
    assert set(table["child_register"]) == {"elicited narrative"}  # Brown conversation is not a narrative
    assert table["comparison"].str.startswith("(b) story model").all()
    mlu_age = table[(table.feature == "mlu_m") & (table.binning == "age") & (table.bin == "42-48 months")].iloc[0]
    assert mlu_age["child_mean"] == pytest.approx(4.3) and mlu_age["n_children"] == 4
    assert mlu_age["difference"] == pytest.approx(9.0 - 4.3) and not mlu_age["model_inside_child_ci"]
    assert set(table.loc[table.binning == "brown_stage", "bin"]) == {"stage V", "stage V+"}
    cds = register_comparison(kids, models, "cds", n_boot=200)
    assert set(cds["child_register"]) == {"conversation"} and cds["comparison"].str.startswith("(a)").all()
    with pytest.raises(UserError):
        register_comparison(kids, models, "novels")


# ----------------------------------------------------------------------------- detector validation bookkeeping


def _unit(file, corpus, text, anns, hits):
    return {"file": file, "corpus": corpus, "text": text, "annotations": anns, "hits": hits}


def test_validation_split_mines_line_and_cluster_intervals():
    from evalsuite.childes import validation

    def code(word, start, c):
        return {"start": start, "end": start + len(word), "word": word, "target": "", "code": c}

    def hit(word, start, kind):
        return {"error_type": "overregularization", "kind": kind, "start": start, "end": start + len(word),
                "text": word}

    rows = []
    for t in range(6):  # scoring corpus: coded goed found; an uncoded throwed hit; mines coded and found
        f = f"Lara/t{t}.cha"
        rows.append(_unit(f, "Lara", "I goed", [code("goed", 2, "m:+ed")], [hit("goed", 2, "verb_past")]))
        rows.append(_unit(f, "Lara", "he throwed", [], [hit("throwed", 3, "verb_past")]))
        rows.append(_unit(f, "Lara", "that mines", [code("mines", 5, "+s-pos")], [hit("mines", 5, "possessive_pronoun_s")]))
    rows.append(_unit("Brown/Adam/1.cha", "Brown", "two mans", [code("mans", 4, "+s")], []))
    units = pd.DataFrame(rows)
    table, dis = validation.validate_by_split(units, n_boot=300)
    t = table.set_index(["split", "target"])
    allo = t.loc[("scoring", "overregularization (all over-marking codes)")]
    assert (allo["n_codes"], allo["tp_codes"], allo["n_hits"], allo["tp_hits"]) == (12, 12, 18, 12)
    assert allo["n_transcripts"] == 6
    # every transcript has the same make-up: the cluster bootstrap interval collapses to the estimate
    assert allo["precision_ci_low"] == pytest.approx(2 / 3) and allo["precision_ci_high"] == pytest.approx(2 / 3)
    no_mines = t.loc[("scoring", "overregularization without mines")]
    assert (no_mines["n_codes"], no_mines["n_hits"]) == (6, 12)
    mines = t.loc[("scoring", "mines (own line)")]
    assert (mines["n_codes"], mines["tp_codes"]) == (6, 6)
    dev_row = t.loc[("development", "overregularization (all over-marking codes)")]
    assert (dev_row["n_codes"], dev_row["tp_codes"]) == (1, 0)  # Brown scored apart
    assert set(dis.loc[dis.missed == "false_positive", "span"]) == {"throwed"}


def test_coding_gap_from_the_committed_hand_check():
    from evalsuite.childes import validation

    table = validation.load_handcheck()
    assert len(table) == 40 and set(table["judgement"]) <= set(validation.JUDGEMENTS)
    assert (table["reason"].str.len() > 0).all()  # every judgement says why
    row = {"tp_hits": 65, "n_hits": 401, "hits_on_other_codes": 125}  # scoring split as measured
    gap = validation.coding_gap(table, row)
    k = int((table["judgement"] == "error").sum())
    n = int((table["judgement"] != "unclear").sum())
    assert gap["share_real"] == pytest.approx(k / n)
    assert gap["share_ci_low"] < gap["share_real"] < gap["share_ci_high"]
    assert gap["n_hits_no_code"] == 211
    assert gap["precision_with_gap"] == pytest.approx((65 + 125 + k / n * 211) / 401)
    assert gap["precision_coded"] < gap["precision_with_gap_ci_low"] < gap["precision_with_gap"]


def test_shipped_model_lists_its_children_and_beats_both_baselines():
    from evalsuite.commands.childes_age import PACKAGED_MODEL

    model = dev.load_model(PACKAGED_MODEL)
    children = pd.read_csv(PACKAGED_MODEL / dev.CHILDREN_FILE)
    assert len(model.training_children) == len(children) >= 500  # real children, not ~125 folders
    # the same Bates child's task folders are one child; a cross-sectional folder is many children
    keith = children.set_index("child_id").loc["Bates/keith"]  # Free28/keith28.cha + Story28/keithst.cha
    assert keith["n_transcripts"] == 2 and not any(c.startswith("Bates/Free") for c in children["child_id"])
    assert sum(c.startswith("Champaign/") for c in children["child_id"]) > 20
    assert children["child_id"].is_unique
    assert model.age_range == (18.0, 60.0) and model.interval_halfwidth > 0
    cv = pd.read_csv(PACKAGED_MODEL / "cv_summary.csv").set_index(["scheme", "method"])
    for scheme in ("by_child", "by_corpus"):
        ours = cv.loc[(scheme, "age_model"), "mae_months"]
        assert ours < cv.loc[(scheme, "mlu_only"), "mae_months"] and ours < cv.loc[(scheme, "miller_chapman"), "mae_months"]
        # ... and the negative control (every transcript gets the training fold's mean age), paired CI above 0
        assert ours < cv.loc[(scheme, "constant"), "mae_months"] and cv.loc[(scheme, "constant"), "diff_ci_low"] > 0
    # written stories: sentences of 11 morphemes lie beyond the children: no age
    story = pd.DataFrame([{"mlu_m": 11.0, "overreg_rate": 0.0, "mean_aoa": 4.4, "ndw_100": 55.0, "n_utterances": 200}])
    assert not model.predict(story)["in_range"].iloc[0]

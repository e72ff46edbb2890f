"""Issue 13 items 1-2: the growth features, the exported gradient-boosting trees, the nested choice between
ridge and trees, the constant negative control and loading saved models of the previous schema."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from corpora.errors import UserError
from evalsuite.childes import age_features as af
from evalsuite.childes import developmental_age as dev
from tests.test_childes_age import _synthetic_docs

GBM = next(s for s in dev.SPECS if s.kind == "gbm")


# ----------------------------------------------------------------------------- features


def test_mattr_equals_the_brute_force_moving_average():
    rng = np.random.default_rng(0)
    vocab = [f"w{chr(97 + k % 26) * (1 + k // 26)}" for k in range(40)]  # letters only: the word regex
    words = [vocab[k] for k in rng.integers(0, 40, 260)]
    frame = pd.DataFrame({"file": ["a"] * 26, "utterance": [" ".join(words[i * 10:(i + 1) * 10]) for i in range(26)]})
    got = af.mattr(frame["file"].to_numpy(), af._token_table(frame["utterance"]), 100).iloc[0]
    want = np.mean([len(set(words[s:s + 100])) / 100 for s in range(len(words) - 99)])
    assert got == pytest.approx(want, abs=1e-12)
    # a document shorter than the window has no MATTR; one word repeated has 1/window
    short = af.mattr(np.array(["b"]), af._token_table(pd.Series(["dog " * 20])), 100)
    assert np.isnan(short.iloc[0])
    same = af.mattr(np.array(["c"]), af._token_table(pd.Series(["dog " * 150])), 100)
    assert same.iloc[0] == pytest.approx(1 / 100)


def test_length_spread_and_text_subordinators():
    frame = pd.DataFrame({"file": ["a"] * 4, "utterance": [
        "I cried because it was broken .",   # 6 words, one subordinator
        "who is that ?",                     # a question: its who is not counted
        "the man who came when it rained",   # 7 words, two
        "ball"]})                            # 1 word
    doc = af.document_features(frame, "file", clan_unintelligible=False).iloc[0]
    lengths = np.array([6, 3, 7, 1])
    assert doc["len_sd_w"] == pytest.approx(lengths.std())
    assert doc["sub_words_per_utt"] == pytest.approx(3 / 4)
    assert np.isnan(doc["mattr_100"])  # 17 words < the window
    for col in ("rel_per_utt", "comp_per_utt", "inf_per_utt", "multi_verb_rate"):
        assert np.isnan(doc[col])  # no %mor: NaN, filled with the training median by the model


def test_clause_markers_from_mor_in_both_styles():
    frame = pd.DataFrame({"file": ["a"] * 3, "utterance": [
        "I think that he wants to go", "the dog who barked", "want ball"],
        "mor": [["pron|I-Prs-Nom-S1", "verb|think-Fin-Ind-Pres-S1", "sconj|that", "pron|he-Prs-Nom-S3",
                 "verb|want-Fin-Ind-Pres-S3", "part|to", "verb|go-Inf-S"],
                ["det:art|the", "n|dog", "pro:rel|who", "v|bark-PAST"],
                ["v|want", "n|ball"]],
        "pos": [["PRON", "VERB", "SCONJ", "PRON", "VERB", "PART", "VERB"], ["DET", "NOUN", "PRON", "VERB"],
                ["VERB", "NOUN"]]})
    stats = af.mor_stats(frame)
    assert stats["n_comp"].tolist() == [1, 0, 0]
    assert stats["n_rel"].tolist() == [0, 1, 0]
    assert stats["n_inf"].tolist() == [1, 0, 0]
    doc = af.document_features(frame, "file", clan_unintelligible=False).iloc[0]
    assert doc["comp_per_utt"] == pytest.approx(1 / 3) and doc["rel_per_utt"] == pytest.approx(1 / 3)
    assert doc["multi_verb_rate"] == pytest.approx(1 / 3)  # only the first utterance has >= 2 verbs
    # UD's Rel feature marks a relative pronoun; the same lemma as a demonstrative or question word does not
    assert af._clause_flags("pron|that-Rel-S1", "PRON")[0] and not af._clause_flags("pron|that-Dem-S1", "PRON")[0]
    assert not af._clause_flags("pron|who-Int-S1", "PRON")[0]
    assert af._clause_flags("comp|that", "SCONJ")[1] and not af._clause_flags("sconj|because", "SCONJ")[1]


# ----------------------------------------------------------------------------- exported trees


def test_exported_trees_predict_exactly_what_sklearn_predicts():
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 6))
    x[:, 3] = np.round(x[:, 3], 1)  # ties at thresholds
    y = x[:, 0] * 2 + np.sin(x[:, 1]) + 0.3 * x[:, 3] ** 2 + rng.normal(0, 0.1, 400)
    gbm = GradientBoostingRegressor(**dev.GBM_PARAMS, random_state=3).fit(x, y)
    ensemble = dev.export_gbm(gbm)
    assert len(ensemble["trees"]) == dev.GBM_PARAMS["n_estimators"]
    probe = np.vstack([rng.normal(size=(300, 6)) * 2, x[:50]])
    want = gbm.predict(probe)
    np.testing.assert_array_equal(dev.tree_ensemble_predict(ensemble, probe), want)
    # through JSON text and back (what save/load does): still identical
    again = json.loads(json.dumps(ensemble))
    np.testing.assert_array_equal(dev.tree_ensemble_predict(again, probe), want)
    # and it is not a constant: the trees carry the signal
    assert np.corrcoef(want, probe[:, 0])[0, 1] > 0.8


def test_gbm_age_model_saves_loads_and_withholds_out_of_range(tmp_path):
    docs = dev.training_table(_synthetic_docs(), dev.AgeFitConfig())
    model = dev.fit_linear(docs, dev.AgeFitConfig(n_splits=5), spec=GBM)
    assert model.kind == "gbm" and model.interval_halfwidth > 0 and len(model.importance) == len(GBM.inputs)
    model.save(tmp_path / "m")
    loaded = dev.load_model(tmp_path / "m")
    assert loaded.kind == "gbm"
    np.testing.assert_array_equal(loaded.predict_point(docs), model.predict_point(docs))
    # the sklearn model refit with the same seed on the same design predicts the same ages
    gbm = dev._fit_gbm(dev._design(docs, GBM.inputs, model.fill), docs["age_months"].to_numpy(float), GBM.target, 0)
    np.testing.assert_allclose(model.predict_point(docs), np.exp(gbm.predict(dev._design(docs, GBM.inputs, model.fill))),
                               rtol=0, atol=1e-9)
    probe = docs.iloc[:3].copy()
    probe.loc[probe.index[1], "mlu_m"] = 11.0
    out = loaded.predict(probe)
    assert out["in_range"].tolist() == [True, False, True] and np.isnan(out["predicted_age_months"].iloc[1])
    # a growth measure the trees use beyond the training children is out of range too (when it was trained on)
    spread = docs.assign(len_sd_w=np.linspace(1, 3, len(docs)))
    ranged = dev.fit_linear(spread, dev.AgeFitConfig(n_splits=5), with_interval=False, spec=GBM)
    wide = spread.iloc[[90, 91]].copy()
    wide.loc[wide.index[1], "len_sd_w"] = 9.0
    assert ranged.predict(wide)["in_range"].tolist() == [True, False]
    assert "len_sd_w" in ranged.predict(wide)["out_of_range_reason"].iloc[1]
    # a prediction outside the training ages is withheld for trees too
    point = loaded.predict_point(probe.iloc[[0]])[0]
    loaded.age_range = (point + 1.0, 60.0)
    out = loaded.predict(probe.iloc[[0]])
    assert not out["in_range"].iloc[0] and "training ages" in out["out_of_range_reason"].iloc[0]
    assert dev.load_model(tmp_path / "m").coefficients()["unit"].eq("share_of_impurity_decrease").all()


def test_ridge_model_of_the_previous_schema_still_loads(tmp_path):
    docs = dev.training_table(_synthetic_docs(), dev.AgeFitConfig())
    ridge = dev.fit_linear(docs, dev.AgeFitConfig(n_splits=5), spec=dev.SPECS[0])
    ridge.save(tmp_path / "m")
    path = tmp_path / "m" / dev.MODEL_FILE
    data = json.loads(path.read_text())
    for key in ("kind", "trees", "importance"):
        data.pop(key)
    data["schema"] = "evalsuite.childes.age_model/3"
    path.write_text(json.dumps(data))
    old = dev.load_model(tmp_path / "m")
    assert old.kind == "ridge"
    pd.testing.assert_frame_equal(old.predict(docs), ridge.predict(docs))
    data["schema"] = "evalsuite.childes.age_model/2"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="schema"):
        dev.load_model(tmp_path / "m")
    data["schema"], data["kind"] = dev.SCHEMA, "gbm"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="without trees"):
        dev.load_model(tmp_path / "m")


# ----------------------------------------------------------------------------- nested choice and control


def test_selection_compares_ridge_and_trees_on_the_training_part_only():
    docs = dev.training_table(_synthetic_docs(), dev.AgeFitConfig())
    chosen, table = dev.select_spec(docs)
    assert set(table["spec"]) == {s.name for s in dev.SPECS}
    assert np.isfinite(table["inner_mae"]).all()
    assert chosen.name == table.loc[table["inner_mae"].idxmin(), "spec"]
    assert table.loc[table["kind"] == "gbm", "alpha"].isna().all()
    assert len(table.attrs["oof"]) == len(docs) and np.isfinite(table.attrs["oof"]).all()


def test_constant_control_is_the_training_fold_mean_and_is_beaten():
    docs = _synthetic_docs()
    result = dev.fit_and_validate(docs, dev.AgeFitConfig(n_boot=200, n_splits=5))
    s = result.summary.set_index(["scheme", "method"])
    pred = result.predictions
    for scheme in ("by_child", "by_corpus"):
        row = s.loc[(scheme, "constant")]
        assert row["method_label"] == "constant (training-fold mean age)"
        assert row["mae_minus_age_model"] > 0 and row["diff_ci_low"] > 0  # the model beats the trivial control
        g = pred[pred.scheme == scheme]
        for fold, part in g.groupby("fold"):
            train_mean = g.loc[g["fold"] != fold, "age_months"].mean()
            assert part["pred_constant"].nunique() == 1
            assert part["pred_constant"].iloc[0] == pytest.approx(train_mean)

"""The age model's child identity (real children, not folders) and the %mor features (article omission
per obligatory context, inflection rates) on hand-made utterances whose answer is known."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest

from evalsuite.childes import age_features as af
from evalsuite.childes import developmental_age as dev

# ----------------------------------------------------------------------------- child identity


@pytest.mark.parametrize(("files", "expected"), [
    # Bates: the same children in four task folders, the file named after the child (+ 28 / st / _snack)
    (["Bates/Free20/amy.cha", "Bates/Free28/amy28.cha", "Bates/Story28/amyst.cha", "Bates/Snack28/amy.cha"], "Bates/amy"),
    (["Bates/Snack28/ed_snack.cha", "Bates/Story28/edst.cha", "Bates/Free28/ed28.cha"], "Bates/ed"),
    (["Bates/Story28/petest.cha", "Bates/Free20/pete.cha"], "Bates/pete"),
    # Demetras2: one child split over the father/ and mother/ sessions
    (["Demetras2/Jimmy/father/020914.cha", "Demetras2/Jimmy/mother/020220.cha"], "Demetras2/Jimmy"),
    # one child's diary in a subfolder
    (["Braunwald/020424.cha", "Braunwald/0diary/020524.cha"], "Braunwald/Braunwald"),
    (["Lara/020804.cha", "Lara/Lara-Diary/021012.cha"], "Lara/Lara"),
    # cross-sectional folders by age: the child is the file, across folders
    (["Champaign/24P/57B.cha", "Champaign/36X/57B.cha"], "Champaign/57b"),
    (["NewEngland/14/26.cha", "NewEngland/32/26.cha"], "NewEngland/26"),
    (["HSLLD/HV1/MT/nedmt1.cha", "HSLLD/HV7/MD/nedmd7.cha", "HSLLD/HV3/ET/nedet3.cha"], "HSLLD/ned"),
    (["Morisset/Topeka/311m30t.cha", "Morisset/UCLA/311m36.cha"], "Morisset/311"),
    (["Gelman/2014-IndDiff/01C-P1.cha", "Gelman/2014-IndDiff/01P-R2.cha"], "Gelman/2014-IndDiff/01"),
    (["VanHouten/Twos/lunch/marshl.cha", "VanHouten/Threes/freeplay/marshf.cha", "VanHouten/Twos/teaching/marsht.cha"],
     "VanHouten/marsh"),
    (["VanKleeck/nikki1a.cha", "VanKleeck/nikki2b.cha"], "VanKleeck/nikki"),
    # Garvey: CHI is the first child named in the file (halpat: Hal with Pat)
    (["Garvey/halpat.cha", "Garvey/halivy.cha"], "Garvey/hal"),
    # files named after the visitor, not the child
    (["Bohannon/Nat/elliott.cha", "Bohannon/Nat/kim.cha"], "Bohannon/Nat"),
    (["Bernstein/Children/Alice/010800.cha", "Bernstein/Interview/Alice/alice3.cha"], "Bernstein/Alice"),
    (["Brown/Eve/010600.cha", "Brown/Eve/020300.cha"], "Brown/Eve"),
    (["TD/nh36f-lorraine.cha"], "TD/lorraine"),
])
def test_real_child_id_from_file_names(files, expected):
    for f in files:
        assert dev.real_child_id(f, f.split("/")[0]) == expected


def test_real_child_id_keeps_children_apart():
    ids = {dev.real_child_id(f, f.split("/")[0]) for f in (
        "Champaign/24P/57B.cha", "Champaign/24P/58G.cha", "Garvey/pativy.cha", "Garvey/halpat.cha",
        "Gelman/2014-IndDiff/01C-P1.cha", "Gelman/2004-Gender/01.cha", "Bates/Free20/amy.cha", "Bates/Free20/ivy.cha",
        "Demetras2/Tim/father/020201.cha", "Demetras2/Jimmy/father/020914.cha")}
    assert len(ids) == 10
    # a folder given as input (no corpus folder in the path): the @ID corpus names it
    assert dev.real_child_id("Eve/010600.cha", "Brown") == "Brown/Eve"
    assert dev.real_child_id("010600a.cha", "Brown", "Eve") == "Brown/Eve"  # the Eve folder itself as input
    # an unknown corpus: a real @Participants name, else the folder (merge rather than split)
    assert dev.real_child_id("NewCorpus/kids/a1.cha", "NewCorpus", "Maria") == "NewCorpus/maria"
    assert dev.real_child_id("NewCorpus/kids/a1.cha", "NewCorpus", "Target_Child") == "NewCorpus/kids"


def test_real_file_names_give_one_id_per_child(shared_data):
    """On the real Bates and Demetras2 file lists: a child has at most one transcript per task folder and
    Bates' 100 transcripts are 30 children (not the 4 folders, not 100 files); Demetras2 is 3 children."""
    talkbank = shared_data / "childes" / "talkbank"
    if not (talkbank / "Bates.zip").is_file():
        pytest.skip("TalkBank zips not in the shared data")
    names = {}
    for corpus in ("Bates", "Demetras2"):
        with zipfile.ZipFile(talkbank / f"{corpus}.zip") as zf:
            names[corpus] = [n for n in zf.namelist() if n.endswith(".cha")]
    bates = pd.DataFrame({"file": names["Bates"]})
    bates["child_id"] = [dev.real_child_id(f, "Bates") for f in bates["file"]]
    bates["folder"] = bates["file"].str.split("/").str[1]
    assert bates.groupby(["child_id", "folder"]).size().max() == 1
    assert bates["child_id"].nunique() == 30
    assert {dev.real_child_id(f, "Demetras2") for f in names["Demetras2"]} == {
        "Demetras2/Jimmy", "Demetras2/Michael", "Demetras2/Tim"}


def test_by_child_folds_never_split_a_real_child():
    """Transcripts of the same Bates child in different folders (and Demetras2's father/mother sessions)
    land in one fold: the CV groups by the real child, not by the folder."""
    rng = np.random.default_rng(1)
    rows = []
    for kid in ("amy", "betty", "chuck", "doug", "frank", "gloria", "hank", "ivy"):
        for folder, stem, age in (("Free20", kid, 20), ("Free28", kid + "28", 28), ("Story28", kid + "st", 28)):
            rows.append({"file": f"Bates/{folder}/{stem}.cha", "age_months": age})
    for kid in ("Jimmy", "Michael", "Tim"):
        for parent in ("father", "mother"):
            for k in range(3):
                rows.append({"file": f"Demetras2/{kid}/{parent}/02020{k}.cha", "age_months": 26 + k})
    docs = pd.DataFrame(rows)
    docs["corpus"] = docs["file"].str.split("/").str[0]
    docs["child"] = docs["file"].str.split("/").str[1]  # what corpora.chat gives: the folder
    docs["n_utterances"] = 100
    docs["mlu_m"] = -0.5 + 0.1 * docs["age_months"] + rng.normal(0, 0.2, len(docs))
    docs["mean_aoa"] = 4.0 + rng.normal(0, 0.1, len(docs))
    docs["ndw_100"] = 40 + rng.normal(0, 3, len(docs))
    docs["overreg_rate"] = np.nan
    table = dev.training_table(docs, dev.AgeFitConfig())
    assert table["child_id"].nunique() == 11  # 8 Bates children + 3 Demetras2 children, not 7 folders
    pred = dev.cross_validate(table, dev.AgeFitConfig(n_splits=5, n_boot=50))
    by_child = pred[pred["scheme"] == "by_child"]
    assert by_child.groupby("child_id")["fold"].nunique().max() == 1
    assert by_child.groupby("fold")["child_id"].nunique().min() >= 2


# ----------------------------------------------------------------------------- %mor features


def _utt(items: list[str]) -> dict:
    from corpora.mor import coarse_pos

    return {"file": "a", "utterance": " ".join(i.split("|")[1].split("-")[0] for i in items) + " .",
            "mor": items, "pos": [coarse_pos(i) for i in items]}


def test_article_omission_per_obligatory_context_on_hand_made_mor():
    utts = [
        ["verb|want-Fin-Ind-Pres-S1", "noun|ball"],                           # omitted: want ball
        ["det|the-Def-Art", "adj|big-Pos-S1", "noun|ball"],                  # supplied across an adjective
        ["pron|my-Prs-Gen-S1", "noun|ball"],                                  # possessive supplies it
        ["num|two", "noun|ball-Plur"],                                        # plural: no context
        ["noun|Mummy", "verb|go-Fin-Ind-Pres-S3"],                            # a name: no context
        ["adj|big-Pos-S1", "noun|toy", "noun|car"],                           # one context (car), omitted
        ["noun|ball"],                                                        # one-word naming: no context
        ["det|a-Ind-Art", "noun|dog", "verb|bark-Fin-Ind-Pres-S3"],           # supplied
        ["n:prop|Daddy", "poss|s", "n|car"],                                   # CLAN style: Daddy's car
        ["v|want", "n|cookie"],                                                # CLAN style: omitted
    ]
    frame = pd.DataFrame([_utt(u) for u in utts])
    stats = af.mor_stats(frame)
    assert stats["art_contexts"].tolist() == [1, 1, 1, 0, 0, 1, 0, 1, 1, 1]
    assert stats["art_omitted"].tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    doc = af.document_features(frame.assign(unintelligible=False), "file").iloc[0]
    assert doc["art_omission_rate"] == pytest.approx(3 / 7)
    # inflections: 1 plural of 10 common nouns (ball x4 incl. the plural, toy, car, ball, dog, car, cookie)
    assert doc["plural_rate"] == pytest.approx(1 / 10)
    assert doc["s3_rate"] == pytest.approx(2 / 4)  # goes, barks of want, go, bark, want
    # no %mor (model text): the %mor features are NaN, never 0
    text_only = af.document_features(frame.drop(columns=["mor", "pos"]).assign(unintelligible=False), "file").iloc[0]
    assert np.isnan(text_only["art_omission_rate"]) and np.isnan(text_only["past_rate"])
    assert text_only["mlu_m"] == doc["mlu_m"]


def test_inflection_rates_both_mor_styles():
    utts = [["verb|go-Fin-Ind-Past-S3"], ["verb|run-Part-Pres-S"], ["v|go&PAST"], ["v|want-3S"], ["v|run-PRESP"],
            ["aux|be-Fin-Ind-Pres-S3", "verb|jump-Part-Pres-S"]]
    stats = af.mor_stats(pd.DataFrame([_utt(u) for u in utts]))
    assert stats["n_verbs"].sum() == 6
    assert stats["n_past"].tolist() == [1, 0, 1, 0, 0, 0]
    assert stats["n_prog"].tolist() == [0, 1, 0, 0, 1, 1]
    assert stats["n_s3"].tolist() == [0, 0, 0, 1, 0, 0]
    assert stats["n_aux"].tolist() == [0, 0, 0, 0, 0, 1]

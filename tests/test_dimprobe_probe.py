"""dim-probe end to end on tiny real models: a planted signal is found, a null finds nothing,
ablation zeroes what it says, and the CLI writes the tidy tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from _dimprobe_fixtures import (
    NoiseBlocks,
    PlantedSignal,
    noun_token_ids,
    stories,
    tiny_config,
    tiny_probe_model,
    word_tokenizer,
)
from scipy import stats as sps

from evalsuite.dimprobe.ablate import parse_component, zeroed_components
from evalsuite.dimprobe.collect import ProbeText, capture_residuals
from evalsuite.dimprobe.probe import ProbeConfig, load_probe_texts, run_probe

pytestmark = pytest.mark.slow

DOCS = stories(24, seed=11)


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(DOCS)


@pytest.fixture(scope="module")
def planted_result(tokenizer):
    """A tiny SpinNet whose component e5 fires (+3 after every block) on tokens spaCy tags NOUN."""
    probe = tiny_probe_model(tokenizer, seed=1)
    nouns = noun_token_ids(DOCS, tokenizer)
    assert len(nouns) >= 10
    plant = PlantedSignal(probe.model, 8, 5, nouns, 3.0)
    try:
        config = ProbeConfig(permutations=200, bootstrap=200, ablate=["e5"], seed=0, ablate_null_draws=10,
                             selectivity=True, selectivity_tokens=1500, selectivity_categories=["NOUN"])
        return run_probe(probe, [ProbeText(d) for d in DOCS], config)
    finally:
        plant.remove()


def test_planted_noun_signal_is_recovered(planted_result):
    res = planted_result
    t = res.table[res.table["model"] == "probe"]
    for layer in (1, 2):  # the signal is added after each block, not in the embedding (layer 0)
        noun = t[(t["category"] == "NOUN") & (t["layer"] == layer)].set_index("component")
        assert noun["ratio"].idxmax() == "e5" and noun.loc["e5", "rank_ratio"] == 1
        assert noun.loc["e5", "rank_mean"] == 1
        assert noun.loc["e5", "p"] < 0.01 and noun.loc["e5", "p_norm_adj"] < 0.01
        assert noun.loc["e5", "ci_low"] > noun.drop("e5")["ci_high"].max()
    emb = t[(t["category"] == "NOUN") & (t["layer"] == 0)].set_index("component")
    assert emb.loc["e5", "ratio"] < 1.5  # no planted signal before the first block
    spec = res.specialisation.set_index(["model", "layer", "category"])
    assert spec.loc[("probe", 2, "NOUN"), "spec_component"] == "e5"
    assert spec.loc[("probe", 2, "NOUN"), "spec_p"] < 0.01
    # the planted model's noun specialisation exceeds both controls; the embedding layer's does not
    # exceed the untrained twin (same init family, no signal there)
    cmp = res.controls.set_index(["control", "layer", "category"])
    assert cmp.loc[("untrained", 2, "NOUN"), "exceeds_control"]
    assert cmp.loc[("baseline", 2, "NOUN"), "exceeds_control"]
    assert not cmp.loc[("untrained", 0, "NOUN"), "exceeds_control"]
    top = res.top.set_index(["model", "layer", "category"])
    assert top.loc[("probe", 2, "NOUN"), "top_by_ratio"].startswith("e5")
    # the claim table holds every model; for nouns the probed model measures e5 first, and the claim
    # (e0 e1 e7) is refuted beyond the controls: its claimed components lead less than in every control
    assert set(res.claims["model"]) == {"probe", "untrained", "untrained#2", "baseline"}
    assert 0 not in set(res.claims["layer"])  # the embedding is no evidence about the algebra
    claims = res.claims[(res.claims["layer"] == 2) & (res.claims["model"] == "probe")].set_index("category")
    assert claims.loc["NOUN", "measured_by_mean"].startswith("e5")
    assert claims.loc["NOUN", "verdict_within_model"] == "refuted"
    assert claims.loc["NOUN", "verdict"] == "refuted", claims.loc["NOUN", "rule_note"]
    assert claims.loc["NOUN", "min_margin"] > claims.loc["NOUN", "control_spread"]
    assert (res.claims[res.claims["role"] == "control"]["verdict"] == "control").all()
    assert set(res.claims["verdict"]) <= {"supported", "refuted", "not_distinguishable_from_control",
                                          "uncertain", "not testable", "control"}
    # controls exist with their own rows
    assert set(res.table["model"]) == {"probe", "untrained", "untrained#2", "baseline"}
    assert res.summary.n_docs == len(DOCS)
    assert res.summary.n_tokens["probe"] == res.documents["n_tokens"].sum() > 1000


def test_tidy_columns_and_counts(planted_result):
    t = planted_result.table
    for col in ("layer", "component", "category", "mean", "ci_low", "ci_high", "z", "p", "p_adj",
                "n_tokens", "n_docs", "ratio", "rank_mean", "rank_ratio", "z_perm", "p_norm"):
        assert col in t.columns
    probe = t[t["model"] == "probe"]
    n_noun = planted_result.documents["n_NOUN"].sum()
    assert (probe[probe["category"] == "NOUN"]["n_tokens"] == n_noun).all()
    assert (probe[probe["category"] == "ALL"]["n_tokens"] == planted_result.summary.n_tokens["probe"]).all()
    # one row per layer x component x (categories + ALL) per model
    assert len(probe) == 3 * 8 * (len(planted_result.summary.categories) + 1)


def test_ablation_reports_loss_change_per_category(planted_result):
    from evalsuite.stats import permutation_p

    raw = planted_result.ablation
    # the null: 10 random subspaces of e5's dimension, zero- and mean-ablated, as rows of their own
    n_comp_rows = (raw["kind"] == "component").sum()  # e5 and e5:mean, per category present
    assert (raw["kind"] == "random_subspace").sum() == 10 * n_comp_rows
    comp = raw[(raw["kind"] == "component") & (raw["category"] == "ALL")].set_index("method")
    null = raw[(raw["kind"] == "random_subspace") & (raw["category"] == "ALL") & (raw["method"] == "zero")]
    assert comp.loc["zero", "null_n"] == 10
    assert comp.loc["zero", "p_vs_random"] == pytest.approx(
        permutation_p(comp.loc["zero", "delta_nats"], null["delta_nats"].to_numpy(), "greater"))
    assert comp.loc["zero", "null_low"] <= comp.loc["zero", "null_mean"] <= comp.loc["zero", "null_high"]
    assert comp.loc["mean", "delta_nats"] != comp.loc["zero", "delta_nats"]  # mean-ablation is another edit
    assert null["delta_nats"].nunique() > 1  # the draws are distinct subspaces
    abl = raw[raw["kind"] == "component"].set_index(["ablation", "category"])
    row = abl.loc[("e5", "ALL")]
    assert row["n_tokens"] == planted_result.summary.n_tokens["probe"]
    assert row["delta_nats"] != 0 and row["delta_ci_low"] <= row["delta_nats"] <= row["delta_ci_high"]
    # bits per character is nats summed over tokens / (characters * ln 2)
    expected = row["clean_nats"] * row["n_tokens"] / (row["n_chars"] * math.log(2))
    assert row["clean_bpc"] == pytest.approx(expected)
    assert abl.loc[("e5", "NOUN"), "n_tokens"] == planted_result.documents["n_NOUN"].sum()


def test_selectivity_finds_the_planted_component(planted_result):
    """Hewitt & Liang selectivity: the planted noun component e5 predicts NOUN far better than the
    control task (random label per word type); components without the plant do not."""
    sel = planted_result.selectivity
    probe = sel[(sel["model"] == "probe") & (sel["category"] == "NOUN")].set_index("component")
    assert set(sel["model"]) == {"probe", "untrained", "untrained#2", "baseline"} and set(sel["layer"]) == {2}
    assert probe.loc["e5", "accuracy"] > 0.9
    assert probe.loc["e5", "selectivity"] > 0.1
    assert probe.loc["e5", "selectivity"] > probe.drop("e5")["selectivity"].max()
    assert (probe["n_tokens"] <= 1500 + 200).all() and (probe["folds"] == 3).all()


def test_shares_and_next_token_position(tokenizer):
    """Shares: the squares of a token's n shares sum to 1. Loss position: token i's loss is the loss
    of predicting token i + 1 (end-of-text after the last) from token i's state."""
    import torch.nn.functional as F

    from evalsuite.dimprobe.collect import forward_docs, prepare_doc

    run = tiny_probe_model(tokenizer, seed=2)
    text = ProbeText(DOCS[0][:150])  # shorter than the block: one window, full context
    doc = prepare_doc(0, text, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                      np.zeros((0, 5), dtype=bool), tokenizer)
    [out] = forward_docs(run, [doc], [0, 1, 2], need_nll=True, statistic="share")
    assert np.allclose((out.mags ** 2).sum(axis=-1), 1.0, atol=1e-5)
    [raw] = forward_docs(run, [doc], [2], statistic="norm")
    assert not np.allclose((raw.mags ** 2).sum(axis=-1), 1.0)
    eot = tokenizer.eot_id
    seq = torch.tensor([[eot, *doc.ids.tolist(), eot]])
    with torch.inference_mode():
        logits = run.model(seq[:, :-1]).logits[0]
    expected = F.cross_entropy(logits[1:], seq[0, 2:], reduction="none").numpy()
    assert len(doc.ids) + 1 <= run.block_size and np.allclose(out.nll, expected, atol=1e-4)


def test_untrained_probe_earns_no_verdict(tokenizer):
    """A random model probed against its controls: no claim comes out supported or refuted."""
    verdicts = set()
    for seed in (4, 6):  # two untrained probes, each against two untrained twins and an untrained baseline
        probe = tiny_probe_model(tokenizer, seed=seed)
        res = run_probe(probe, [ProbeText(d) for d in DOCS], ProbeConfig(permutations=0, bootstrap=200, seed=seed))
        rows = res.claims[res.claims["role"] == "probed"]
        assert len(rows) == 2 * 6  # layers 1, 2 (not the embedding) x 5 categories + "e0 first"
        verdicts |= set(rows["verdict"])
    assert verdicts <= {"not_distinguishable_from_control", "uncertain"}, verdicts
    # below min_docs nothing but "uncertain"
    few = run_probe(probe, [ProbeText(d) for d in DOCS], ProbeConfig(permutations=0, bootstrap=50, min_docs=30))
    assert set(few.claims[few.claims["role"] == "probed"]["verdict"]) <= {"uncertain"}
    assert any("min_docs" in w for w in few.summary.warnings)


def test_zeroed_components_removes_the_component_everywhere(tokenizer):
    run = tiny_probe_model(tokenizer, seed=2)
    idx = torch.tensor([tokenizer.encode(DOCS[0])[:40]])
    with torch.inference_mode(), zeroed_components(run.model, 8, [3]), \
            capture_residuals(run.model, [0, 1, 2], stop=False) as store:
        logits_ablated = run.model(idx).logits
    for layer in range(3):
        comps = store[layer].view(1, 40, 8, 8)
        assert comps[..., 3, :].abs().max() == 0 and comps[..., 4, :].abs().max() > 0
    with torch.inference_mode():
        assert not torch.allclose(run.model(idx).logits, logits_ablated)  # hooks removed afterwards
        with capture_residuals(run.model, [2], stop=False) as store:
            run.model(idx)
    assert store[2].view(1, 40, 8, 8)[..., 3, :].abs().max() > 0
    assert parse_component("e7", 8) == 7
    from corpora.errors import UserError

    with pytest.raises(UserError, match="e0..e7"):
        parse_component("e8", 8)
    with pytest.raises(UserError, match="like e5"):
        parse_component("five", 8)


def test_no_signal_gives_uniform_pvalues_and_no_discoveries(tokenizer):
    """States that are pure noise (independent of the text): p-values uniform, nothing significant."""
    probe = tiny_probe_model(tokenizer, seed=3)
    noise = NoiseBlocks(probe.model, seed=4)
    try:
        config = ProbeConfig(layers=[1, 2], permutations=200, bootstrap=50, seed=5)
        res = run_probe(probe, [ProbeText(d) for d in DOCS], config, controls=[])
    finally:
        noise.remove()
    t = res.table[res.table["category"] != "ALL"]
    p = t["p"].dropna().to_numpy()
    assert len(p) >= 150
    assert sps.kstest(p, "uniform").pvalue > 0.01
    assert (p < 0.05).mean() < 0.12
    assert not t["significant"].any()
    assert (t["p_norm_adj"].dropna() > 0.05).all()


def test_load_probe_texts_samples_and_corpus(tmp_path):
    samples = tmp_path / "samples.jsonl"
    rows = [{"prompt_id": "p1", "prompt": "Once upon a time", "completion": ", a dog ran.", "checkpoint_id": "a"},
            {"prompt_id": "p2", "prompt": "Lily saw", "completion": " a cat.", "checkpoint_id": "b"}]
    samples.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    texts, info = load_probe_texts(samples)
    assert texts[0].text == "Once upon a time, a dog ran." and texts[0].analyse_from == len("Once upon a time")
    assert info["samples_per_checkpoint"] == {"a": 1, "b": 1}
    texts, _ = load_probe_texts(samples, include_prompt=True)
    assert texts[1].analyse_from == 0
    corpus = tmp_path / "c.txt"
    corpus.write_text("One story.<|endoftext|>Two story.")
    texts, info = load_probe_texts(corpus)
    assert [t.text for t in texts] == ["One story.", "Two story."] and info["kind"] == "corpus"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"completion": 3}) + "\n")
    from corpora.errors import UserError

    with pytest.raises(UserError, match="line 1"):
        load_probe_texts(bad)


def test_cli_end_to_end(tmp_path, tokenizer, capsys):
    from corpora.tokenized import write_tokenized
    from evalsuite.cli import main
    from trainers.checkpoint import write_checkpoint
    from trainers.config import RunConfig, TrainConfig
    from trainers.model import build_model

    torch.manual_seed(0)
    cfg = RunConfig(model=tiny_config(tokenizer.vocab_size), train=TrainConfig(block_size=64, tokenizer="bpe"))
    val = tmp_path / "val.bin"
    write_tokenized(DOCS[:6], tokenizer, val)
    ckpt = write_checkpoint(tmp_path / "run", "best", model=build_model(cfg.model), config=cfg, tokenizer=tokenizer,
                            state={"iter_num": 0, "val_loss": None, "data": {"val_path": str(val)}})
    base_cfg = RunConfig(model=tiny_config(tokenizer.vocab_size, "baseline"),
                         train=TrainConfig(block_size=64, tokenizer="bpe"))
    write_checkpoint(tmp_path / "base", "best", model=build_model(base_cfg.model), config=base_cfg,
                     tokenizer=tokenizer, state={"iter_num": 5, "val_loss": 3.0})
    samples = tmp_path / "samples.jsonl"
    with samples.open("w") as handle:
        for i, doc in enumerate(DOCS[:10]):
            cut = doc.index(".") + 1
            handle.write(json.dumps({"prompt_id": str(i), "prompt": doc[:cut], "completion": doc[cut:]}) + "\n")
    out = tmp_path / "out"
    argv = ["dim-probe", str(tmp_path / "run"), "--text", str(samples), "--permutations", "30", "--bootstrap", "30",
            "--ablate", "e5", "--ablate-null-draws", "3", "--layers", "0,-1", "--out", str(out), "--no-progress",
            "--control", str(tmp_path / "base")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    printed = capsys.readouterr()
    assert "top components per category" in printed.out and "original claim" in printed.out
    table = pd.read_csv(out / "dim_probe.csv")
    assert {"layer", "component", "category", "mean", "ci_low", "ci_high", "z", "p", "p_adj",
            "n_tokens", "n_docs"} <= set(table.columns)
    assert sorted(table["layer"].unique()) == [0, 2]
    assert set(table["model"]) == {"probe", "untrained", "untrained#2", "baseline", "baseline:base"}
    assert set(table["statistic"]) == {"share"}
    mixer = cfg.model.octonion_attention  # the resolved setting (on by default for SpinNet since issue 12)
    assert f"octonion_attention (head mixer)={mixer}" in printed.out and "layer 0 = embedding" in printed.out
    claims = pd.read_csv(out / "claims.csv")
    assert set(claims["model"]) == {"probe", "untrained", "untrained#2", "baseline", "baseline:base"}
    assert set(claims[claims["model"] == "probe"]["verdict"]) <= {"uncertain"}  # 10 documents < min_docs
    meta = json.loads((out / "meta.json").read_text())
    from evalsuite.results import validate_meta

    assert validate_meta(meta) == []
    assert meta["models"]["probe"]["octonion_attention"] is mixer and meta["models"]["baseline:base"]["trained"]
    assert meta["layers"]["0"] == "embedding" and "min_docs" in meta["claim_rule"]
    assert set(meta["columns"]["claims.csv"]) >= {"verdict", "model", "claim_score"}
    assert meta["summary"]["config"]["permutations"] == 30
    assert meta["summary"]["text_source"]["kind"].startswith("samples")
    assert str(ckpt) in meta["summary"]["models"]["probe"]["path"]
    for name in ("specialisation.csv", "controls.csv", "claims.csv", "top_components.csv", "ablation.csv",
                 "documents.csv"):
        assert (out / name).is_file()
    # completions only: the analysed characters are the completions'
    docs = pd.read_csv(out / "documents.csv")
    assert docs["n_chars"].sum() == sum(len(d) - (d.index(".") + 1) for d in DOCS[:10])

    # no --text: the checkpoint's validation split, decoded
    out2 = tmp_path / "out2"
    with pytest.raises(SystemExit) as exit_info:
        main(["dim-probe", str(ckpt), "--no-controls", "--permutations", "10", "--bootstrap", "10",
              "--out", str(out2), "--no-progress"])
    assert exit_info.value.code == 0
    meta2 = json.loads((out2 / "meta.json").read_text())
    assert meta2["summary"]["n_docs"] == 6 and meta2["summary"]["text_source"]["kind"].startswith("validation")

    # bad input: one clear line, exit code 2
    with pytest.raises(SystemExit) as exit_info:
        main(["dim-probe", str(ckpt), "--text", str(samples), "--ablate", "e9", "--out", str(out2)])
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_baseline_probe_and_other_component_counts(tokenizer, tmp_path):
    """A baseline model probes with its component_split; n != 8 has no claim table; user categories
    and --max-docs flow through."""
    from evalsuite.dimprobe.collect import ModelUnderProbe
    from trainers.config import ModelConfig
    from trainers.model import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(family="baseline", vocab_size=tokenizer.vocab_size, n_layer=1, n_head=4, d_model=32,
                      max_seq_len=128, component_split=4)
    model = build_model(cfg).eval()
    run = ModelUnderProbe("probe", model, tokenizer, 64, model.n_components, "tiny baseline, 4 blocks")
    cats = tmp_path / "cats.yaml"
    cats.write_text("categories:\n  ANIMAL:\n    words: [dog, cat, bird, frog, bunny, duck]\n")
    config = ProbeConfig(permutations=20, bootstrap=20, categories_file=str(cats), max_docs=6)
    res = run_probe(run, [ProbeText(d) for d in DOCS[:8]], config)
    assert res.summary.n_docs == 6
    animal = res.table[(res.table["category"] == "ANIMAL") & (res.table["model"] == "probe")]
    assert len(animal) == 2 * 4 and (animal["n_tokens"] == res.documents["n_ANIMAL"].sum()).all()
    assert res.documents["n_ANIMAL"].sum() >= 6  # every story has an animal
    assert set(res.table["component"]) == {"e0", "e1", "e2", "e3"}
    assert set(res.table["model"]) == {"probe", "untrained", "untrained#2"}  # no second untrained baseline
    assert res.claims.empty and any("8 octonion" in w for w in res.summary.warnings)
    assert np.isfinite(res.table[res.table["category"] == "NOUN"]["mean"]).all()

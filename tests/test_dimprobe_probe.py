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
        config = ProbeConfig(permutations=200, bootstrap=200, ablate=["e5"], seed=0)
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
    # the claim table is there and, for nouns, measures e5 first
    claims = res.claims[(res.claims["layer"] == 2)].set_index("category")
    assert claims.loc["NOUN", "measured_by_mean"].startswith("e5")
    assert claims.loc["NOUN", "verdict"] == "refuted"
    # controls exist with their own rows
    assert set(res.table["model"]) == {"probe", "untrained", "baseline"}
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
    abl = planted_result.ablation.set_index(["ablation", "category"])
    row = abl.loc[("e5", "ALL")]
    assert row["n_tokens"] == planted_result.summary.n_tokens["probe"]
    assert row["delta_nats"] != 0 and row["delta_ci_low"] <= row["delta_nats"] <= row["delta_ci_high"]
    # bits per character is nats summed over tokens / (characters * ln 2)
    expected = row["clean_nats"] * row["n_tokens"] / (row["n_chars"] * math.log(2))
    assert row["clean_bpc"] == pytest.approx(expected)
    assert abl.loc[("e5", "NOUN"), "n_tokens"] == planted_result.documents["n_NOUN"].sum()


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
    samples = tmp_path / "samples.jsonl"
    with samples.open("w") as handle:
        for i, doc in enumerate(DOCS[:10]):
            cut = doc.index(".") + 1
            handle.write(json.dumps({"prompt_id": str(i), "prompt": doc[:cut], "completion": doc[cut:]}) + "\n")
    out = tmp_path / "out"
    argv = ["dim-probe", str(tmp_path / "run"), "--text", str(samples), "--permutations", "30", "--bootstrap", "30",
            "--ablate", "e5", "--layers", "0,-1", "--out", str(out), "--no-progress"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    printed = capsys.readouterr()
    assert "top components per category" in printed.out and "original claim" in printed.out
    table = pd.read_csv(out / "dim_probe.csv")
    assert {"layer", "component", "category", "mean", "ci_low", "ci_high", "z", "p", "p_adj",
            "n_tokens", "n_docs"} <= set(table.columns)
    assert sorted(table["layer"].unique()) == [0, 2]
    assert set(table["model"]) == {"probe", "untrained", "baseline"}
    meta = json.loads((out / "meta.json").read_text())
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
    assert set(res.table["model"]) == {"probe", "untrained"}  # no second untrained baseline
    assert res.claims.empty and any("8 octonion" in w for w in res.summary.warnings)
    assert np.isfinite(res.table[res.table["category"] == "NOUN"]["mean"]).all()

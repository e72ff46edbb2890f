"""Training dynamics: effective rank, loss-curve phases, train/val gap, dead/dominant/saturated components."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny_run import tiny_run

from corpora.errors import UserError
from evalsuite import dynamics as dy
from trainers.config import ModelConfig
from trainers.metrics import read_metrics
from trainers.model import build_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def _orthonormal(rows: int, cols: int, rng: np.random.Generator, centered: bool = False) -> np.ndarray:
    a = rng.normal(size=(rows, cols))
    if centered:
        a -= a.mean(axis=0)
    q, _ = np.linalg.qr(a)
    if centered:  # Gram-Schmidt on centred columns keeps them centred (the span holds no constant)
        q -= q.mean(axis=0)
    return q


@pytest.mark.parametrize("k", [1, 3, 7])
def test_effective_rank_of_a_rank_k_matrix_with_equal_singular_values_is_k(k):
    rng = np.random.default_rng(k)
    u, v = _orthonormal(200, k, rng), _orthonormal(40, k, rng)
    matrix = 3.0 * u @ v.T  # rank k, k equal singular values
    assert dy.effective_rank(matrix, center=False) == pytest.approx(k, rel=1e-6)
    centred = 2.0 * _orthonormal(200, k, rng, centered=True) @ v.T
    assert dy.effective_rank(centred, center=True) == pytest.approx(k, rel=1e-3)


def test_effective_rank_is_below_k_for_unequal_spectra_and_centering_removes_an_offset():
    rng = np.random.default_rng(0)
    u, v = _orthonormal(300, 4, rng), _orthonormal(16, 4, rng)
    skewed = u @ np.diag([10.0, 1.0, 0.1, 0.01]) @ v.T
    value = dy.effective_rank(skewed, center=False)
    assert 1.0 < value < 2.0  # one dominant direction
    noise = rng.normal(size=(500, 16))
    with_offset = noise + 50.0  # a shared offset is one huge direction when not centred
    assert dy.effective_rank(with_offset, center=False) < 3
    assert dy.effective_rank(with_offset, center=True) > 13
    with pytest.raises(ValueError):
        dy.effective_rank(np.zeros(5))


def _write_stream(run, records):
    run.mkdir(parents=True, exist_ok=True)
    keys = ("step", "tokens_seen", "train_loss", "train_objective", "val_loss", "val_bpc", "lr", "grad_norm",
            "tokens_per_s", "article_loss", "other_loss", "article_other_ratio", "component_grad_norms")
    with open(run / "metrics_stream.jsonl", "w", encoding="utf-8") as handle:
        for r in records:
            handle.write(json.dumps({k: r.get(k) for k in keys}) + "\n")


def _planted_curve(tmp_path, noise=0.0):
    """Rapid drop over 1e3..1e5 tokens (-2 nats/decade), plateau to 1e6, slow decline to 1e8."""
    tokens = np.logspace(3, 8, 51)
    x = np.log10(tokens)
    loss = np.where(x <= 5, 8.0 - 2.0 * (x - 3), np.where(x <= 6, 4.0, 4.0 - 0.3 * (x - 6)))
    loss = loss + np.random.default_rng(0).normal(0.0, noise, size=loss.shape)
    records = [{"step": 0, "tokens_seen": 0, "val_loss": 10.8, "val_bpc": 10.8 * 0.4}]
    for i, (t, v) in enumerate(zip(tokens, loss, strict=True), start=1):
        records.append({"step": i, "tokens_seen": int(t), "train_loss": float(v) - 0.05, "val_loss": float(v),
                        "val_bpc": float(v) * 0.4, "component_grad_norms": [0.1 * k for k in range(8)]})
    run = tmp_path / "planted"
    _write_stream(run, records)
    return run


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_loss_phases_recover_planted_phases_and_breakpoints(tmp_path, noise):
    frame = dy.metrics_frame(_planted_curve(tmp_path, noise))
    phases = dy.loss_phases(frame, "val_loss")
    assert list(phases["label"]) == ["rapid-drop", "plateau", "slow-decline"]
    assert phases["slope_per_decade"].tolist() == pytest.approx([-2.0, 0.0, -0.3], abs=0.04 if noise else 1e-3)  # tokens are integers
    # the breakpoints sit at 1e5 and 1e6 tokens (within one sample, 10^0.1)
    assert math.log10(phases["end_tokens"].iloc[0]) == pytest.approx(5.0, abs=0.11)
    assert math.log10(phases["start_tokens"].iloc[2]) == pytest.approx(6.0, abs=0.11)
    assert (phases["n_segments"] == 3).all()
    assert phases["start_tokens"].min() > 0  # the step-0 point has no log and is left out


def test_loss_phases_choose_one_segment_for_a_straight_line(tmp_path):
    tokens = np.logspace(3, 6, 20)
    records = [{"step": i + 1, "tokens_seen": int(t), "val_loss": 5.0 - 0.5 * math.log10(t)}
               for i, t in enumerate(tokens)]
    _write_stream(tmp_path / "line", records)
    phases = dy.loss_phases(dy.metrics_frame(tmp_path / "line"))
    assert len(phases) == 1 and phases["label"].iloc[0] == "slow-decline"


def test_metrics_frame_converts_to_bits_per_char_with_the_split_counts(tmp_path):
    run = _planted_curve(tmp_path)
    (run / "latest").mkdir()
    data = {"train_tokens": 1000, "train_chars": 4000, "val_tokens": 100, "val_chars": 500}
    (run / "latest" / "trainer_state.json").write_text(json.dumps({"model_family": "spinnet", "data": data}))
    frame = dy.metrics_frame(run)
    row = frame[frame["step"] == 5].iloc[0]
    assert row["train_bpc"] == pytest.approx(row["train_loss"] * 1000 / (4000 * math.log(2)))
    assert row["model_family"] == "spinnet"
    assert set(frame["train_bpc_source"]) == {"train split"}
    grads = dy.component_grad_norms(run)
    assert len(grads) == 51 * 8 and grads["grad_norm"].max() == pytest.approx(0.7)


def test_train_val_gap_uses_the_smoothed_train_loss(tmp_path):
    records = [{"step": 0, "tokens_seen": 0, "val_loss": 5.0, "val_bpc": 2.0}]
    train_losses = [4.0, 3.9, 3.8, 3.7, 3.6, 3.5]
    for step, loss in enumerate(train_losses, start=1):
        records.append({"step": step, "tokens_seen": step * 100, "train_loss": loss,
                        "val_loss": 3.9 if step == 6 else None, "val_bpc": 1.56 if step == 6 else None})
    _write_stream(tmp_path / "gap", records)
    gap = dy.train_val_gap(dy.metrics_frame(tmp_path / "gap"), window=3)
    last = gap[gap["step"] == 6].iloc[0]
    assert last["train_loss_smoothed"] == pytest.approx(np.mean([3.7, 3.6, 3.5]))
    assert last["gap_nats"] == pytest.approx(3.9 - 3.6)
    assert last["train_loss_n"] == 3
    assert math.isnan(gap[gap["step"] == 0].iloc[0]["gap_nats"])  # no train loss before step 1


def test_a_torn_last_line_is_dropped_but_a_bad_middle_line_is_an_error(tmp_path):
    run = tmp_path / "torn"
    _write_stream(run, [{"step": 1, "tokens_seen": 10, "train_loss": 3.0}, {"step": 2, "tokens_seen": 20}])
    with open(run / "metrics_stream.jsonl", "a") as handle:
        handle.write('{"step": 3, "tok')
    assert [r["step"] for r in read_metrics(run)] == [1, 2]
    lines = (run / "metrics_stream.jsonl").read_text().splitlines()
    (run / "metrics_stream.jsonl").write_text("\n".join([lines[0], "not json", lines[1]]) + "\n")
    with pytest.raises(UserError, match=":2: not valid JSON"):
        read_metrics(run)


def _spinnet(**overrides):
    cfg = ModelConfig(family="spinnet", vocab_size=50, n_layer=2, n_head=8, d_model=64, max_seq_len=64, **overrides)
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_component_stats_find_a_planted_dead_and_a_planted_dominant_component():
    model = _spinnet()
    with torch.no_grad():
        model.blocks[0].mlp.up.weight[3].zero_()  # component e3 of one layer: all trits 0
        model.blocks[1].attn.v.weight[5].mul_(20.0)  # e5 of another layer carries the layer's scale
    stats = dy.component_weight_stats(model)
    assert len(stats) == 2 * 6 * 8  # layers x linears per block (q k v proj up down) x components
    dead = stats[stats["dead"]]
    assert list(zip(dead["layer"], dead["component"], strict=True)) == [("blocks.0.mlp.up", 3)]
    assert dead["zero_share"].iloc[0] == 1.0
    dominant = stats[stats["dominant"]]
    assert list(zip(dominant["layer"], dominant["component"], strict=True)) == [("blocks.1.attn.v", 5)]
    # the other components of that layer are pushed to zero by the shared absmean scale
    others = stats[(stats["layer"] == "blocks.1.attn.v") & (stats["component"] != 5)]
    assert (others["zero_share"] > 0.7).all()
    shares = stats.groupby("layer")["norm_share"].sum()
    assert np.allclose(shares, 1.0)
    summary = dy.component_summary(stats)
    overall = summary[summary["layer"] == "all"].iloc[0]
    assert overall["dead_ratio"] == pytest.approx(1 / 96)
    assert summary.set_index("layer").loc["blocks.0.mlp.up", "dead_ratio"] == pytest.approx(1 / 8)


def test_the_baseline_has_no_weight_components():
    cfg = ModelConfig(family="baseline", vocab_size=50, n_layer=1, n_head=8, d_model=64, max_seq_len=64)
    baseline = build_model(cfg)
    assert dy.component_weight_stats(baseline).empty
    assert dy.activation_component_stats(baseline, torch.zeros(1, 4, dtype=torch.long)).empty


def test_activation_stats_flag_a_component_that_owns_the_quantisation_scale():
    model = _spinnet(act_bits=8)
    with torch.no_grad():
        model.blocks[0].attn_norm.weight[2 * 8 : 3 * 8].mul_(1000.0)  # e2 of the attention input dwarfs the rest
    idx = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    acts = dy.activation_component_stats(model, idx)
    q = acts[acts["layer"] == "blocks.0.attn.q"].set_index("component")
    assert q.loc[2, "scale_owner_share"] == 1.0 and q.loc[2, "saturated"]
    assert q.drop(index=2)["scale_owner_share"].sum() == 0.0
    assert (q.drop(index=2)["zero_share"] > 0.9).all()  # their small values round to 0 at that scale
    assert q.loc[2, "at_bound_share"] > 0
    assert acts["act_bits_active"].all()
    # k and v read the input of q: reported once; per block q, proj, up, down remain
    assert sorted(acts["layer"].unique()) == sorted(f"blocks.{b}.{m}" for b in (0, 1)
                                                    for m in ("attn.q", "attn.proj", "mlp.up", "mlp.down"))
    owners = acts.groupby("layer")["scale_owner_share"].sum()
    assert np.allclose(owners, 1.0)


def test_hidden_state_ranks_cover_every_layer_and_component():
    model = _spinnet()
    idx = torch.randint(0, 50, (4, 32), generator=torch.Generator().manual_seed(1))
    ranks = dy.hidden_state_ranks(model, idx)
    assert sorted(ranks["layer"].unique()) == [0, 1, 2]
    assert len(ranks) == 3 * (1 + 8)
    whole = ranks[ranks["scope"] == "all"]
    assert (whole["erank"] <= 64 + 1e-9).all() and (whole["erank"] > 1).all()
    comps = ranks[ranks["scope"] == "component"]
    assert (comps["erank"] <= 8 + 1e-9).all() and (comps["dim"] == 8).all()
    assert whole["n_vectors"].iloc[0] == 4 * 32


def test_token_batch_is_deterministic_blocks():
    batch = dy.token_batch(list(range(100)), block_size=16, n_blocks=4)
    assert batch.shape == (4, 16) and batch[1, 0].item() == 16
    assert dy.token_batch(list(range(10)), block_size=16, n_blocks=4).shape == (1, 10)
    with pytest.raises(UserError):
        dy.token_batch([], 16, 4)


def test_run_dynamics_on_a_real_run_writes_tidy_tables(run_dir, tmp_path):
    written = dy.write_dynamics([run_dir], tmp_path / "dynamics", checkpoints="all", n_blocks=2)
    names = {p.name for p in written}
    assert {"curves.csv", "gap.csv", "phases.csv", "components.csv", "component_summary.csv", "activations.csv",
            "ranks.csv", "meta.json"} <= names
    curves = pd.read_csv(tmp_path / "dynamics" / "curves.csv")
    assert curves["step"].tolist() == list(range(7))  # log_interval 1, steps 0..6
    assert curves["val_loss"].notna().sum() == 3  # evaluations at 0, 3, 6
    ranks = pd.read_csv(tmp_path / "dynamics" / "ranks.csv")
    assert set(ranks["checkpoint"]) == {"step_0000003", "latest", "best"}
    components = pd.read_csv(tmp_path / "dynamics" / "components.csv")
    assert components["zero_share"].between(0, 1).all() and len(components) == 3 * 2 * 6 * 8
    meta = json.loads((tmp_path / "dynamics" / "meta.json").read_text())
    assert meta["runs"][0]["model_family"] == "spinnet" and meta["runs"][0]["seed"] == 1337
    with pytest.raises(UserError, match="not a run directory"):
        dy.write_dynamics([tmp_path], tmp_path / "x")

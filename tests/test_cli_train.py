"""`evalsuite train` and `evalsuite compress` through the real entry point (exit codes, files written,
what reaches the model)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import run_cli

from trainers.checkpoint import load_checkpoint
from trainers.train import read_metrics

TINY = ["--set", "train.block_size=32", "--set", "train.batch_size=4", "--set", "train.eval_iters=2",
        "--set", "train.val_fraction=0.2", "--set", "train.warmup_iters=1", "--set", "model.d_model=32",
        "--set", "model.n_layer=1", "--set", "train.max_iters=4", "--set", "train.eval_interval=2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_train_octonion_attention_reaches_the_model_then_compress(sample, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--config", "spinnet-tiny", "--data", str(sample), "--out-dir", str(out), "--no-progress",
            *TINY, "--set", "model.octonion_attention=true",
            "--set", "train.lr_decay_iters=6", "--set", "train.force_schedule=true"]
    assert run_cli(argv) == 0
    printed = capsys.readouterr().out
    loaded = load_checkpoint(out)  # the run dir -> best/
    model = loaded.model
    assert loaded.config.model.octonion_attention is True
    mixers = [block.attn.mixer for block in model.blocks]
    assert all(m is not None for m in mixers) and mixers[0].weight.shape == (1, 8, 4)
    n_params = sum(p.numel() for p in model.parameters())
    assert f"{n_params:,}" in printed  # the parameter count printed is the model's
    final = read_metrics(out)[-1]
    assert f"{final['val_loss']:.4f} nats/token" in printed and f"{final['val_bpc']:.4f} bits/char" in printed
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["model"]["octonion_attention"] is True
    assert resolved["model"]["vocab_size"] == loaded.tokenizer.vocab_size  # filled from the tokenizer
    assert resolved["train"]["lr_decay_iters"] == 6 and resolved["train"]["min_lr"] == pytest.approx(3e-4)

    # a second run into the same dir without --resume is refused; --resume needs no --config
    assert run_cli(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert run_cli(["train", "--resume", "--out-dir", str(out), "--no-progress"]) == 0
    assert [r["step"] for r in read_metrics(out)] == [0, 2, 4]  # finished: nothing recomputed or duplicated

    spin = tmp_path / "m.spinnet"
    assert run_cli(["compress", str(out), "-o", str(spin), "--bits", "2"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "m.spinnet.report.json").read_text())
    assert report["file_bytes"] == spin.stat().st_size and report["packing"] == "trits2"
    assert report["bits_per_ternary_weight"] == pytest.approx(2.0, abs=0.01)
    for key in ("ratio_vs_fp32_weights", "ratio_vs_checkpoint"):
        assert f"{report[key]:.2f}x smaller" in printed
    small = load_checkpoint(spin)
    idx = torch.randint(0, small.config.model.vocab_size, (1, 8))
    with torch.no_grad():
        assert small.model(idx).logits.shape == (1, 8, small.config.model.vocab_size)
    assert run_cli(["compress", str(out), "-o", str(tmp_path / "x.spinnet"), "--bits", "3"]) == 2


def test_threads_option_sets_torch_threads(sample, tmp_path, capsys):
    torch.set_num_threads(2)
    argv = ["train", "--config", "baseline-tiny", "--data", str(sample), "--out-dir", str(tmp_path / "run"),
            "--no-progress", "--threads", "1", *TINY, "--set", "train.max_iters=1", "--set", "train.eval_interval=1"]
    assert run_cli(argv) == 0
    assert torch.get_num_threads() == 1
    assert run_cli(["train", "--config", "baseline-tiny", "--threads", "0"]) == 2  # below the minimum


def test_mistyped_key_exits_2_with_one_line(capsys):
    assert run_cli(["train", "--config", "spinnet-tiny", "--set", "model.octonion_atention=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "model.octonion_atention" in err and "octonion_attention" in err


def test_schedule_mismatch_is_refused_unless_forced(capsys, tmp_path):
    assert run_cli(["train", "--config", "spinnet-tiny", "--set", "train.lr_decay_iters=150"]) == 2
    err = capsys.readouterr().err
    assert "lr_decay_iters=150" in err and "force_schedule" in err and len(err.strip().splitlines()) == 1
    # forced, the config is accepted: the run then stops on the next problem (no data given)
    assert run_cli(["train", "--config", "spinnet-tiny", "--set", "train.lr_decay_iters=150",
                "--set", "train.force_schedule=true", "--out-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "lr_decay_iters" not in err and "no training data" in err


def test_compress_refuses_a_baseline(sample, tmp_path, capsys):
    out = tmp_path / "base"
    assert run_cli(["train", "--config", "baseline-tiny", "--data", str(sample), "--out-dir", str(out),
                "--no-progress", *TINY, "--set", "train.max_iters=1", "--set", "train.eval_interval=1"]) == 0
    capsys.readouterr()
    assert run_cli(["compress", str(out), "-o", str(tmp_path / "b.spinnet")]) == 2
    assert "only ternary SpinNet" in capsys.readouterr().err

"""The training loop on CPU with tiny models and the real TinyStories sample: schedule, data
preparation and sampling, loss weighting, metrics stream, snapshots, exact resume, and DDP."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from corpora.errors import UserError
from corpora.tokenized import bits_per_char, open_tokenized
from corpora.tokenizers import article_token_ids, load_tokenizer
from trainers.checkpoint import load_checkpoint, read_state
from trainers.config import load_config
from trainers.data import BlockSampler, fixed_eval_batches, prepare_data
from trainers.train import METRIC_KEYS, lr_at, read_metrics, train, weighted_objective

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(preset: str, sample: Path, out: Path, *extra: str):
    """A tiny run (one block of width 32, 32-token blocks), 5 stories split 4/1 by document."""
    return load_config(preset, [
        f"train.data={sample}", f"train.out_dir={out}", "train.val_fraction=0.2", "train.block_size=32",
        "train.batch_size=4", "train.eval_iters=2", "train.warmup_iters=2", "model.d_model=32", "model.n_layer=1",
        *extra,
    ])


# ---------------------------------------------------------------------------------------------
# schedule and loss


def test_lr_schedule_warmup_then_cosine_to_min_lr():
    cfg = load_config("spinnet-tiny", ["train.lr=1e-3", "train.warmup_iters=10", "train.max_iters=110"]).train
    assert cfg.min_lr == pytest.approx(1e-4) and cfg.lr_decay_iters == 110
    lrs = [lr_at(s, cfg) for s in range(111)]
    assert all(b > a for a, b in zip(lrs[:10], lrs[1:11], strict=True))  # linear warmup
    assert lrs[10] == pytest.approx(1e-3)  # peak right after warmup
    assert all(b < a for a, b in zip(lrs[10:110], lrs[11:111], strict=True))  # cosine, strictly down
    assert lrs[60] == pytest.approx(0.5 * (1e-3 + 1e-4))  # halfway down the cosine
    assert lrs[110] == pytest.approx(1e-4) and lrs[109] > 1e-4  # ends at min_lr exactly at max_iters


def test_weighted_objective_is_plain_ce_at_weight_one_and_reweights_articles():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    targets = torch.tensor([[262, 5, 257, 9]])
    ids = torch.tensor([257, 262])
    assert weighted_objective(losses, targets, ids, 1.0).item() == pytest.approx(2.5)
    # articles (positions 0 and 2) count 3 times: (3*1 + 2 + 3*3 + 4) / (3 + 1 + 3 + 1)
    assert weighted_objective(losses, targets, ids, 3.0).item() == pytest.approx(18 / 8)


# ---------------------------------------------------------------------------------------------
# data


def test_prepare_data_tokenizes_once_and_splits_by_document(sample, tmp_path):
    data = prepare_data(sample, "char", tmp_path / "data", val_fraction=0.2, seed=1)
    assert data.train_meta.n_documents == 4 and data.val_meta.n_documents == 1
    assert data.train_meta.n_chars + data.val_meta.n_chars == sum(
        len(s.strip()) for s in sample.read_text().split("<|endoftext|>") if s.strip())
    stamp = (tmp_path / "data" / "train.bin").stat().st_mtime_ns
    again = prepare_data(sample, "char", tmp_path / "data", val_fraction=0.2, seed=1)
    assert (tmp_path / "data" / "train.bin").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert again.tokenizer.identity == data.tokenizer.identity
    np.testing.assert_array_equal(np.asarray(again.train), np.asarray(data.train))
    # a prepared folder is itself valid training data (tokenizer/ beside the arrays)
    reused = prepare_data(tmp_path / "data", "char", tmp_path / "unused")
    assert reused.train_meta.n_tokens == data.train_meta.n_tokens
    # a different split seed gives a different split, written again
    other = prepare_data(sample, "char", tmp_path / "data", val_fraction=0.2, seed=2)
    assert other.val_meta.n_chars != data.val_meta.n_chars


def test_prepare_data_refuses_a_tokenizer_that_did_not_make_the_arrays(sample, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("EVALSUITE_DATA", str(shared_data))
    prepare_data(sample, "char", tmp_path / "data", val_fraction=0.2, seed=1)
    with pytest.raises(UserError, match="tokenized by"):
        prepare_data(tmp_path / "data" / "train.bin", "gpt2", tmp_path / "x")
    (tmp_path / "lonely").mkdir()
    (tmp_path / "data" / "train.bin").rename(tmp_path / "lonely" / "a.bin")
    (tmp_path / "data" / "train.bin.json").rename(tmp_path / "lonely" / "a.bin.json")
    with pytest.raises(UserError, match="no validation array"):
        prepare_data(tmp_path / "lonely" / "a.bin", "char", tmp_path / "x")
    with pytest.raises(UserError, match="not found"):
        prepare_data(tmp_path / "missing.txt", "char", tmp_path / "x")


def test_block_sampler_is_deterministic_resumable_and_contiguous(sample, tmp_path):
    data = prepare_data(sample, "char", tmp_path / "data", val_fraction=0.2, seed=1)
    a = BlockSampler(data.train, 16, 3, seed=5)
    b = BlockSampler(data.train, 16, 3, seed=5)
    for _ in range(3):
        (xa, ya), (xb, yb) = a.next_batch(), b.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(xa[:, 1:], ya[:, :-1])  # y is x shifted by one token
    state = a.state_dict()
    expected = a.next_batch()
    c = BlockSampler(data.train, 16, 3, seed=999)
    c.load_state_dict(state)
    assert torch.equal(c.next_batch()[0], expected[0])
    # every row is a contiguous slice of the array
    arr = np.asarray(data.train, dtype=np.int64)
    row = expected[0][0].numpy()
    assert any(np.array_equal(arr[s:s + 16], row) for s in range(len(arr) - 16))
    # fixed eval batches are the same every time and independent of the training sampler
    e1 = fixed_eval_batches(data.val, 16, 2, 48)
    e2 = fixed_eval_batches(data.val, 16, 2, 48)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(e1, e2, strict=True))
    assert sum(len(x) for x, _ in e1) == 3  # 48 tokens = 3 blocks of 16
    with pytest.raises(UserError, match="fewer than train.block_size"):
        BlockSampler(data.val, len(data.val), 1, seed=0, name="validation")


# ---------------------------------------------------------------------------------------------
# the loop


@pytest.mark.slow
def test_resume_continues_the_same_loss_curve_with_grad_accum(sample, tmp_path):
    """2N steps in one go == N steps, a 'kill' (no checkpoint after the last eval), and a resume."""
    extra = ("train.max_iters=8", "train.eval_interval=3", "train.log_interval=1", "train.grad_accum=2",
             "model.dropout=0.1")  # dropout: the torch RNG must come back too
    train(tiny("spinnet-tiny", sample, tmp_path / "full", *extra), progress=False)
    cut = tiny("spinnet-tiny", sample, tmp_path / "cut", *extra)
    part = train(cut, progress=False, stop_at_step=5)  # killed 2 steps after the step-3 checkpoint
    assert part.stopped_early and part.steps == 5
    assert read_state(tmp_path / "cut" / "latest")["iter_num"] == 3
    notes = []
    resumed = train(cut, resume=True, progress=False, on_start=lambda info: notes.extend(info.notes))
    assert resumed.steps == 8 and any("dropped 2 metrics lines after step 3" in n for n in notes)

    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
    assert [r["step"] for r in b] == list(range(9))  # no duplicates, no gaps
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss", "grad_norm", "lr"):
            if ra[key] is None:
                assert rb[key] is None
            else:
                assert rb[key] == pytest.approx(ra[key], abs=1e-5), (ra["step"], key)
        assert ra["tokens_seen"] == rb["tokens_seen"] == ra["step"] * 4 * 32 * 2
    assert a[-1]["train_loss"] < a[1]["train_loss"]  # it actually learned something
    # a wall-clock limit checkpoints the step it stops at (an extra eval there), and resumes exactly
    timed = tiny("spinnet-tiny", sample, tmp_path / "timed", *extra)
    first = train(timed, progress=False, time_limit_s=0.0)
    assert first.stopped_early and first.steps == 1 and read_state(tmp_path / "timed" / "latest")["iter_num"] == 1
    train(timed, resume=True, progress=False)
    c = read_metrics(tmp_path / "timed")
    assert [r["step"] for r in c] == list(range(9)) and c[1]["val_loss"] is not None
    assert [r["train_loss"] for r in c[1:]] == pytest.approx([r["train_loss"] for r in a[1:]], abs=1e-5)
    sa = load_checkpoint(tmp_path / "full" / "latest").model.state_dict()
    sb = load_checkpoint(tmp_path / "cut" / "latest").model.state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)


@pytest.mark.slow
def test_metrics_snapshots_best_and_component_norms(sample, tmp_path):
    out = tmp_path / "run"
    cfg = tiny("spinnet-tiny", sample, out, "train.max_iters=9", "train.eval_interval=3", "train.log_interval=2",
               "train.snapshot_steps=[2]", "train.snapshot_val_losses=[3.9,3.85,0.5]", "train.lr=1e-2")
    result = train(cfg, progress=False)
    records = read_metrics(out)
    assert all(list(r) == list(METRIC_KEYS) for r in records)
    # log steps: 0 (initial eval), every 2nd, every eval (3, 6, 9) and the snapshot step 2
    assert [r["step"] for r in records] == [0, 2, 3, 4, 6, 8, 9]
    evaluated = [r for r in records if r["val_loss"] is not None]
    assert [r["step"] for r in evaluated] == [0, 2, 3, 6, 9]
    meta = open_tokenized(out / "data" / "val.bin")[1]
    for r in evaluated:
        assert r["val_bpc"] == pytest.approx(bits_per_char(r["val_loss"], meta))
        assert r["val_bpc"] == pytest.approx(r["val_loss"] * meta.n_tokens / (meta.n_chars * math.log(2)))
    for r in records[1:]:
        norms = r["component_grad_norms"]
        assert len(norms) == 8 and all(n > 0 for n in norms)
        # pooled over layers, the components' norms make up the whole SpinNet block gradient
        assert math.sqrt(sum(n * n for n in norms)) <= r["grad_norm"] + 1e-6
        assert r["tokens_per_s"] > 0 and r["lr"] > 0
    # char tokenizer: no article tokens, so no article loss (rather than a letter-'a' loss)
    assert all(r["article_loss"] is None and r["article_other_ratio"] is None for r in records)

    best = min(evaluated, key=lambda r: r["val_loss"])
    assert read_state(out / "best")["val_loss"] == pytest.approx(best["val_loss"])
    assert result.best_val_loss == pytest.approx(best["val_loss"])
    assert result.val_loss == pytest.approx(evaluated[-1]["val_loss"])
    state = read_state(out / "latest")
    assert state["iter_num"] == 9 and state["tokens_seen"] == 9 * 4 * 32
    snapshots = sorted(p.name for p in out.glob("step_*"))
    crossing = {}
    for thr in (3.9, 3.85, 0.5):
        first = next((r for r in evaluated if r["val_loss"] < thr), None)
        if first is not None:
            crossing[thr] = first["step"]
    assert 3.9 in crossing and 0.5 not in crossing  # a threshold never reached makes no snapshot
    expected = sorted({f"step_{s:07d}" for s in [2, *crossing.values()]})
    assert snapshots == expected
    for thr, step in crossing.items():
        snap = read_state(out / f"step_{step:07d}")
        assert f"val_loss first below {thr}" in snap["snapshot_reason"]
        assert snap["val_loss"] < thr
        assert not (out / f"step_{step:07d}" / "optimizer.pt").exists()  # weights-only snapshots
    assert "step 2 in train.snapshot_steps" in read_state(out / "step_0000002")["snapshot_reason"]
    assert (out / "latest" / "optimizer.pt").is_file() and (out / "config.yaml").is_file()
    # an existing run is never overwritten silently
    with pytest.raises(UserError, match="--resume"):
        train(cfg, progress=False)


@pytest.mark.slow
def test_article_weighted_loss_logs_article_and_other_loss(sample, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("EVALSUITE_DATA", str(shared_data))
    cfg = tiny("baseline-tiny", sample, tmp_path / "run", "train.tokenizer=gpt2", "train.max_iters=2",
               "train.eval_interval=2", "train.log_interval=1", "train.article_loss_weight=3.0")
    train(cfg, progress=False)
    records = read_metrics(tmp_path / "run")
    evaluated = [r for r in records if r["val_loss"] is not None]
    for r in evaluated:
        assert r["article_loss"] > 0 and r["other_loss"] > 0
        assert r["article_other_ratio"] == pytest.approx(r["article_loss"] / r["other_loss"])
    trained = [r for r in records if r["train_loss"] is not None]
    assert all(r["train_objective"] != r["train_loss"] for r in trained)  # weighting changed the objective
    assert records[-1]["component_grad_norms"] is None  # baseline: no algebra components
    # the val loss is the plain CE over article and other tokens together, so it lies between them
    last = evaluated[-1]
    lo, hi = sorted((last["article_loss"], last["other_loss"]))
    assert lo <= last["val_loss"] <= hi
    tok = load_tokenizer("gpt2")
    assert 262 in article_token_ids(tok)["the"]


@pytest.mark.slow
def test_resume_refuses_a_changed_config(sample, tmp_path):
    cfg = tiny("baseline-tiny", sample, tmp_path / "run", "train.max_iters=2", "train.eval_interval=2")
    train(cfg, progress=False)
    changed = tiny("baseline-tiny", sample, tmp_path / "run", "train.max_iters=2", "train.eval_interval=2",
                   "train.lr=5e-3")
    with pytest.raises(UserError, match="train.lr"):
        train(changed, resume=True, progress=False)
    # resuming a finished run does nothing and keeps the stream intact
    before = (tmp_path / "run" / "metrics_stream.jsonl").read_text()
    done = train(cfg, resume=True, progress=False)
    assert done.steps == 2 and (tmp_path / "run" / "metrics_stream.jsonl").read_text() == before


@pytest.mark.slow
def test_ddp_two_processes_gloo(sample, tmp_path):
    """torchrun with 2 CPU processes: DDP runs, rank 0 alone writes, ranks draw different blocks."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "evalsuite.cli", "train", "--config", "baseline-tiny", "--data", str(sample),
        "--out-dir", str(out), "--no-progress", "--set", "train.max_iters=4", "--set", "train.eval_interval=2",
        "--set", "train.block_size=32", "--set", "train.batch_size=4", "--set", "train.val_fraction=0.2",
        "--set", "train.grad_accum=2", "--set", "train.eval_iters=2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("final val loss") == 1  # only rank 0 reports
    # tokens per step is the total over both ranks, printed as such (not as a per-rank figure "x 2")
    assert "512 over 2 process(es) (4 x 32 x 2 accum each)" in proc.stdout
    assert "planned tokens" in proc.stdout and "2,048 over 4 steps" in proc.stdout
    state = read_state(out / "latest")
    assert state["world_size"] == 2 and state["iter_num"] == 4
    assert state["tokens_seen"] == 4 * (4 * 32 * 2 * 2)  # steps x batch x block x accum x ranks
    assert len(state["rng"]) == 2 and state["rng"][0]["data"] != state["rng"][1]["data"]
    records = read_metrics(out)
    assert [r["step"] for r in records] == [0, 2, 4]
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert json.loads((out / "latest" / "config.json").read_text())["model"]["family"] == "baseline"


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(sample, tmp_path):
    """A real kill: SIGKILL the CLI mid-run (between checkpoints), resume, compare with one clean run."""
    sets = ["train.max_iters=20", "train.eval_interval=4", "train.log_interval=1"]
    killed = tmp_path / "killed"
    argv = [sys.executable, "-m", "evalsuite.cli", "train", "--config", "spinnet-tiny", "--data", str(sample),
            "--out-dir", str(killed), "--no-progress"]
    overrides = ["train.val_fraction=0.2", "train.block_size=32", "train.batch_size=4", "train.eval_iters=2",
                 "train.warmup_iters=2", "model.d_model=32", "model.n_layer=1", *sets]  # those of `tiny`
    for o in overrides:
        argv += ["--set", o]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    stream = killed / "metrics_stream.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            lines = stream.read_text().splitlines() if stream.exists() else []
            if len(lines) >= 7:  # step 6 logged: past the step-4 checkpoint, before the step-8 one
                break
            time.sleep(0.05)
        proc.kill()
    finally:
        proc.wait()
    assert proc.returncode == -9, "the run must be killed mid-way (it finished or failed first)"
    assert read_state(killed / "latest")["iter_num"] < 20
    train(tiny("spinnet-tiny", sample, killed, *sets), resume=True, progress=False)
    train(tiny("spinnet-tiny", sample, tmp_path / "clean", *sets), progress=False)
    a, b = read_metrics(tmp_path / "clean"), read_metrics(killed)
    assert [r["step"] for r in b] == list(range(21))
    for ra, rb in zip(a, b, strict=True):
        assert (ra["train_loss"] is None) == (rb["train_loss"] is None)
        if ra["train_loss"] is not None:
            assert rb["train_loss"] == pytest.approx(ra["train_loss"], abs=1e-5), ra["step"]


@pytest.mark.slow
def test_benchmark_script_smoke_on_cpu(sample, tmp_path, capsys):
    """benchmarks/train_throughput.py: the throughput table and the --train mode, tiny presets on CPU."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_throughput", REPO / "benchmarks" / "train_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.device_peak("NVIDIA H100 80GB HBM3") == ("H100 SXM", 989e12)
    assert bench.device_peak("NVIDIA H100 PCIe") == ("H100 PCIe", 756e12)
    assert bench.device_peak("cpu")[1] is None

    presets = ["--presets", "baseline-tiny", "spinnet-tiny", "--device", "cpu", "--vocab-size", "64"]
    assert bench.main([*presets, "--batch-size", "2", "--block-size", "16", "--warmup", "1", "--steps", "2",
                       "--out", str(tmp_path / "tp")]) == 0
    rows = json.loads((tmp_path / "tp" / "train_throughput.json").read_text())["rows"]
    assert [r["preset"] for r in rows] == ["baseline-tiny", "spinnet-tiny"]
    assert rows[0]["step_time_ratio_vs_baseline"] == 1.0
    assert rows[1]["step_time_ratio_vs_baseline"] == pytest.approx(rows[1]["step_time_ms"] / rows[0]["step_time_ms"])
    assert all(r["tokens_per_s"] == pytest.approx(2 * 16 * 1000 / r["step_time_ms"]) for r in rows)
    assert all(r["mfu"] is None for r in rows)  # no known peak for a CPU: no made-up MFU
    assert "| spinnet-tiny | off | 2 x 16 |" in capsys.readouterr().out

    out = tmp_path / "tr"
    assert bench.main([*presets, "--train", "--data", str(sample), "--tokens", "256", "--out", str(out),
                       "--no-progress", "--set", "train.block_size=16", "--set", "train.batch_size=4",
                       "--set", "train.val_fraction=0.2", "--set", "train.eval_iters=1",
                       "--set", "model.n_layer=1", "--set", "model.d_model=32"]) == 0
    curves = (out / "loss_curves.csv").read_text().splitlines()
    assert curves[0].startswith("preset,family,step,tokens_seen,train_loss,val_loss,val_bpc")
    assert {line.split(",")[0] for line in curves[1:]} == {"baseline-tiny", "spinnet-tiny"}
    summary = json.loads((out / "train_summary.json").read_text())["runs"]
    assert [(s["preset"], s["steps"], s["tokens_seen"]) for s in summary] == [
        ("baseline-tiny", 4, 256), ("spinnet-tiny", 4, 256)]
    assert all((out / "train" / p / "best" / "model.safetensors").is_file() for p in ("baseline-tiny", "spinnet-tiny"))

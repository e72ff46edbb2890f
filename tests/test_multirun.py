"""trainers.multirun: two tiny runs at once on the CPU, each a real run with its own files, resumable."""

from __future__ import annotations

import json

import pytest

from corpora.errors import UserError
from trainers.metrics import read_metrics
from trainers.multirun import CONFIG_FILE, LOG_FILE, RESULT_FILE, launch, main, plan_runs

TINY = ["train.max_iters=4", "train.eval_interval=2", "train.log_interval=1", "train.eval_iters=1",
        "train.batch_size=2", "train.block_size=16", "train.val_fraction=0.2", "train.device=cpu",
        "model.n_layer=1", "model.d_model=32", "train.warmup_iters=1"]


def _plan(sample, tmp_path, seeds=(1, 2)):
    return plan_runs(["baseline-tiny"], [f"train.data={sample}", *TINY], list(seeds), tmp_path / "sweep")


@pytest.mark.slow
def test_two_runs_at_once_each_with_own_dir_and_metrics_then_resume(sample, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    specs = _plan(sample, tmp_path)
    assert [s.name for s in specs] == ["baseline-tiny-s1", "baseline-tiny-s2"]
    assert [s.config.train.seed for s in specs] == [1, 2]

    # first launch: each run stops at a checkpoint at its first log step (time limit 0 s)
    first = launch(specs, time_limit_s=0.0)
    assert all(o.ok for o in first), [o.log_tail for o in first]
    for o in first:
        assert o.result["stopped_early"] and o.result["steps"] == 1
        assert (o.run_dir / "latest" / "model.safetensors").is_file()
        assert (o.run_dir / CONFIG_FILE).is_file() and (o.run_dir / LOG_FILE).is_file()

    with pytest.raises(UserError, match="already holds a checkpoint"):
        launch(specs)  # without resume, nothing is overwritten

    second = launch(specs, resume=True)
    assert all(o.ok for o in second), [o.log_tail for o in second]
    streams = []
    for o in second:
        assert o.result["start_step"] == 1 and o.result["steps"] == 4 and not o.result["stopped_early"]
        steps = [r["step"] for r in read_metrics(o.run_dir)]
        assert steps == [0, 1, 2, 3, 4]  # resumed: no step twice, none missing
        assert json.loads((o.run_dir / RESULT_FILE).read_text())["tokens_seen"] == 4 * 2 * 16
        streams.append([r["train_loss"] for r in read_metrics(o.run_dir)])
    assert streams[0] != streams[1]  # different seeds really are different runs


def test_plan_refuses_colliding_names_and_empty_input(sample, tmp_path):
    with pytest.raises(UserError, match="share a run directory"):
        plan_runs(["baseline-tiny", "baseline-tiny"], [f"train.data={sample}"], [1], tmp_path)
    with pytest.raises(UserError, match="at least one"):
        plan_runs([], [], [1], tmp_path)
    with pytest.raises(UserError):
        plan_runs(["baseline-tiny"], ["train.no_such_key=1"], [1], tmp_path)  # strict config keys


def test_a_failing_run_does_not_stop_the_other(sample, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    good = _plan(sample, tmp_path / "a", seeds=(1,))[0]
    bad = plan_runs(["baseline-tiny"], [f"train.data={tmp_path / 'missing.txt'}", *TINY], [2], tmp_path / "b")[0]
    outcomes = launch([bad, good], max_parallel=1)
    assert not outcomes[0].ok and outcomes[0].returncode == 2
    assert "training data not found" in outcomes[0].log_tail
    assert outcomes[1].ok and outcomes[1].result["steps"] == 4


def test_cli_needs_configs_and_out_root(capsys):
    assert main([]) == 2
    assert "needs CONFIG" in capsys.readouterr().err

"""trainers.multirun: two tiny runs at once on the CPU, each a real run with its own files, resumable."""

from __future__ import annotations

import json
from pathlib import Path

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


FAKE_MPS = """#!/usr/bin/env bash
# a stand-in for nvidia-cuda-mps-control: records its calls; reports a server once the daemon runs
echo "${1:-stdin} $CUDA_MPS_PIPE_DIRECTORY $(cat 2>/dev/null | tr -d '\\n')" >> "$FAKE_MPS_LOG"
[ "$1" = "-d" ] && exit "${FAKE_MPS_EXIT:-0}"
echo 4242
"""


def _fake_mps(tmp_path, monkeypatch, exit_code=0):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-cuda-mps-control"
    tool.write_text(FAKE_MPS)
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_MPS_LOG", str(tmp_path / "mps_calls.txt"))
    monkeypatch.setenv("FAKE_MPS_EXIT", str(exit_code))
    return tmp_path / "mps_calls.txt"


def test_mps_is_refused_without_the_nvidia_tool(sample, tmp_path, monkeypatch):
    monkeypatch.setattr("trainers.multirun.shutil.which", lambda name: None)
    specs = _plan(sample, tmp_path, seeds=(1,))
    with pytest.raises(UserError, match="nvidia-cuda-mps-control is not on PATH"):
        launch(specs, mps=True)
    assert not (specs[0].run_dir / LOG_FILE).exists()  # refused before any run started


def test_mps_daemon_that_fails_to_start_is_refused(sample, tmp_path, monkeypatch):
    _fake_mps(tmp_path, monkeypatch, exit_code=1)
    with pytest.raises(UserError, match="failed"):
        launch(_plan(sample, tmp_path, seeds=(1,)), mps=True)


@pytest.mark.slow
def test_mps_launch_starts_points_workers_at_and_stops_its_own_daemon(sample, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    calls_file = _fake_mps(tmp_path, monkeypatch)
    outcomes = launch(_plan(sample, tmp_path, seeds=(1,)), mps=True, time_limit_s=0.0)
    assert outcomes[0].ok, outcomes[0].log_tail
    assert outcomes[0].mps_server_seen is True
    calls = calls_file.read_text().splitlines()
    pipes = {line.split()[1] for line in calls}
    assert len(pipes) == 1 and "evalsuite-mps-" in pipes.pop()  # one private daemon, own pipe folder
    assert calls[0].startswith("-d ") and calls[-1].endswith("quit")  # started first, quit last
    assert any(line.endswith("get_server_list") for line in calls)
    assert not any(Path(line.split()[1]).parent.exists() for line in calls)  # its temporary folder is gone
    assert launch(_plan(sample, tmp_path / "plain", seeds=(1,)), time_limit_s=0.0)[0].mps_server_seen is None


def test_the_multirun_benchmark_always_measures_its_plain_one_run_reference():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_multirun.py"
    spec = importlib.util.spec_from_file_location("gpu_multirun", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert [bench.mps_settings(n, "on") for n in (1, 8)] == [[False], [True]]  # N = 1 plain: the reference
    assert [bench.mps_settings(n, "both") for n in (1, 4)] == [[False], [False, True]]
    assert [bench.mps_settings(n, "off") for n in (1, 4)] == [[False], [False]]
    # --stack: N > 1 as one stacked process, N = 1 still the plain reference
    assert [bench.layouts(n, "off", True) for n in (1, 8)] == [[(False, False)], [(False, True)]]
    assert bench.layouts(4, "both", False) == [(False, False), (True, False)]
    assert bench.main(["--data", "x", "--stack", "--mps", "on"]) == 2


@pytest.mark.slow
def test_a_stack_of_two_runs_in_one_process_each_with_own_files_then_resume(sample, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    specs = _plan(sample, tmp_path, seeds=(1, 2, 3))
    with pytest.raises(UserError, match="stack must be"):
        launch(specs, stack=0)
    first = launch(specs, stack=2, time_limit_s=0.0)  # one stack of two runs, then one run alone
    assert all(o.ok for o in first), [o.log_tail for o in first]
    assert [o.result["stacked_with"] for o in first] == [2, 2, 1]
    assert all(o.result["stopped_early"] and o.result["steps"] == 1 for o in first)
    assert "trained in one stack with baseline-tiny-s1" in (specs[1].run_dir / LOG_FILE).read_text()
    second = launch(specs, stack=2, resume=True)
    assert all(o.ok for o in second), [o.log_tail for o in second]
    streams = []
    for o in second:
        assert o.result["start_step"] == 1 and o.result["steps"] == 4
        assert [r["step"] for r in read_metrics(o.run_dir)] == [0, 1, 2, 3, 4]
        streams.append([r["train_loss"] for r in read_metrics(o.run_dir)])
    assert streams[0] != streams[1]


def test_a_stack_of_different_configs_is_refused_before_any_process_starts(sample, tmp_path):
    specs = plan_runs(["baseline-tiny", "spinnet-tiny"], [f"train.data={sample}", *TINY], [1], tmp_path / "mixed")
    with pytest.raises(UserError, match="may differ only in train.seed"):
        launch(specs, stack=2)
    assert not (tmp_path / "mixed").exists()

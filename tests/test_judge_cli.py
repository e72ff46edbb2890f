"""`evalsuite gpt-eval` end to end against a loopback judge: outputs, rerun from cache, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from judge_scripted import ScriptedBackend, default_grades

from evalsuite.cli import main
from evalsuite.judge.server import ChatServer

REPO = Path(__file__).resolve().parents[1]


def write_samples(path: Path, n: int, checkpoints=("ck-a", "ck-b")) -> Path:
    rows = []
    for ck_i, ck in enumerate(checkpoints):
        for i in range(n):
            rows.append({"prompt_id": f"p{i}", "prompt": f"Once upon a time {i}", "completion": f" {ck} story {i}.",
                         "checkpoint": f"runs/{ck}", "checkpoint_id": ck, "val_loss": 2.0 + ck_i, "val_bpc": 1.5 + ck_i,
                         "tokens_seen": 1000 * (ck_i + 1), "model_family": "baseline", "temperature": 0.8,
                         "top_k": None, "top_p": 1.0, "max_new_tokens": 50, "seed": 1})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def cli_args(samples: Path, server: ChatServer, tmp_path: Path, *extra: str) -> list[str]:
    return ["gpt-eval", str(samples), "--base-url", server.base_url, "--model", "scripted-judge",
            "--cache", str(tmp_path / "cache.sqlite"), "--out", str(tmp_path / "out"), "--no-progress",
            "--n-bootstrap", "2000", *extra]


def test_gpt_eval_outputs_and_cached_rerun(tmp_path, capsys):
    samples = write_samples(tmp_path / "samples.jsonl", 6)
    backend = ScriptedBackend(scripts={"ck-b story 5": ["malformed"]})
    with ChatServer(backend) as server:
        assert run_cli(cli_args(samples, server, tmp_path, "--repeats", "2", "--logprobs", "--invalid-retries", "1")) == 0
        first = server.requests_seen
        assert first == 12 * 2 + 2  # 24 judgments; the bad story is asked twice in each of 2 repeats
        assert run_cli(cli_args(samples, server, tmp_path, "--repeats", "2", "--logprobs", "--invalid-retries", "1")) == 0
        assert server.requests_seen == first  # rerun: zero calls
    out = tmp_path / "out"
    for name in ("summary", "story_scores", "judgments", "categories", "reliability"):
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.parquet").is_file()
    summary = pd.read_parquet(out / "summary.parquet")
    grammar_a = summary[(summary.checkpoint_id == "ck-a") & (summary.score == "grammar")].iloc[0]
    want = [default_grades(f" ck-a story {i}.")["grammar"] for i in range(6)]
    assert grammar_a["mean"] == pytest.approx(sum(want) / 6)
    assert grammar_a["n_stories"] == 6 and grammar_a["ci_low"] <= grammar_a["mean"] <= grammar_a["ci_high"]
    assert grammar_a["val_loss"] == 2.0 and grammar_a["val_bpc"] == 1.5
    grammar_b = summary[(summary.checkpoint_id == "ck-b") & (summary.score == "grammar")].iloc[0]
    assert grammar_b["n_stories"] == 5 and grammar_b["n_judgments_failed"] == 2  # failure counted, not scored
    assert "grammar_lp" in set(summary.score) and "age_group_index" in set(summary.score)
    rel = pd.read_csv(out / "reliability.csv")
    # The scripted judge is deterministic: repeats agree perfectly.
    assert (rel.loc[rel.score == "grammar", "exact_agreement"] == 1.0).all()
    assert int(rel.loc[rel.score == "grammar", "n_stories"].iloc[0]) == 11
    lines = [json.loads(x) for x in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(lines) == 24
    ok = next(x for x in lines if x["status"] == "ok")
    assert json.loads(ok["reply_text"])["grammar"] == ok["scores"]["grammar"]  # traceable to the raw reply
    assert ok["judge"]["request"]["model"] == "scripted-judge" and ok["judge"]["attempts"][0]["sent_at"]
    bad = [x for x in lines if x["status"] != "ok"]
    assert len(bad) == 2 and all(x["scores"] is None and "malformed" in x["error"] for x in bad)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["rubric"]["id"] == "tinystories-gpt-eval" and meta["run"]["requests_made"] == 0
    assert meta["judge"]["api_key"] in ("set", "not set") and "sk-" not in json.dumps(meta)
    err = capsys.readouterr()
    assert "to run: 0 judge calls" in err.err  # estimate printed before the (cached) run
    assert "ck-a" in err.out and "[" in err.out  # the rich table with CIs


def test_dry_run_prints_estimate_and_calls_nothing(tmp_path, capsys):
    samples = write_samples(tmp_path / "samples.jsonl", 3)
    backend = ScriptedBackend()
    with ChatServer(backend) as server:
        code = run_cli(cli_args(samples, server, tmp_path, "--dry-run", "--price-input", "2.5", "--price-output", "10"))
        assert server.requests_seen == 0
    assert code == 0
    err = capsys.readouterr().err
    assert "6 judge calls" in err and "$" in err


def test_default_without_base_url_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EVALSUITE_JUDGE_GGUF", raising=False)
    samples = write_samples(tmp_path / "samples.jsonl", 1)
    # --no-local-judge: where the `.[judge]` extra is installed, gpt-eval would otherwise start it.
    assert run_cli(["gpt-eval", str(samples), "--no-local-judge", "--cache", str(tmp_path / "c.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "--base-url" in err and "llama" in err and "vLLM" in err and "ollama" in err
    assert "pip install -e '.[judge]'" in err and "--judge-gguf" in err


def test_bad_inputs_are_user_errors(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    assert run_cli(["gpt-eval", str(bad), "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]) == 2
    assert "completion" in capsys.readouterr().err
    assert run_cli(["gpt-eval", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]) == 2
    assert run_cli(["gpt-eval", str(bad), "--rubric", "no_such_rubric", "--base-url", "http://x/v1", "--model", "m"]) == 2


@pytest.mark.slow
def test_kill_half_way_then_resume_loses_nothing(tmp_path):
    n_per_ckpt = 8
    samples = write_samples(tmp_path / "samples.jsonl", n_per_ckpt)
    total = 2 * n_per_ckpt
    backend = ScriptedBackend(delay_s=0.15)
    with ChatServer(backend) as server:
        args = cli_args(samples, server, tmp_path, "--concurrency", "1")
        proc = subprocess.Popen([sys.executable, "-m", "evalsuite.cli", *args], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 40
        while server.requests_seen < 5 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        seen_before = server.requests_seen
        with sqlite3.connect(tmp_path / "cache.sqlite") as db:
            done = {row[0] for row in db.execute("SELECT completion FROM judgments WHERE status = 'ok'")}
        stored = len(done)
        assert 4 <= stored < total  # killed half-way, every finished judgment on disk
        assert seen_before - stored <= 1  # at most the one in flight was lost
        calls_before = dict(backend.calls_per_story)

        assert run_cli(cli_args(samples, server, tmp_path)) == 0
        assert server.requests_seen - seen_before == total - stored  # only the missing ones were asked
        for story in done:  # nothing already on disk was asked again
            assert backend.calls_per_story[story] == calls_before[story]
    with sqlite3.connect(tmp_path / "cache.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM judgments WHERE status = 'ok'").fetchone()[0] == total
    assert len(pd.read_csv(tmp_path / "out" / "story_scores.csv")) == total


@pytest.mark.slow
def test_checkpoint_input_checks_the_judge_before_generating(tmp_path, capsys, monkeypatch, tmp_path_factory):
    from _tiny_run import tiny_run

    monkeypatch.delenv("EVALSUITE_JUDGE_GGUF", raising=False)
    run_dir = tiny_run(tmp_path_factory)
    out = tmp_path / "out"
    t0 = time.monotonic()
    # no judge at all
    assert run_cli(["gpt-eval", str(run_dir), "--no-local-judge", "--out", str(out)]) == 2
    assert "no judge configured" in capsys.readouterr().err
    # a --base-url where nothing listens
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    assert run_cli(["gpt-eval", str(run_dir), "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m",
                    "--out", str(out)]) == 2
    assert "cannot connect to the judge" in capsys.readouterr().err
    assert time.monotonic() - t0 < 10
    assert not (out / "samples").exists()  # nothing was generated


@pytest.mark.slow
def test_generation_shows_progress(tmp_path, capsys, tmp_path_factory):
    from _tiny_run import tiny_run

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "p1", "prompt": "Once upon a time"}\n{"id": "p2", "prompt": "Tom had a"}\n')
    with ChatServer(ScriptedBackend()) as server:
        argv = ["gpt-eval", str(tiny_run(tmp_path_factory)), "--prompts", str(prompts), "--gen-max-new-tokens", "5",
                "--base-url", server.base_url, "--model", "scripted-judge", "--cache", str(tmp_path / "c.sqlite"),
                "--out", str(tmp_path / "out"), "--progress", "--n-bootstrap", "200", "--no-free-scores"]
        assert run_cli(argv) == 0
    err = capsys.readouterr().err
    assert "generating" in err and "2/2" in err  # the tqdm bar of the generation step


def test_run_gpt_eval_is_one_library_call(tmp_path):
    from evalsuite.judge.client import JudgeSettings
    from evalsuite.judge.evaluate import GptEvalConfig, load_samples, run_gpt_eval, samples_to_items
    from evalsuite.judge.rubric import load_rubric

    samples = write_samples(tmp_path / "samples.jsonl", 3)
    items = samples_to_items(load_samples([samples]), 1)
    rubric = load_rubric("tinystories_gpt_eval")
    backend = ScriptedBackend(scripts={"ck-b": ["500"]})
    with ChatServer(backend) as server:
        settings = JudgeSettings(base_url=server.base_url, model="scripted-judge", backoff_base_s=0.01,
                                 backoff_max_s=0.02, max_retries=1)
        config = GptEvalConfig(items=items, rubric=rubric, settings=settings, cache_path=tmp_path / "c.sqlite",
                               free_scores=False, n_resamples=200)
        dry = run_gpt_eval(config, on_plan=lambda plan: False)
        assert dry.run is None and len(dry.plan.pending) == 6 and server.requests_seen == 0
        result = run_gpt_eval(config)
    assert result.run.counts() == {"ok": 3, "error": 3}
    assert [f[:2] for f in result.failed] == [("ck-b", 3)] and "http 500" in result.failed[0][2]
    summary = result.tables.summary.set_index(["checkpoint_id", "score"])
    assert summary.loc[("ck-a", "grammar"), "n_stories"] == 3 and summary.loc[("ck-b", "grammar"), "n_stories"] == 0


def test_judge_mode_choices(tmp_path, capsys):
    from io import StringIO

    from rich.console import Console

    from evalsuite.commands.gpt_eval import _auto_mode
    from evalsuite.judge import offline

    samples = write_samples(tmp_path / "samples.jsonl", 1)
    assert run_cli(["gpt-eval", str(samples), "--judge-mode", "nonsense"]) == 2
    assert run_cli(["gpt-eval", str(samples), "--judge-mode", "pairwise", "--no-local-judge"]) == 2
    assert "for --validate" in capsys.readouterr().err
    assert run_cli(["gpt-eval", str(samples), "--judge-mode", "loglik", "--base-url", "http://127.0.0.1:9/v1",
                    "--model", "m"]) == 2
    assert "drop --base-url" in capsys.readouterr().err
    console = Console(file=StringIO())
    assert _auto_mode("http://x/v1", None, True, console) == "rubric"  # a judge you chose: its rubric grades
    assert _auto_mode(None, "my.gguf", True, console) == "rubric"
    # the packaged judge: the mode that passed its validity check, else judge-free scores only
    assert _auto_mode(None, None, True, console) == (offline.PACKAGED_DEFAULT_MODE or "free")

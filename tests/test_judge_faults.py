"""The judge fault matrix against a fault-injecting loopback server: each fault transient and persistent,
every judgement of a checkpoint failing, and kill -9 mid-run with resume.

The server is evalsuite's own ChatServer; the backend (tests/judge_scripted.py, extended here) answers
each request for a story with the next action of that story's script. The client is the real `openai`
client. Timeouts and backoff are short (settings), so the whole file runs in seconds.
"""

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
from evalsuite.judge.cache import JudgeCache
from evalsuite.judge.client import JudgeItem, JudgeSettings, run_judgments
from evalsuite.judge.rubric import load_rubric
from evalsuite.judge.server import BackendHTTPError, ChatServer, DropConnection

RUBRIC = load_rubric("tinystories_gpt_eval")
REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 0.5
MAX_RETRIES = 2
INVALID_RETRIES = 1

# 200 bodies that are not a Chat Completions object
BAD_BODIES = {
    "not_json": b"<html><body>502 Bad Gateway</body></html>",
    "json_string": b'"the judge is warming up"',
    "json_list": b"[1, 2, 3]",
    "wrong_shape": b'{"result": {"grammar": 7}}',
    "choice_without_message": b'{"choices": [{"text": "7"}]}',
}


class FaultBackend(ScriptedBackend):
    """ScriptedBackend plus the faults of a real network: status codes, hangs, resets, bad bodies."""

    def _act(self, action: str, story: str, request: dict) -> dict:
        if action in ("408", "409", "502", "504", "400", "422"):
            raise BackendHTTPError(int(action), f"scripted {action}")
        if action == "hang":
            time.sleep(TIMEOUT_S * 4)  # longer than the client's timeout
            return self._ok(self.grades(story), request)
        if action == "reset":
            raise DropConnection()
        if action in BAD_BODIES:
            raise BackendHTTPError(200, raw_body=BAD_BODIES[action])
        return super()._act(action, story, request)


def fast_settings(server: ChatServer, **kw) -> JudgeSettings:
    base = dict(base_url=server.base_url, model="scripted-judge", backoff_base_s=0.01, backoff_max_s=0.02,
                timeout_s=TIMEOUT_S, max_retries=MAX_RETRIES, invalid_retries=INVALID_RETRIES, concurrency=2)
    base.update(kw)
    return JudgeSettings(**base)


def one_item(tag: str) -> list[JudgeItem]:
    return [JudgeItem(prompt="Once upon a time there was a cat", completion=f" {tag} went to the park.",
                      meta={"checkpoint_id": "ck", "story": tag})]


TRANSPORT = ["408", "409", "429ms", "500", "502", "503", "504", "hang", "reset"]
INVALID = ["malformed", "out_of_range", "missing_key", "truncated", *BAD_BODIES]


@pytest.mark.parametrize("fault", TRANSPORT + INVALID)
def test_transient_fault_is_retried_to_a_valid_grade(tmp_path, fault):
    backend = FaultBackend(scripts={"faulty": [fault, "ok"]})
    with JudgeCache(tmp_path / "c.sqlite") as cache, ChatServer(backend) as server:
        run = run_judgments(one_item("faulty"), RUBRIC, fast_settings(server), cache)
    res = run.results[0]
    assert res.status == "ok", res.error
    assert res.scores == default_grades(" faulty went to the park.")
    assert backend.calls_per_story[" faulty went to the park."] == 2
    assert [a["outcome"] != "ok" for a in res.row["attempts"]] == [True, False]


@pytest.mark.parametrize("fault", TRANSPORT)
def test_persistent_transport_fault_gives_up_after_the_retries(tmp_path, fault):
    backend = FaultBackend(scripts={"faulty": [fault]})
    with JudgeCache(tmp_path / "c.sqlite") as cache, ChatServer(backend) as server:
        run = run_judgments(one_item("faulty"), RUBRIC, fast_settings(server), cache)
    res = run.results[0]
    assert res.status == "error" and res.scores is None
    assert res.error.startswith(f"gave up after {MAX_RETRIES + 1} transport failures")
    assert len(res.row["attempts"]) == MAX_RETRIES + 1
    if fault != "hang":  # a hung request may still be sitting in the server when the client gives up
        assert backend.calls_per_story[" faulty went to the park."] == MAX_RETRIES + 1


@pytest.mark.parametrize("fault", INVALID)
def test_persistent_invalid_reply_is_recorded_never_a_number(tmp_path, fault):
    backend = FaultBackend(scripts={"faulty": [fault]})
    with JudgeCache(tmp_path / "c.sqlite") as cache, ChatServer(backend) as server:
        run = run_judgments(one_item("faulty"), RUBRIC, fast_settings(server), cache)
    res = run.results[0]
    assert res.status == "invalid" and res.scores is None
    assert res.error.startswith(f"invalid reply ({INVALID_RETRIES + 1}x)")
    assert backend.calls_per_story[" faulty went to the park."] == INVALID_RETRIES + 1
    if fault in BAD_BODIES:  # the body itself is kept for the record
        assert res.row["response"] == {"raw_body": BAD_BODIES[fault].decode()}
        assert res.reply_text == BAD_BODIES[fault].decode()


@pytest.mark.parametrize("status", ["400", "422"])
def test_client_errors_fall_back_once_then_are_not_retried(tmp_path, status):
    # auto response_format: a 400/422 to json_schema may mean "unsupported", so json_object is tried once;
    # when that is refused too, asking again would get the same answer.
    backend = FaultBackend(scripts={"faulty": [status]})
    with JudgeCache(tmp_path / "c.sqlite") as cache, ChatServer(backend) as server:
        run = run_judgments(one_item("faulty"), RUBRIC, fast_settings(server), cache)
    res = run.results[0]
    assert res.status == "error" and res.error.startswith(f"http {status}")
    assert backend.calls_per_story[" faulty went to the park."] == 2
    assert [a["response_format"] for a in res.row["attempts"]] == ["json_schema", "json_object"]


# --- every judgement of a checkpoint fails: outputs still written, one error line, exit non-zero ---

def write_samples(path: Path, n: int, checkpoints=("ck-a", "ck-b")) -> Path:
    rows = [{"prompt_id": f"p{i}", "prompt": f"Once upon a time {i}", "completion": f" {ck} story {i}.",
             "checkpoint_id": ck} for ck in checkpoints for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli(samples: Path, server: ChatServer, tmp_path: Path, *extra: str) -> list[str]:
    return ["gpt-eval", str(samples), "--base-url", server.base_url, "--model", "scripted-judge",
            "--cache", str(tmp_path / "cache.sqlite"), "--out", str(tmp_path / "out"), "--no-progress",
            "--n-bootstrap", "200", "--timeout", str(TIMEOUT_S), "--max-retries", str(MAX_RETRIES),
            "--invalid-retries", str(INVALID_RETRIES), "--backoff-base", "0.01", *extra]


def run_cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


@pytest.mark.parametrize("fault,named", [("500", "http 500"), ("not_json", "not JSON"), ("400", "http 400"),
                                         ("out_of_range", "invalid reply")])
def test_all_judgements_failing_writes_outputs_and_one_error_line(tmp_path, capsys, fault, named):
    samples = write_samples(tmp_path / "s.jsonl", 3, checkpoints=("ck-a",))
    backend = FaultBackend(scripts={"ck-a": [fault]})
    with ChatServer(backend) as server:
        assert run_cli(cli(samples, server, tmp_path)) == 2
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Traceback" not in err
    assert "all 3 judgements of checkpoint ck-a failed" in error_lines[0] and named in error_lines[0]
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert set(summary["n_judgments_failed"]) == {3} and summary["mean"].isna().all()
    assert set(summary["n_stories"]) == {0}
    assert (tmp_path / "out" / "meta.json").is_file()
    lines = (tmp_path / "out" / "judgments.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x)["status"] != "ok" for x in lines)


def test_one_failed_checkpoint_fails_the_command_but_keeps_the_other(tmp_path, capsys):
    samples = write_samples(tmp_path / "s.jsonl", 2)
    backend = FaultBackend(scripts={"ck-b": ["503"]})
    with ChatServer(backend) as server:
        assert run_cli(cli(samples, server, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "all 2 judgements of checkpoint ck-b failed" in err and "http 503" in err
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    a = summary[summary["checkpoint_id"] == "ck-a"]
    assert (a["n_stories"] == 2).all() and (a["n_judgments_failed"] == 0).all() and a["mean"].notna().all()


# --- kill -9 mid-run under faults, then resume: finished judgements are never asked again ---

@pytest.mark.slow
def test_kill_9_under_faults_then_resume_repeats_no_request(tmp_path):
    n = 6
    samples = write_samples(tmp_path / "s.jsonl", n)
    total = 2 * n
    # every story first gets a transient fault, then a slow valid reply
    backend = FaultBackend(scripts={"story": ["500", "sleep:0.15"]})
    with ChatServer(backend) as server:
        args = cli(samples, server, tmp_path, "--concurrency", "1")
        proc = subprocess.Popen([sys.executable, "-m", "evalsuite.cli", *args], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 40
        while server.requests_seen < 8 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        with sqlite3.connect(tmp_path / "cache.sqlite") as db:
            done = {row[0] for row in db.execute("SELECT completion FROM judgments WHERE status = 'ok'")}
        assert 2 <= len(done) < total
        calls_before = dict(backend.calls_per_story)

        assert run_cli(cli(samples, server, tmp_path)) == 0
        for story in done:  # nothing already on disk was asked again
            assert backend.calls_per_story[story] == calls_before[story]
        seen = server.requests_seen
        assert run_cli(cli(samples, server, tmp_path)) == 0  # a third run asks nothing
        assert server.requests_seen == seen
    assert len(pd.read_csv(tmp_path / "out" / "story_scores.csv")) == total


def test_validate_with_every_judgement_failing_is_one_error_line(tmp_path, capsys):
    corpus = tmp_path / "stories.txt"
    story = ("Once upon a time there was a little dog named Max. Max liked to run in the park with his friend Sue. "
             "One day they found a big red ball under a tree, and they played with it until the sun went down.")
    corpus.write_text(story)
    with ChatServer(FaultBackend(scripts={"": ["503"]})) as server:
        code = run_cli(["gpt-eval", "--validate", "--corpus", str(corpus), "--rates", "1.0", "--base-url",
                        server.base_url, "--model", "scripted-judge", "--cache", str(tmp_path / "c.sqlite"), "--out",
                        str(tmp_path / "v"), "--no-progress", "--timeout", str(TIMEOUT_S), "--max-retries", "1",
                        "--backoff-base", "0.01", "--n-bootstrap", "200"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")][0].count("all 5 judgements") == 1
    assert (tmp_path / "v" / "validation_pairs.csv").is_file()

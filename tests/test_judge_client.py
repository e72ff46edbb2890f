"""The judge client: the real `openai` client against a loopback Chat Completions server.

The server is evalsuite's own ChatServer with a scripted backend (tests/judge_scripted.py) that
answers 429s, 500s, malformed JSON, out-of-range grades, slow replies, per story. Nothing in the
client is monkeypatched.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from judge_scripted import ScriptedBackend, default_grades, expected_lp, expected_mass

from corpora.errors import UserError
from evalsuite.judge.cache import JudgeCache
from evalsuite.judge.client import JudgeItem, JudgeSettings, plan_judgments, run_judgments
from evalsuite.judge.rubric import load_rubric
from evalsuite.judge.server import ChatServer

RUBRIC = load_rubric("tinystories_gpt_eval")


def settings(server: ChatServer, **kw) -> JudgeSettings:
    base = dict(base_url=server.base_url, model="scripted-judge", backoff_base_s=0.01, backoff_max_s=0.05,
                timeout_s=5.0, concurrency=2)
    base.update(kw)
    return JudgeSettings(**base)


def items(n: int, tag: str = "story", repeats: int = 1) -> list[JudgeItem]:
    return [JudgeItem(prompt=f"Once upon a time there was a {tag}", completion=f" {tag}-{i} went to the park.",
                      repeat=r, meta={"checkpoint_id": "ck", "story": f"{tag}-{i}"})
            for i in range(n) for r in range(repeats)]


@pytest.fixture
def cache(tmp_path):
    with JudgeCache(tmp_path / "judge.sqlite") as c:
        yield c


def test_valid_replies_are_parsed_checked_and_cached(cache):
    backend = ScriptedBackend()
    with ChatServer(backend) as server:
        run = run_judgments(items(3), RUBRIC, settings(server), cache)
        assert server.requests_seen == 3
    assert run.counts() == {"ok": 3}
    for res in run.results:
        want = default_grades(res.item.completion)
        assert res.scores == want  # every grade, the age group and the assessment text
        assert json.loads(res.reply_text) == want
        assert res.row["request"]["messages"][1]["content"].count("***") >= 1
        assert res.item.completion in res.row["request"]["messages"][1]["content"]
        assert res.row["request"]["response_format"]["type"] == "json_schema"
        assert res.row["response"]["choices"][0]["message"]["content"] == res.reply_text
        assert res.row["prompt_tokens"] == 100 and res.row["completion_tokens"] == 40
    assert run.prompt_tokens == 300 and run.completion_tokens == 120
    assert cache.count("ok") == 3


def test_rerun_hits_cache_and_makes_zero_calls(cache):
    backend = ScriptedBackend()
    with ChatServer(backend) as server:
        first = run_judgments(items(4, repeats=2), RUBRIC, settings(server), cache)
        assert server.requests_seen == 8
        second = run_judgments(items(4, repeats=2), RUBRIC, settings(server), cache)
        assert server.requests_seen == 8  # not a single new request
    assert second.requests_made == 0 and second.n_cached == 8
    assert sorted(r["seed"] for r in backend.requests) == [0] * 4 + [1] * 4  # seed + repeat index
    assert all(r.from_cache for r in second.results)
    assert [r.scores for r in second.results] == [r.scores for r in first.results]


def test_cache_key_changes_with_sampling_settings_and_rubric_version(cache):
    backend = ScriptedBackend()
    with ChatServer(backend) as server:
        run_judgments(items(2), RUBRIC, settings(server), cache)
        run_judgments(items(2), RUBRIC, settings(server, temperature=0.7), cache)
        assert server.requests_seen == 4
        plan = plan_judgments(items(2), RUBRIC, settings(server, model="other-judge"), cache)
        assert len(plan.pending) == 2 and not plan.cached


def test_429_with_retry_after_is_respected(cache):
    backend = ScriptedBackend(scripts={"story-0": ["429", "ok"]})
    with ChatServer(backend) as server:
        t0 = time.monotonic()
        run = run_judgments(items(1), RUBRIC, settings(server), cache)
        elapsed = time.monotonic() - t0
    res = run.results[0]
    assert res.status == "ok"
    assert elapsed >= 0.95  # Retry-After: 1 was honoured, not our 0.01 s backoff
    attempts = res.row["attempts"]
    assert attempts[0]["outcome"].startswith("http 429") and attempts[0]["wait_s"] == pytest.approx(1.0)
    assert attempts[1]["outcome"] == "ok"
    assert run.requests_made == 2


def test_5xx_retry_ms_header_then_success_and_give_up(cache):
    backend = ScriptedBackend(scripts={"story-0": ["500", "503", "429ms", "ok"], "story-1": ["500"]})
    with ChatServer(backend) as server:
        run = run_judgments(items(2), RUBRIC, settings(server, max_retries=3), cache)
    ok, failed = run.results
    assert ok.status == "ok" and len(ok.row["attempts"]) == 4
    assert ok.row["attempts"][2]["wait_s"] == pytest.approx(0.02)  # retry-after-ms: 20
    assert failed.status == "error" and failed.scores is None
    assert "gave up after 4 transport failures" in failed.error
    assert backend.calls_per_story[" story-1 went to the park."] == 4  # 1 + max_retries


def test_malformed_then_valid_is_retried(cache):
    backend = ScriptedBackend(scripts={"story-0": ["malformed", "ok"]})
    with ChatServer(backend) as server:
        run = run_judgments(items(1), RUBRIC, settings(server), cache)
    res = run.results[0]
    assert res.status == "ok"
    assert res.row["attempts"][0]["outcome"].startswith("invalid: malformed JSON")
    assert res.row["attempts"][0]["reply_text"].startswith('{"assessment": "ok", "grammar": 7')


@pytest.mark.parametrize("action,reason", [
    ("out_of_range", "grammar"),
    ("malformed", "malformed JSON"),
    ("missing_key", "plot"),
    ("truncated", "finish_reason=length"),
])
def test_persistently_bad_replies_become_failures_not_numbers(cache, action, reason):
    backend = ScriptedBackend(scripts={"story-0": [action]})
    with ChatServer(backend) as server:
        run = run_judgments(items(2), RUBRIC, settings(server, invalid_retries=2), cache)
        assert server.requests_seen == 3 + 1  # 1 + 2 re-asks for the bad story, 1 for the good one
    bad, good = run.results
    assert bad.status == "invalid" and bad.scores is None
    assert reason in bad.error
    assert bad.reply_text is not None  # the raw reply is kept for inspection
    assert good.status == "ok"
    row = JudgeCache(cache.path).get(bad.key)
    assert row.status == "invalid" and row.row["scores"] is None and len(row.row["attempts"]) == 3


def test_out_of_range_never_reaches_a_number_even_with_lax_schema(tmp_path, cache):
    # A user rubric whose schema forgets the range still cannot record grammar=11.
    text = Path(RUBRIC.path).read_text().replace(
        "reply_schema_file: tinystories_gpt_eval.schema.json", "reply_schema_file: lax.json")
    schema = json.loads(Path(RUBRIC.path).with_suffix(".schema.json").read_text())
    (tmp_path / "lax.yaml").write_text(text)
    (tmp_path / "lax.json").write_text(json.dumps(schema))
    lax = load_rubric(tmp_path / "lax.yaml")
    lax.reply_schema["properties"]["grammar"].pop("maximum")  # loosen after the load-time check
    from jsonschema import Draft202012Validator
    object.__setattr__(lax, "_validator", Draft202012Validator(lax.reply_schema))
    backend = ScriptedBackend(scripts={"story-0": ["out_of_range"]})
    with ChatServer(backend) as server:
        run = run_judgments(items(1), lax, settings(server, invalid_retries=0), cache)
    assert run.results[0].status == "invalid" and "outside [1, 10]" in run.results[0].error


def test_timeout_is_retried(cache):
    backend = ScriptedBackend(scripts={"story-0": ["sleep:1.0", "ok"]})
    with ChatServer(backend) as server:
        run = run_judgments(items(1), RUBRIC, settings(server, timeout_s=0.3), cache)
    res = run.results[0]
    assert res.status == "ok"
    assert res.row["attempts"][0]["outcome"] == "timeout"
    assert len(res.row["attempts"]) == 2


def test_json_schema_unsupported_falls_back_to_json_object(cache):
    backend = ScriptedBackend(reject_json_schema=True)
    with ChatServer(backend) as server:
        run = run_judgments(items(2), RUBRIC, settings(server, concurrency=1), cache)
    assert run.counts() == {"ok": 2}
    assert run.response_format_used == "json_object"
    formats = [r["response_format"]["type"] for r in backend.requests]
    assert formats == ["json_schema", "json_object", "json_object"]
    # In json_object mode the schema travels in the system message.
    assert '"grammar"' in backend.requests[-1]["messages"][0]["content"]


def test_request_budget_stops_and_reports_skips(cache):
    backend = ScriptedBackend()
    with ChatServer(backend) as server:
        run = run_judgments(items(5), RUBRIC, settings(server, max_requests=3, concurrency=1), cache)
        assert server.requests_seen == 3
    assert run.counts() == {"ok": 3, "skipped": 2}
    assert "request budget of 3" in run.stopped_reason
    assert cache.count() == 3  # skipped items are not cached: a later run asks for them


def test_token_budget_and_cost(cache):
    backend = ScriptedBackend()
    with ChatServer(backend) as server:
        s = settings(server, max_tokens=100, max_total_tokens=600, concurrency=1,
                     price_input_per_1m=2.0, price_output_per_1m=8.0)
        plan = plan_judgments(items(5), RUBRIC, s, cache)
        assert plan.estimate.n_calls == 5 and plan.estimate.max_completion_tokens == 500
        assert plan.estimate.est_cost_usd > 0
        run = run_judgments(items(5), RUBRIC, s, cache)
    # each call uses 140 tokens, but the reservation is (prompt estimate + max_tokens) per call
    assert run.counts()["ok"] >= 1 and run.counts().get("skipped", 0) >= 1
    assert run.prompt_tokens + run.completion_tokens <= 600
    assert run.cost_usd == pytest.approx((run.prompt_tokens * 2.0 + run.completion_tokens * 8.0) / 1e6)


def test_concurrency_limit_holds(cache):
    backend = ScriptedBackend(delay_s=0.15)
    with ChatServer(backend) as server:
        t0 = time.monotonic()
        run = run_judgments(items(6), RUBRIC, settings(server, concurrency=3), cache)
        elapsed = time.monotonic() - t0
    assert run.counts() == {"ok": 6}
    assert backend.max_in_flight == 3
    assert elapsed < 6 * 0.15  # faster than serial


def test_auth_error_aborts_with_user_error(cache):
    backend = ScriptedBackend(scripts={"story": ["401"]})
    with ChatServer(backend) as server, pytest.raises(UserError, match="OPENAI_API_KEY"):
        run_judgments(items(2), RUBRIC, settings(server, concurrency=1), cache)


def test_logprob_weighted_scores(cache):
    backend = ScriptedBackend()
    with ChatServer(backend) as server:
        run = run_judgments(items(3), RUBRIC, settings(server, logprobs=True, top_logprobs=5), cache)
    assert backend.requests[0]["logprobs"] is True and backend.requests[0]["top_logprobs"] == 5
    for res in run.results:
        for dim in RUBRIC.dimension_names:
            assert res.logprob_scores[dim] == pytest.approx(expected_lp(res.scores[dim]))
            assert res.logprob_scores[f"{dim}_mass"] == pytest.approx(expected_mass(res.scores[dim]))


def test_logprobs_requested_but_not_returned_is_noted(cache):
    backend = ScriptedBackend(logprobs=False)
    with ChatServer(backend) as server:
        run = run_judgments(items(1), RUBRIC, settings(server, logprobs=True), cache)
    assert run.results[0].status == "ok"
    assert run.results[0].logprob_scores == {"_note": "server returned no logprobs"}


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="base-url"):
        JudgeSettings(base_url="localhost:8000", model="m")
    with pytest.raises(UserError, match="--model"):
        JudgeSettings(base_url="http://127.0.0.1:1/v1", model="")
    with pytest.raises(UserError, match="response-format"):
        JudgeSettings(base_url="http://127.0.0.1:1/v1", model="m", response_format="xml")


def test_unreachable_server_is_a_quick_user_error(cache):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    s = JudgeSettings(base_url=f"http://127.0.0.1:{port}/v1", model="m", backoff_base_s=0.01, backoff_max_s=0.02,
                      concurrency=1)
    t0 = time.monotonic()
    with pytest.raises(UserError, match="cannot connect"):
        run_judgments(items(5), RUBRIC, s, cache)
    assert time.monotonic() - t0 < 10

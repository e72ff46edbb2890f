"""A scripted Chat Completions backend for the judge tests (not collected by pytest).

It runs behind the project's real loopback server (evalsuite.judge.server.ChatServer), and the
tests talk to it with the real `openai` client. Each story's completion can carry a script: a
list of actions, one per request for that story, e.g. ["429", "ok"] or ["malformed", "ok"].
Grades are a deterministic function of the text, so tests can predict every number.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from typing import Any

from evalsuite.judge.server import BackendHTTPError, chat_response

AGE = "ABCDEF"


def story_of(request: dict[str, Any]) -> str:
    """The student's part, as rendered by the TinyStories rubric: after the story's *** up to "Judge only"."""
    user = next(m["content"] for m in request["messages"] if m["role"] == "user")
    match = re.search(r"\*\*\*([^*]*?)\n\nJudge only", user, flags=re.DOTALL)
    return match.group(1) if match else user


def default_grades(completion: str) -> dict[str, Any]:
    h = int(hashlib.sha256(completion.encode()).hexdigest(), 16)
    return {
        "assessment": f"scripted assessment of {len(completion)} chars",
        "grammar": 1 + h % 10,
        "creativity": 1 + (h // 10) % 10,
        "consistency": 1 + (h // 100) % 10,
        "plot": 1 + (h // 1000) % 10,
        "age_group": AGE[(h // 10000) % 6],
    }


class ScriptedBackend:
    model_name = "scripted-judge"

    def __init__(
        self,
        scripts: dict[str, list[str]] | None = None,
        grades=default_grades,
        *,
        delay_s: float = 0.0,
        reject_json_schema: bool = False,
        logprobs: bool = True,
    ):
        self.scripts = scripts or {}
        self.grades = grades
        self.delay_s = delay_s
        self.reject_json_schema = reject_json_schema
        self.logprobs = logprobs
        self.requests: list[dict[str, Any]] = []
        self.calls_per_story: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        story = story_of(request)
        with self._lock:
            self.requests.append(request)
            n = self.calls_per_story.get(story, 0)
            self.calls_per_story[story] = n + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            script = next((s for marker, s in self.scripts.items() if marker in story), None)
            action = script[min(n, len(script) - 1)] if script else "ok"
            fmt = (request.get("response_format") or {}).get("type")
            if self.reject_json_schema and fmt == "json_schema":
                raise BackendHTTPError(400, "response_format json_schema is not supported by this server")
            return self._act(action, story, request)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _act(self, action: str, story: str, request: dict[str, Any]) -> dict[str, Any]:
        grades = self.grades(story)
        if action.startswith("sleep:"):
            time.sleep(float(action.split(":", 1)[1]))
            action = "ok"
        if action == "429":
            raise BackendHTTPError(429, "rate limited", headers={"Retry-After": "1"})
        if action == "429ms":
            raise BackendHTTPError(429, "rate limited", headers={"retry-after-ms": "20"})
        if action == "500":
            raise BackendHTTPError(500, "internal error")
        if action == "503":
            raise BackendHTTPError(503, "overloaded")
        if action == "401":
            raise BackendHTTPError(401, "invalid api key")
        if action == "malformed":
            return chat_response('{"assessment": "ok", "grammar": 7, "creat', model=self.model_name)
        if action == "out_of_range":
            return chat_response(json.dumps({**grades, "grammar": 11}), model=self.model_name)
        if action == "missing_key":
            bad = {k: v for k, v in grades.items() if k != "plot"}
            return chat_response(json.dumps(bad), model=self.model_name)
        if action == "truncated":
            return chat_response(json.dumps(grades)[:20], model=self.model_name, finish_reason="length")
        if action != "ok":
            raise AssertionError(f"unknown scripted action {action}")
        return self._ok(grades, request)

    def _ok(self, grades: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        # Build the reply as tokens so logprobs line up exactly with the text.
        tokens: list[dict[str, Any]] = []

        def text_token(t: str) -> None:
            tokens.append({"token": t, "logprob": 0.0, "bytes": list(t.encode()), "top_logprobs": []})

        text_token("{")
        for i, (key, value) in enumerate(grades.items()):
            text_token(("" if i == 0 else ", ") + json.dumps(key) + ": ")
            if isinstance(value, int):
                # Chosen grade p=0.6, one above p=0.3, one below p=0.1 (clipped to 1..10 by skipping).
                alts = [(value, 0.6), (value + 1, 0.3), (value - 1, 0.1)]
                top = [{"token": str(v), "logprob": math.log(p), "bytes": list(str(v).encode())}
                       for v, p in alts if 1 <= v <= 10]
                top.append({"token": "x", "logprob": -9.0, "bytes": [120]})
                tokens.append({"token": str(value), "logprob": top[0]["logprob"], "bytes": list(str(value).encode()),
                               "top_logprobs": top})
            else:
                text_token(json.dumps(value))
        text_token("}")
        text = "".join(t["token"] for t in tokens)
        assert json.loads(text) == grades
        want_lp = bool(request.get("logprobs")) and self.logprobs
        return chat_response(text, model=self.model_name, prompt_tokens=100, completion_tokens=40,
                             logprobs=tokens if want_lp else None)


def expected_lp(value: int) -> float:
    """What logprob_expected_scores must return for the scripted distribution around `value`."""
    alts = [(v, p) for v, p in [(value, 0.6), (value + 1, 0.3), (value - 1, 0.1)] if 1 <= v <= 10]
    mass = sum(p for _, p in alts)
    return sum(v * p for v, p in alts) / mass


def expected_mass(value: int) -> float:
    return sum(p for v, p in [(value, 0.6), (value + 1, 0.3), (value - 1, 0.1)] if 1 <= v <= 10)

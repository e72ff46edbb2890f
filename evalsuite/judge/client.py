"""Judge calls through the official `openai` client, against any OpenAI-compatible server.

What this module guarantees, because the numbers end up in papers:
- structured output: `response_format` json_schema where the server supports it, else json_object
  with the schema in the system message; every reply is validated against the rubric's schema and
  ranges. A malformed or out-of-range reply is re-asked (`invalid_retries`), then recorded as a
  failure with its raw text. It is never turned into a number.
- transport errors (429, 5xx, timeouts, dropped connections) are retried with exponential backoff
  and jitter, honouring Retry-After / retry-after-ms. The client's own retries are off
  (`max_retries=0`) so every HTTP request is counted against the budget and logged.
- a request budget and a token budget; the run stops issuing requests when either would be exceeded
  and says so; unfinished items are reported as skipped, never silently dropped.
- every result is written to the SQLite cache the moment it arrives (see cache.py).

The library never prints; `run_judgments` returns a `JudgeRun`.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import openai

from corpora.errors import UserError
from evalsuite.judge.cache import JudgeCache, judgment_key
from evalsuite.judge.replies import check_reply, parse_completion_body, reply_content
from evalsuite.judge.rubric import ReplyInvalid, Rubric

RESPONSE_FORMATS = ("auto", "json_schema", "json_object")
CHARS_PER_TOKEN = 4.0  # rough English average, used only for the pre-run estimate and budget reservation
MAX_RETRY_AFTER_S = 600.0


@dataclass
class JudgeSettings:
    """How to call the judge. Everything that changes the judge's answer is in `sampling()`."""

    base_url: str
    model: str
    api_key: str = "EMPTY"
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = 0
    logprobs: bool = False
    top_logprobs: int = 10
    response_format: str = "auto"
    timeout_s: float = 120.0
    max_retries: int = 6
    invalid_retries: int = 2
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    concurrency: int = 4
    max_requests: int | None = None
    max_total_tokens: int | None = None
    price_input_per_1m: float | None = None
    price_output_per_1m: float | None = None
    retry_invalid_cached: bool = False
    # What the cache key records as the endpoint; the embedded judge sets "embedded:<model>" so its
    # random loopback port does not invalidate the cache. Defaults to base_url.
    endpoint_id: str | None = None

    @property
    def endpoint(self) -> str:
        return self.endpoint_id or self.base_url.rstrip("/")

    def __post_init__(self) -> None:
        if not self.base_url or not re.match(r"^https?://", self.base_url):
            raise UserError(f"--base-url must start with http:// or https://, got {self.base_url!r}")
        if not self.model:
            raise UserError("--model is required with --base-url (the judge model's name on that server)")
        if self.response_format not in RESPONSE_FORMATS:
            raise UserError(f"--response-format must be one of {RESPONSE_FORMATS}, got {self.response_format!r}")
        checks = [
            (0.0 <= self.temperature <= 2.0, "temperature must be in [0, 2]"),
            (0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]"),
            (self.max_tokens >= 1, "max_tokens must be >= 1"),
            (1 <= self.top_logprobs <= 20, "top_logprobs must be in [1, 20]"),
            (self.timeout_s > 0, "timeout must be > 0"),
            (self.max_retries >= 0 and self.invalid_retries >= 0, "retries must be >= 0"),
            (self.concurrency >= 1, "concurrency must be >= 1"),
            (self.max_requests is None or self.max_requests >= 1, "max_requests must be >= 1"),
            (self.max_total_tokens is None or self.max_total_tokens >= 1, "max_total_tokens must be >= 1"),
            (self.price_input_per_1m is None or self.price_input_per_1m >= 0, "prices must be >= 0"),
            (self.price_output_per_1m is None or self.price_output_per_1m >= 0, "prices must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def sampling(self) -> dict[str, Any]:
        """The settings that enter the cache key (besides rubric, model, URL, text, repeat)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "top_logprobs": self.top_logprobs if self.logprobs else 0,
        }

    def public_dict(self) -> dict[str, Any]:
        """For meta.json: everything but the key (whether one was set is recorded)."""
        data = asdict(self)
        data["api_key"] = "set" if self.api_key and self.api_key != "EMPTY" else "not set"
        return data


@dataclass(frozen=True)
class JudgeItem:
    """One story to judge once: the beginning (prompt), the completion, the repeat index."""

    prompt: str
    completion: str
    repeat: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class JudgeResult:
    """The outcome for one item. `status`: ok | invalid (judge replied, reply unusable) |
    error (transport/HTTP failure after retries) | skipped (budget exhausted or run aborted)."""

    item: JudgeItem
    key: str
    status: str
    scores: dict[str, Any] | None = None
    logprob_scores: dict[str, Any] | None = None
    reply_text: str | None = None
    error: str | None = None
    from_cache: bool = False
    row: dict[str, Any] | None = None


@dataclass
class CostEstimate:
    n_calls: int
    est_prompt_tokens: int
    max_completion_tokens: int
    est_cost_usd: float | None

    def describe(self) -> str:
        cost = "no prices given" if self.est_cost_usd is None else f"at most ~${self.est_cost_usd:.4f}"
        return (
            f"{self.n_calls} judge calls; ~{self.est_prompt_tokens:,} prompt tokens (chars/4 estimate) "
            f"+ at most {self.max_completion_tokens:,} completion tokens; {cost} (retries not included)"
        )


@dataclass
class JudgeRun:
    results: list[JudgeResult]
    estimate: CostEstimate
    n_cached: int
    requests_made: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    stopped_reason: str | None
    response_format_used: str | None
    started_at: str
    finished_at: str

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for res in self.results:
            out[res.status] = out.get(res.status, 0) + 1
        return out


class BudgetExhausted(Exception):
    pass


class _Budget:
    """Request and token budget shared by the worker threads."""

    def __init__(self, max_requests: int | None, max_total_tokens: int | None):
        self.max_requests = max_requests
        self.max_total_tokens = max_total_tokens
        self.requests = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._reserved_tokens = 0
        self._lock = threading.Lock()

    def reserve(self, est_tokens: int) -> None:
        with self._lock:
            if self.max_requests is not None and self.requests >= self.max_requests:
                raise BudgetExhausted(f"request budget of {self.max_requests} reached")
            if self.max_total_tokens is not None:
                projected = self.prompt_tokens + self.completion_tokens + self._reserved_tokens + est_tokens
                if projected > self.max_total_tokens:
                    raise BudgetExhausted(
                        f"token budget of {self.max_total_tokens:,} would be exceeded "
                        f"(used {self.prompt_tokens + self.completion_tokens:,}, next call up to {est_tokens:,})"
                    )
            self.requests += 1
            self._reserved_tokens += est_tokens

    def settle(self, est_tokens: int, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self._reserved_tokens -= est_tokens
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    return int(sum(len(m["content"]) for m in messages) / CHARS_PER_TOKEN) + 8 * len(messages)


def estimate_cost(items: Sequence[JudgeItem], rubric: Rubric, settings: JudgeSettings) -> CostEstimate:
    """Upper-bound style estimate printed before a run: prompt tokens from chars/4, output = max_tokens."""
    prompt_tokens = sum(estimate_prompt_tokens(rubric.render(it.prompt, it.completion)) for it in items)
    completion_tokens = settings.max_tokens * len(items)
    return CostEstimate(
        n_calls=len(items),
        est_prompt_tokens=prompt_tokens,
        max_completion_tokens=completion_tokens,
        est_cost_usd=_cost(settings, prompt_tokens, completion_tokens),
    )


def _cost(settings: JudgeSettings, prompt_tokens: int, completion_tokens: int) -> float | None:
    if settings.price_input_per_1m is None and settings.price_output_per_1m is None:
        return None
    return (prompt_tokens * (settings.price_input_per_1m or 0.0) + completion_tokens * (settings.price_output_per_1m or 0.0)) / 1e6


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def item_key(item: JudgeItem, rubric: Rubric, settings: JudgeSettings) -> str:
    return judgment_key(
        rubric_id=rubric.id,
        rubric_version=rubric.version,
        judge_model=settings.model,
        base_url=settings.endpoint,
        prompt=item.prompt,
        completion=item.completion,
        sampling=settings.sampling(),
        repeat_index=item.repeat,
    )


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds the server asked us to wait: retry-after-ms, or Retry-After (seconds or HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(when.tzinfo or timezone.utc)).total_seconds())


class Judge:
    """Calls the judge for single items; shared by worker threads."""

    def __init__(self, rubric: Rubric, settings: JudgeSettings, cache: JudgeCache, budget: _Budget):
        self.rubric = rubric
        self.settings = settings
        self.cache = cache
        self.budget = budget
        self.client = openai.OpenAI(
            base_url=settings.base_url, api_key=settings.api_key or "EMPTY", max_retries=0, timeout=settings.timeout_s
        )
        self._format = "json_schema" if settings.response_format in ("auto", "json_schema") else "json_object"
        self._format_lock = threading.Lock()
        self._rng = random.Random()
        self.stop = threading.Event()
        # A wrong --base-url (nothing listening) would otherwise be retried with backoff for every story.
        self._ever_answered = threading.Event()
        self._refusals = 0
        self._refusal_lock = threading.Lock()

    def _check_unreachable(self, err: Exception) -> None:
        if self._ever_answered.is_set() or isinstance(err, openai.APITimeoutError):
            return
        # Only a refused connection says "nothing listens there"; a reset or dropped connection means
        # a server is there and failed this once (transient, retried). (The class lives in the HTTP
        # library the openai client ships with, httpx or its fork, hence the name test.)
        if not isinstance(err, openai.APIConnectionError) or type(err.__cause__).__name__ != "ConnectError":
            return
        with self._refusal_lock:
            self._refusals += 1
            if self._refusals >= 3:
                self.stop.set()
                raise UserError(f"cannot connect to the judge at {self.settings.base_url} ({err}); is the server running?")

    @property
    def response_format_used(self) -> str:
        return self._format

    def _response_format(self, mode: str) -> dict[str, Any]:
        if mode == "json_object":
            return {"type": "json_object"}
        schema = {k: v for k, v in self.rubric.reply_schema.items() if k != "$schema"}
        name = re.sub(r"[^a-zA-Z0-9_-]", "_", self.rubric.id)[:64]
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}

    def _request(self, item: JudgeItem, mode: str) -> dict[str, Any]:
        messages = self.rubric.render(item.prompt, item.completion)
        if mode == "json_object":
            messages[0] = {"role": "system", "content": messages[0]["content"] + self.rubric.json_object_instruction()}
        s = self.settings
        request: dict[str, Any] = {
            "model": s.model,
            "messages": messages,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "response_format": self._response_format(mode),
        }
        if s.seed is not None:
            # Each repeat gets its own seed: with one seed, a server that honours it would return the
            # same sample K times and test-retest agreement would be trivially perfect.
            request["seed"] = s.seed + item.repeat
        if s.logprobs:
            request["logprobs"] = True
            request["top_logprobs"] = s.top_logprobs
        return request

    def _backoff(self, n_failures: int, headers: Any) -> float:
        wait = retry_after_seconds(headers)
        if wait is not None:
            return min(wait, MAX_RETRY_AFTER_S)
        ceiling = min(self.settings.backoff_max_s, self.settings.backoff_base_s * (2 ** (n_failures - 1)))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)  # "equal jitter"

    def judge(self, item: JudgeItem, key: str) -> JudgeResult:
        """Ask until a valid reply, or until retries run out; write the outcome to the cache."""
        s = self.settings
        attempts: list[dict[str, Any]] = []
        started = _now()
        transport_failures = 0
        invalid_replies = 0
        status, error, reply_text, scores, lp_scores = "error", None, None, None, None
        response_dump: dict[str, Any] | None = None
        request: dict[str, Any] = {}
        response_model = None
        usage_prompt = usage_completion = 0
        while True:
            if self.stop.is_set():
                return JudgeResult(item=item, key=key, status="skipped", error="run aborted")
            mode = self._format
            request = self._request(item, mode)
            est = estimate_prompt_tokens(request["messages"]) + s.max_tokens
            try:
                self.budget.reserve(est)
            except BudgetExhausted as err:
                if attempts:  # part-way through this item: keep what we saw, as an error row
                    status, scores, lp_scores = "error", None, None
                    error = f"budget exhausted: {err}"
                    break
                return JudgeResult(item=item, key=key, status="skipped", error=f"budget exhausted: {err}")
            attempt: dict[str, Any] = {"n": len(attempts) + 1, "sent_at": _now(), "response_format": mode}
            t0 = time.monotonic()
            try:
                # The raw body, not the client's parse of it: what a 200 carries is checked in replies.py,
                # so a non-JSON, non-object or wrong-shape body is an invalid reply, re-asked like one.
                raw = self.client.chat.completions.with_raw_response.create(**request)
                body = raw.http_response.text
            except (openai.APITimeoutError, openai.APIConnectionError, openai.APIStatusError) as err:
                self.budget.settle(est, 0, 0)
                if _is_fatal(err):
                    self.stop.set()
                    raise UserError(
                        f"judge server {s.base_url} refused the request ({_describe_error(err)}): check --base-url "
                        f"(usually ends in /v1), --model {s.model!r} and OPENAI_API_KEY"
                    ) from None
                self._check_unreachable(err)
                attempt.update(elapsed_s=round(time.monotonic() - t0, 3), outcome=_describe_error(err))
                if _is_transient(err):
                    transport_failures += 1
                    if transport_failures > s.max_retries:
                        attempts.append(attempt)
                        status, scores, lp_scores = "error", None, None
                        error = f"gave up after {transport_failures} transport failures; last: {attempt['outcome']}"
                        break
                    wait = self._backoff(transport_failures, getattr(getattr(err, "response", None), "headers", None))
                    attempt["wait_s"] = round(wait, 3)
                    attempts.append(attempt)
                    time.sleep(wait)
                    continue
                # A status the server means (400, 422 ...): asking again would get the same answer.
                self._ever_answered.set()
                attempts.append(attempt)
                code = getattr(err, "status_code", None)
                if mode == "json_schema" and s.response_format == "auto" and code in (400, 422):
                    # The server does not take json_schema: fall back to json_object + our validation.
                    with self._format_lock:
                        self._format = "json_object"
                    continue
                status, scores, lp_scores = "error", None, None
                error = attempt["outcome"]
                break

            self._ever_answered.set()
            attempt["elapsed_s"] = round(time.monotonic() - t0, 3)
            completion = None
            try:
                completion = parse_completion_body(body)
                response_dump = completion.model_dump(mode="json")
                response_model = completion.model
                p_tok = completion.usage.prompt_tokens if completion.usage else estimate_prompt_tokens(request["messages"])
                c_tok = completion.usage.completion_tokens if completion.usage else s.max_tokens
                reply_text, scores, lp_scores = check_reply(completion, self.rubric, logprobs=s.logprobs)
            except ReplyInvalid as err:
                if completion is None:  # the body itself was unusable: keep it as the response
                    response_dump, response_model = {"raw_body": body[:10_000]}, None
                    p_tok, c_tok = estimate_prompt_tokens(request["messages"]), 0
                self.budget.settle(est, p_tok or 0, c_tok or 0)
                usage_prompt += p_tok or 0
                usage_completion += c_tok or 0
                invalid_replies += 1
                reply_text = reply_content(completion) if completion is not None else body[:10_000]
                attempt.update(outcome=f"invalid: {err}", reply_text=reply_text)
                attempts.append(attempt)
                status, error = "invalid", f"invalid reply ({invalid_replies}x); last: {err}"
                if invalid_replies > s.invalid_retries:
                    scores, lp_scores = None, None
                    break
                continue
            self.budget.settle(est, p_tok or 0, c_tok or 0)
            usage_prompt += p_tok or 0
            usage_completion += c_tok or 0
            attempt["outcome"] = "ok"
            attempts.append(attempt)
            status, error = "ok", None
            break

        row = {
            "key": key,
            "rubric_id": self.rubric.id,
            "rubric_version": self.rubric.version,
            "judge_model": s.model,
            "base_url": s.endpoint,
            "prompt": item.prompt,
            "completion": item.completion,
            "sampling": s.sampling(),
            "repeat_index": item.repeat,
            "status": status,
            "scores": scores,
            "logprob_scores": lp_scores,
            "reply_text": reply_text,
            "request": request,
            "response": response_dump,
            "attempts": attempts,
            "error": error,
            "n_requests": len(attempts),
            "prompt_tokens": usage_prompt,
            "completion_tokens": usage_completion,
            "response_model": response_model,
            "started_at": started,
            "finished_at": _now(),
        }
        self.cache.put(row)
        return JudgeResult(
            item=item, key=key, status=status, scores=scores, logprob_scores=lp_scores,
            reply_text=reply_text, error=error, row=row,
        )


TRANSIENT_STATUS = frozenset({408, 409, 425, 429})  # plus every 5xx: worth asking again after a wait
FATAL_STATUS = frozenset({401, 403, 404})  # wrong key, no access, wrong URL or model: abort the run


def _status(err: Exception) -> int | None:
    return getattr(err, "status_code", None) if isinstance(err, openai.APIStatusError) else None


def _is_transient(err: Exception) -> bool:
    """Timeouts, dropped or reset connections, 408/409/425/429 and 5xx: retried with backoff."""
    if isinstance(err, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    code = _status(err)
    return code is not None and (code in TRANSIENT_STATUS or code >= 500)


def _is_fatal(err: Exception) -> bool:
    return _status(err) in FATAL_STATUS


def _describe_error(err: Exception) -> str:
    if isinstance(err, openai.APITimeoutError):
        return "timeout"
    if isinstance(err, openai.APIStatusError):
        body = " ".join(err.response.text[:300].split()) if err.response is not None else ""  # one line
        return f"http {err.status_code}: {body}"
    if isinstance(err, openai.APIConnectionError):
        return f"connection error: {err}"
    return f"{type(err).__name__}: {err}"


@dataclass
class JudgePlan:
    """What a run will do: cached results found, items still to ask, and the cost estimate."""

    items: list[JudgeItem]
    keys: list[str]
    cached: dict[str, JudgeResult]
    pending: dict[str, JudgeItem]
    estimate: CostEstimate


def plan_judgments(
    items: Sequence[JudgeItem], rubric: Rubric, settings: JudgeSettings, cache: JudgeCache
) -> JudgePlan:
    """Look every item up in the cache; estimate the cost of the rest (print it before running).

    Identical items (same key) are judged once. Cached `ok` and `invalid` results are reused
    (`invalid` = the judge did reply, unusably; set `retry_invalid_cached` to ask again);
    cached transport `error` rows are asked again.
    """
    keys = [item_key(item, rubric, settings) for item in items]
    reuse = {"ok", "invalid"} - ({"invalid"} if settings.retry_invalid_cached else set())
    cached: dict[str, JudgeResult] = {}
    pending: dict[str, JudgeItem] = {}
    for item, key in zip(items, keys, strict=True):
        if key in cached or key in pending:
            continue
        hit = cache.get(key)
        if hit is not None and hit.status in reuse:
            row = hit.row
            cached[key] = JudgeResult(
                item=item, key=key, status=row["status"], scores=row["scores"], logprob_scores=row["logprob_scores"],
                reply_text=row["reply_text"], error=row["error"], from_cache=True, row=row,
            )
        else:
            pending[key] = item
    estimate = estimate_cost(list(pending.values()), rubric, settings)
    return JudgePlan(items=list(items), keys=keys, cached=cached, pending=pending, estimate=estimate)


def execute_plan(
    plan: JudgePlan,
    rubric: Rubric,
    settings: JudgeSettings,
    cache: JudgeCache,
    *,
    progress: bool = False,
    on_result: Callable[[JudgeResult], None] | None = None,
) -> JudgeRun:
    """Ask the judge for every pending item (concurrently, within the budget); results align with items."""
    started = _now()
    by_key: dict[str, JudgeResult] = dict(plan.cached)
    budget = _Budget(settings.max_requests, settings.max_total_tokens)
    judge = Judge(rubric, settings, cache, budget) if plan.pending else None
    stopped_reason = None
    if judge is not None:
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(plan.pending), desc="judging", unit="call")
        fatal: BaseException | None = None
        pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="judge")
        futures = {pool.submit(judge.judge, item, key): key for key, item in plan.pending.items()}
        try:
            for fut in as_completed(futures):
                key = futures[fut]
                try:
                    result = fut.result()
                except Exception as err:  # re-raised once the pool has drained
                    judge.stop.set()
                    fatal = fatal or err
                    result = JudgeResult(item=plan.pending[key], key=key, status="skipped", error=f"aborted: {err}")
                by_key[key] = result
                if result.status == "skipped" and result.error and result.error.startswith("budget"):
                    stopped_reason = result.error
                if on_result is not None:
                    on_result(result)
                if bar is not None:
                    bar.update(1)
        except BaseException:
            # Ctrl-C: stop issuing requests; what has been written to the cache stays there.
            judge.stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if bar is not None:
            bar.close()
        if fatal is not None:
            raise fatal
    # Each input item gets its own result object (duplicates share the judgment, not the metadata).
    results = [JudgeResult(**{**by_key[key].__dict__, "item": item}) for item, key in zip(plan.items, plan.keys, strict=True)]
    return JudgeRun(
        results=results,
        estimate=plan.estimate,
        n_cached=len(plan.cached),
        requests_made=budget.requests,
        prompt_tokens=budget.prompt_tokens,
        completion_tokens=budget.completion_tokens,
        cost_usd=_cost(settings, budget.prompt_tokens, budget.completion_tokens),
        stopped_reason=stopped_reason,
        response_format_used=judge.response_format_used if judge else None,
        started_at=started,
        finished_at=_now(),
    )


def run_judgments(
    items: Sequence[JudgeItem],
    rubric: Rubric,
    settings: JudgeSettings,
    cache: JudgeCache,
    *,
    progress: bool = False,
) -> JudgeRun:
    """plan_judgments + execute_plan."""
    plan = plan_judgments(items, rubric, settings, cache)
    return execute_plan(plan, rubric, settings, cache, progress=progress)


def dump_result(result: JudgeResult) -> str:
    """One JSONL line for the per-story log: item metadata + status + scores + full cache row."""
    return json.dumps(
        {
            **result.item.meta,
            "repeat": result.item.repeat,
            "key": result.key,
            "status": result.status,
            "from_cache": result.from_cache,
            "scores": result.scores,
            "logprob_scores": result.logprob_scores,
            "error": result.error,
            "reply_text": result.reply_text,
            "judge": result.row,
        },
        ensure_ascii=False,
    )


def probe_judge(base_url: str, api_key: str = "EMPTY", timeout_s: float = 10.0) -> str:
    """Check that a judge server answers at all (GET <base_url>/models) before any expensive work.

    Returns what was learnt ("models: a, b" or "reachable (http 404 on /models)"). Raises `UserError`
    when nothing listens there, it does not answer within `timeout_s`, or it rejects the key.
    Any other answer means a server is there: the judge calls themselves decide the rest."""
    client = openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY", max_retries=0, timeout=timeout_s)
    try:
        models = [m.id for m in client.models.list()]
    except openai.APITimeoutError:
        raise UserError(f"the judge at {base_url} did not answer within {timeout_s:g} s (GET /models)") from None
    except openai.APIConnectionError as err:
        raise UserError(f"cannot connect to the judge at {base_url} ({err.__cause__ or err}); "
                        f"is the server running?") from None
    except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
        raise UserError(f"the judge at {base_url} rejected the API key ({_describe_error(err)}); "
                        f"check OPENAI_API_KEY") from None
    except openai.APIStatusError as err:
        return f"reachable (http {err.status_code} on /models)"
    except openai.APIError as err:  # e.g. /models answered with something that is not a model list
        return f"reachable (/models: {type(err).__name__})"
    return "models: " + ", ".join(models[:5]) + (" ..." if len(models) > 5 else "")

"""SQLite cache and log of judge calls.

One row per judgment, keyed by a hash of everything that determines the judge's answer:
(rubric id + version, judge model, base URL, story beginning, completion, sampling settings,
repeat index). A re-run finds every finished judgment here and makes no call; a run killed
half-way resumes from what was written, because each result is committed the moment it arrives
(WAL mode, so a kill never corrupts what is already on disk).

Every row keeps the exact request, the raw reply text, the full response, each HTTP attempt
(errors, waits) and timestamps, so any score can be traced back to the judge's own words.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

_COLUMNS = (
    "key", "rubric_id", "rubric_version", "judge_model", "base_url", "prompt", "completion",
    "sampling", "repeat_index", "status", "scores", "logprob_scores", "reply_text", "request",
    "response", "attempts", "error", "n_requests", "prompt_tokens", "completion_tokens",
    "response_model", "started_at", "finished_at",
)
_JSON_COLUMNS = {"sampling", "scores", "logprob_scores", "request", "response", "attempts"}


def judgment_key(
    *,
    rubric_id: str,
    rubric_version: str,
    judge_model: str,
    base_url: str,
    prompt: str,
    completion: str,
    sampling: dict[str, Any],
    repeat_index: int,
) -> str:
    """sha256 of the canonical JSON of the fields that determine a judgment."""
    payload = {
        "rubric_id": rubric_id,
        "rubric_version": str(rubric_version),
        "judge_model": judge_model,
        "base_url": base_url.rstrip("/"),
        "prompt": prompt,
        "completion": completion,
        "sampling": sampling,
        "repeat_index": int(repeat_index),
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class CachedJudgment:
    """A row of the cache, JSON columns decoded."""

    key: str
    status: str
    row: dict[str, Any]


class JudgeCache:
    """Thread-safe SQLite store; every `put` commits at once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            f"""CREATE TABLE IF NOT EXISTS judgments (
                key TEXT PRIMARY KEY, rubric_id TEXT, rubric_version TEXT, judge_model TEXT,
                base_url TEXT, prompt TEXT, completion TEXT, sampling TEXT, repeat_index INTEGER,
                status TEXT, scores TEXT, logprob_scores TEXT, reply_text TEXT, request TEXT,
                response TEXT, attempts TEXT, error TEXT, n_requests INTEGER, prompt_tokens INTEGER,
                completion_tokens INTEGER, response_model TEXT, started_at TEXT, finished_at TEXT,
                schema_version INTEGER DEFAULT {SCHEMA_VERSION})"""
        )
        self._conn.commit()

    def get(self, key: str) -> CachedJudgment | None:
        with self._lock:
            cur = self._conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM judgments WHERE key = ?", (key,))
            values = cur.fetchone()
        if values is None:
            return None
        row = _decode(dict(zip(_COLUMNS, values, strict=True)))
        return CachedJudgment(key=key, status=row["status"], row=row)

    def put(self, row: dict[str, Any]) -> None:
        """Insert or replace one judgment and commit immediately."""
        missing = set(_COLUMNS) - set(row)
        if missing:
            raise ValueError(f"cache row lacks {sorted(missing)}")
        encoded = [json.dumps(row[c], ensure_ascii=False) if c in _JSON_COLUMNS else row[c] for c in _COLUMNS]
        with self._lock:
            self._conn.execute(
                f"INSERT OR REPLACE INTO judgments ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                encoded,
            )
            self._conn.commit()

    def count(self, status: str | None = None) -> int:
        with self._lock:
            if status is None:
                return self._conn.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]
            return self._conn.execute("SELECT COUNT(*) FROM judgments WHERE status = ?", (status,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> JudgeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for col in _JSON_COLUMNS:
        if row.get(col) is not None:
            row[col] = json.loads(row[col])
    return row

"""The one owner of `metrics_stream.jsonl`: its keys, its writer and its reader.

One JSON object per log step, always the keys of `METRIC_KEYS` (null when not measured), flushed
after every line. Nobody else opens the file by hand: trainers write through `MetricsStream`,
evalsuite (dynamics, diagnose, figures) reads through `read_metrics`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from corpora.errors import UserError

METRICS_FILE = "metrics_stream.jsonl"
METRIC_KEYS = (
    "step", "tokens_seen", "train_loss", "train_objective", "val_loss", "val_bpc", "lr", "grad_norm",
    "tokens_per_s", "article_loss", "other_loss", "article_other_ratio", "component_grad_norms",
    # validation tokens scored, and the standard error of val_loss over evaluation blocks
    "val_tokens", "val_loss_se",
)


class MetricsStream:
    """Append-only JSON lines, flushed after every line; on resume, lines after the resumed step go."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        self._handle: Any = None

    def truncate_after(self, step: int) -> int:
        """Keep lines with step <= `step` (drop a torn last line); returns how many lines were dropped."""
        if not self.enabled or not self.path.exists():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                kept.append(line)
            else:
                dropped += 1
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        os.replace(tmp, self.path)
        return dropped

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the run)
        self._handle.write(json.dumps({k: record.get(k) for k in METRIC_KEYS}) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a run's metrics stream (a run directory or the file itself).

    One tolerant rule for every reader: a torn LAST line (a crash mid-write; training truncates it
    on resume) is dropped; a bad line anywhere else, non-UTF-8 bytes, or an object without an
    integer `step` is a `UserError` naming the line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise UserError(f"no {METRICS_FILE} at {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if i == len(lines) - 1 and not text.endswith("\n"):
                break
            raise UserError(f"{path}:{i + 1}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise UserError(f"{path}:{i + 1}: expected a JSON object with an integer 'step'")
        records.append(record)
    return records

"""Reading samples.jsonl (written by `evalsuite generate`, or by hand): one JSON object per line.

One reader for every consumer (gpt-eval, dim-probe, childes-compare, diagnose), so a bad file gives
the same clear error everywhere. Each consumer then checks the fields it needs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from corpora.errors import UserError


def read_jsonl_objects(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; UserError for a missing, non-UTF-8 or bad file."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"samples file not found: {file}")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise UserError(f"{file}: not UTF-8 ({err.reason} at byte {err.start})") from None
    records = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{file}:{lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{file}:{lineno}: expected a JSON object")
        records.append((lineno, obj))
    return records

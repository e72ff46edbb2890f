"""The one owner of samples.jsonl (written by `evalsuite generate`, or by hand): one JSON object per line.

`SAMPLE_FIELDS` is the field list `evalsuite generate` writes; `SamplesWriter` is the one writer
(atomic: a reader sees the old file or the finished new one); `read_samples(paths, require=...)` is
the one reader for every consumer (gpt-eval, dim-probe, childes-compare, diagnose, figures, report),
so a bad file gives the same clear error everywhere and a missing field is defaulted by one rule:

- `checkpoint_id`: the record's; else its `checkpoint` (as text); else the file's stem.
  `checkpoint_id_from` says which ("checkpoint_id", "checkpoint" or "file name"), so a consumer that
  must not guess (diagnose matching samples to a checkpoint) can tell.
- `checkpoint`: the record's; else the `checkpoint_id` above.
- `prompt_id`: the record's; else `line-<N>` (N = the line number).
- `prompt`: the record's; else "" (a story with no beginning).
- `samples_file`, `samples_line`: where the record came from (added).

Every other field is returned as written; `require` names the fields a consumer cannot do without
(present and not null), `completion` (and `prompt` when present) must be strings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from corpora.errors import UserError

SAMPLES_FILE = "samples.jsonl"

# field -> meaning, in the order `evalsuite generate` writes them (evalsuite.generate.iter_samples)
SAMPLE_FIELDS: dict[str, str] = {
    "prompt_id": "id of the story beginning in its prompt set",
    "prompt": "the story beginning given to the model",
    "completion": "the model's continuation (decoded text, prompt excluded)",
    "checkpoint": "the checkpoint path as given on the command line",
    "checkpoint_id": "run/name plus a hash of the weights (evalsuite.generate.checkpoint_id)",
    "val_loss": "the checkpoint's validation loss, nats per token (trainer_state.json)",
    "val_bpc": "the checkpoint's validation loss in bits per character",
    "tokens_seen": "training tokens the checkpoint had seen",
    "iter_num": "training step of the checkpoint",
    "model_family": "spinnet or baseline",
    "tokenizer": "tokenizer name",
    "tokenizer_identity": "tokenizer identity (changes when the vocabulary changes)",
    "temperature": "sampling temperature (0 = greedy)",
    "top_k": "top-k filter (null = off)",
    "top_p": "nucleus filter (1.0 = off)",
    "max_new_tokens": "most tokens generated",
    "seed": "sampling seed; each prompt's generator is seeded from (seed, prompt_id)",
    "prompt_set": "name of the prompt set",
    "finish_reason": "eot (ended at <|endoftext|>) or length",
    "n_prompt_tokens": "tokens of the prompt",
    "n_completion_tokens": "tokens of the completion",
    "device": "device that generated it",
}
STRING_FIELDS = ("prompt", "completion")
# which function computed each field (meta.json `columns`)
_COMPUTED_BY = {
    "completion": "evalsuite.generate.generate_ids",
    "checkpoint_id": "evalsuite.generate.checkpoint_id",
    "finish_reason": "evalsuite.generate.generate_ids",
    "n_completion_tokens": "evalsuite.generate.generate_ids",
    "val_loss": "trainers.train.train", "val_bpc": "trainers.train.train", "tokens_seen": "trainers.train.train",
    "iter_num": "trainers.train.train",
    "prompt_id": "evalsuite.generate.load_prompt_set", "prompt": "evalsuite.generate.load_prompt_set",
    "prompt_set": "evalsuite.generate.load_prompt_set",
}


def sample_columns() -> dict[str, dict[str, str]]:
    """meta.json `columns` entry of a samples.jsonl: every field, its meaning and what computed it."""
    return {name: {"definition": definition, "computed_by": _COMPUTED_BY.get(name, "evalsuite.generate.iter_samples")}
            for name, definition in SAMPLE_FIELDS.items()}


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


def looks_like_samples(path: str | os.PathLike) -> bool:
    """Whether a .jsonl file is a samples file (its first object has a `completion`) rather than a corpus."""
    try:
        with Path(path).open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        return False
                    return isinstance(row, dict) and "completion" in row
    except UnicodeDecodeError:
        return False  # not a samples file; the corpus reader then names the bad byte
    return False


def _with_defaults(obj: dict[str, Any], file: Path, lineno: int) -> dict[str, Any]:
    """The one defaulting rule (module docstring)."""
    record = dict(obj)
    if record.get("checkpoint_id") not in (None, ""):
        record["checkpoint_id"], source = str(record["checkpoint_id"]), "checkpoint_id"
    elif record.get("checkpoint") not in (None, ""):
        record["checkpoint_id"], source = str(record["checkpoint"]), "checkpoint"
    else:
        record["checkpoint_id"], source = file.stem, "file name"
    record["checkpoint_id_from"] = source
    if record.get("checkpoint") in (None, ""):
        record["checkpoint"] = record["checkpoint_id"]
    if record.get("prompt_id") is None:
        record["prompt_id"] = f"line-{lineno}"
    if record.get("prompt") is None:
        record["prompt"] = ""
    record["samples_file"] = str(file)
    record["samples_line"] = lineno
    return record


def read_samples(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    require: Iterable[str] = ("completion",),
) -> list[dict[str, Any]]:
    """Every sample of one or more samples.jsonl files, in file then line order, with the defaults above.

    UserError (naming file and line) for a missing, non-UTF-8 or malformed file, a required field that
    is absent or null, a non-string `prompt`/`completion`, or no samples at all.
    """
    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    required = tuple(dict.fromkeys(("completion", *require)))
    out: list[dict[str, Any]] = []
    for raw in files:
        file = Path(raw).expanduser()
        for lineno, obj in read_jsonl_objects(file):
            for key in STRING_FIELDS:
                if (key in required or obj.get(key) is not None) and not isinstance(obj.get(key), str):
                    raise UserError(f"{file}:{lineno}: line {lineno} lacks a string '{key}'")
            missing = [k for k in required if obj.get(k) is None]
            if missing:
                raise UserError(f"{file}:{lineno}: missing {', '.join(missing)}")
            out.append(_with_defaults(obj, file, lineno))
    if not out:
        raise UserError(f"no samples in {', '.join(str(f) for f in files)}")
    return out


class SamplesWriter:
    """Write samples.jsonl atomically: lines go to `<path>.partial`, renamed onto `path` on success.

    On an exception the partial file is removed and `path` is left as it was.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.partial = self.path.with_suffix(self.path.suffix + ".partial")
        self.n_written = 0
        self._handle: Any = None

    def __enter__(self) -> SamplesWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.partial.open("w", encoding="utf-8")
        return self

    def write(self, row: dict[str, Any]) -> None:
        """One sample (a dict with at least a string `completion`)."""
        if not isinstance(row.get("completion"), str):
            raise ValueError("a sample needs a string 'completion'")
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.n_written += 1

    def flush(self) -> None:
        self._handle.flush()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        if exc_type is None:
            os.replace(self.partial, self.path)
        else:
            self.partial.unlink(missing_ok=True)


def write_samples(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Write all `rows` to `path` atomically; returns how many were written."""
    with SamplesWriter(path) as writer:
        for row in rows:
            writer.write(row)
    return writer.n_written

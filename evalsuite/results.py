"""The one results writer and the one meta.json schema, used by every command.

A results folder is `<results>/<RESULTS_DIRS[command]>/`: tidy tables (CSV, Parquet where useful)
written atomically, plus `meta.json`:

    schema            "evalsuite.meta/1"
    command           the evalsuite command name ("dim-probe")
    argv              the full command line of the process that wrote it
    code_version      {package, version, git_commit, git_dirty}
    libraries         {name: version}
    created_utc       ISO-8601 time
    config            the resolved settings the numbers depend on
    inputs            [{path, kind, sha256, ...}] for every input file or folder
    seeds             {name: int}
    columns           {table: {column: {definition, computed_by}}}; computed_by is the dotted name of the
                      function that computed the column (a key of evalsuite.stats.PROCEDURES for intervals)
    outputs           [file names written next to meta.json]
    + command-specific keys (summaries, verdicts, warnings) at the top level.

Figures, report and demo find folders through `results_dir_for`, never by guessing spellings.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from corpora.provenance import code_version, command_line, input_record, library_versions

META_SCHEMA = "evalsuite.meta/1"
META_REQUIRED = ("schema", "command", "argv", "code_version", "libraries", "created_utc", "config",
                 "inputs", "seeds", "columns")

# command -> folder under a results directory (kept as they were so old results still resolve)
RESULTS_DIRS: dict[str, str] = {
    "generate": "generate",
    "gpt-eval": "gpt_eval",
    "dim-probe": "dim-probe",
    "childes-compare": "childes-compare",
    "childes-age": "childes-age",
    "diagnose": "diagnose",
    "dynamics": "dynamics",
    "figures": "figures",
    "report": "report",
    "compress": "compress",
    "tokenizer": "tokenizer",
    "corpora": "corpora",
    "benchmarks": "benchmarks",
}
# spellings written by older versions, still read
LEGACY_DIRS: dict[str, tuple[str, ...]] = {
    "gpt-eval": ("gpt-eval",),
    "dim-probe": ("dim_probe", "dimprobe"),
    "childes-compare": ("childes_compare", "childes"),
}


_INVOCATION: list[list[str]] = []  # stack of in-process command lines (cli.main, demo steps)


@contextlib.contextmanager
def invocation(argv: Sequence[str]) -> Iterator[None]:
    """Within this block, meta.json's `argv` is `argv`, not this process's sys.argv: a command run
    in-process (the demo's steps, `evalsuite.cli.main([...])`) records its own command line."""
    _INVOCATION.append([str(a) for a in argv])
    try:
        yield
    finally:
        _INVOCATION.pop()


def current_argv() -> list[str]:
    """The command line that meta.json records: the innermost `invocation`, else sys.argv."""
    return list(_INVOCATION[-1]) if _INVOCATION else command_line()


def results_dir_for(results_root: str | os.PathLike, command: str) -> Path:
    """Where `command` writes under a results root."""
    if command not in RESULTS_DIRS:
        raise KeyError(f"no results folder registered for command {command!r}")
    return Path(results_root) / RESULTS_DIRS[command]


def candidate_dirs(command: str) -> tuple[str, ...]:
    """Folder names under which `command`'s outputs may be found (current first, then legacy)."""
    return (RESULTS_DIRS[command], *LEGACY_DIRS.get(command, ()))


def column(definition: str, computed_by: str) -> dict[str, str]:
    """One `columns` entry: what a column means and the dotted name of the function that computed it."""
    return {"definition": definition, "computed_by": computed_by}


def _atomic_write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text so that a reader sees the old file or the new one, never half of one."""
    return _atomic_write_bytes(Path(path), text.encode("utf-8"))


def write_table(frame: Any, path: str | os.PathLike, *, parquet: bool = False) -> list[Path]:
    """Write a pandas DataFrame to `path` (.csv) atomically; with `parquet`, also `path` with .parquet."""
    path = Path(path)
    written = [_atomic_write_bytes(path, frame.to_csv(index=False).encode("utf-8"))]
    if parquet:
        written.append(write_parquet(frame, path.with_suffix(".parquet")))
    return written


def read_table(path: str | os.PathLike, nrows: int | None = None) -> Any:
    """A saved results table (CSV) as a DataFrame (its first `nrows` rows when given), for figures,
    report and the commands that print their own tables: an empty file is an empty table; a file that
    is not a UTF-8 CSV is the user's to fix, one `UserError` line naming it."""
    import pandas as pd

    from corpora.errors import UserError

    try:
        return pd.read_csv(path, nrows=nrows)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}); fix or remove the file") from None
    except pd.errors.ParserError as err:
        raise UserError(f"{path}: not a readable CSV ({str(err).strip()}); fix or remove the file") from None


def _jsonable(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (JSON has no NaN), paths and numpy scalars become plain values."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return _jsonable(asdict(value))
    return str(value)


def build_meta(
    command: str,
    *,
    config: Mapping[str, Any] | None = None,
    inputs: Iterable[str | os.PathLike] = (),
    seeds: Mapping[str, int] | None = None,
    columns: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
    outputs: Iterable[str] = (),
    libraries: Iterable[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The meta.json dict of one command run (see the module docstring for the schema)."""
    libs = library_versions() if libraries is None else library_versions(tuple(libraries))
    meta: dict[str, Any] = {
        "schema": META_SCHEMA,
        "command": command,
        "argv": current_argv(),
        "code_version": code_version(),
        "libraries": libs,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": dict(config or {}),
        "inputs": [input_record(p) for p in inputs],
        "seeds": dict(seeds or {}),
        "columns": {t: {c: dict(v) for c, v in cols.items()} for t, cols in (columns or {}).items()},
        "outputs": sorted(outputs),
    }
    for key, value in (extra or {}).items():
        if key in meta:
            raise ValueError(f"meta key {key!r} is part of the schema; pass it through its own argument")
        meta[key] = value
    return _jsonable(meta)


def validate_meta(meta: Mapping[str, Any]) -> list[str]:
    """Problems with a meta dict against the schema (empty list = valid)."""
    problems = [f"missing key {k!r}" for k in META_REQUIRED if k not in meta]
    if meta.get("schema") not in (None, META_SCHEMA):
        problems.append(f"schema is {meta.get('schema')!r}, expected {META_SCHEMA!r}")
    cv = meta.get("code_version") or {}
    if not isinstance(cv, Mapping) or not cv.get("version"):
        problems.append("code_version has no package version")
    if not meta.get("argv"):
        problems.append("argv is empty")
    cols = meta.get("columns")
    if not isinstance(cols, Mapping) or not cols:
        problems.append("columns is empty")
    else:
        for table, entries in cols.items():
            if not isinstance(entries, Mapping):  # e.g. the older flat {column: note} form
                problems.append(f"columns[{table!r}] is not a mapping of column -> definition, computed_by")
                continue
            if not entries:
                problems.append(f"columns[{table!r}] is empty")
            for name, entry in entries.items():
                if not isinstance(entry, Mapping) or not entry.get("definition") or not entry.get("computed_by"):
                    problems.append(f"columns[{table!r}][{name!r}] lacks definition or computed_by")
    return problems


def write_meta(directory_or_path: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """Write meta.json atomically (into a folder, or to a given `*.json` path)."""
    target = Path(directory_or_path)
    if target.suffix != ".json":
        target = target / "meta.json"
    text = json.dumps(_jsonable(meta), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return write_text_atomic(target, text)


def describe_columns(
    names: Iterable[str], definitions: Mapping[str, Mapping[str, str]], table: str
) -> dict[str, dict[str, str]]:
    """The `columns` entry of one table: the definition of each of its columns, in table order.

    `definitions` maps column -> column(definition, computed_by). A table column without a
    definition is a ValueError (a bug in the command, not bad input): every column written must say
    what it is. A table with no columns at all (nothing to report) is described by all definitions.
    """
    names = list(names)
    missing = [n for n in names if n not in definitions]
    if missing:
        raise ValueError(f"{table}: no column definition for {', '.join(map(str, missing))}")
    chosen = names or list(definitions)
    return {n: dict(definitions[n]) for n in chosen}


def write_parquet(frame: Any, path: str | os.PathLike) -> Path:
    """Write a DataFrame to a Parquet file atomically (for tables too large or nested for CSV)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

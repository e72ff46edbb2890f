"""Child utterances of CHILDES transcripts and their CHAT-side features, computed once and cached.

The API for the rest of childes (age model, childes-age, compare) is one call:

    from evalsuite.childes.parse_cache import load_child_utterances
    loaded = load_child_utterances(paths, cache_dir=None, progress=False, n_workers=2)
    loaded.utterances   # one row per child (CHI) utterance, see UTTERANCE_COLUMNS
    loaded.issues       # the tidy chat_issues table (corpora.chat.ISSUE_COLUMNS), one row per problem
    loaded.transcripts  # one row per transcript, read or not (TRANSCRIPT_COLUMNS)
    utts, issues, transcripts = loaded   # it is a NamedTuple

`paths`: .cha files, folders, TalkBank zips (e.g. every `childes/talkbank/*.zip`). Every transcript
is read or reported: one that cannot be read (not UTF-8, cut off without @End, a corrupt zip
member, rejected by pylangacq in both modes) is a row of `transcripts` with `read = False` and an
"error" row of `issues`; one rejected by strict mode is read non-strictly with a
"strict_parse_error" warning; each mor/word misalignment is a warning row with its `utt_index`;
transcripts without %mor ("no_mor") or without a child age ("no_child_age") are listed as "info"
rows and their `n_morphemes` / `age_months` stay empty (never guessed). A single .cha file or a
single zip given as the only path that cannot be read raises UserError instead.

Utterance columns (the corpora.chat.read_chat columns, so the frame feeds
compare.analyze_child_utterances unchanged, plus):
- `source` (the path given), `child_id` (corpus/child, a heuristic identity, see corpora.chat._child_id),
  `sha256` of the transcript file, `mor_style` of its transcript ("ud", "clan", "mixed", "none");
- `n_words`: CLAN words of the main tier (a `_` compound is one word, fillers are not words);
- `n_morphemes`: morphemes from %mor, both styles (evalsuite.childes.measures.mor_morphemes);
  empty where the utterance has no %mor or (UD style) its %mor does not align with its words;
- `n_mor_items`, `pos` (UD POS of each %mor item, corpora.mor.coarse_pos);
- `filler_only`, `unintelligible`, `fully_unintelligible`: the MLU exclusions
  (measures.mlu_eligible applies them, Brown's or CLAN's rule).

No spaCy here: the child side is read from the transcribers' %mor. How well that matches the spaCy
path used for model text is measured by benchmarks/childes_throughput.py (agreement table under
results/benchmarks/).

Cache: one Parquet file per transcript under `<cache>/childes_parse/<code key>/`, keyed by the
file's sha256 and the name it was read under; `<code key>` hashes the source of the modules that
compute the rows (CODE_FILES) and the pylangacq version, so a code change never serves stale
features. `<cache>` is `cache_dir`, else $EVALSUITE_CACHE, else ~/.cache/evalsuite.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from corpora import chat
from corpora.errors import UserError

CACHE_FORMAT = 1
_ROOT = Path(__file__).resolve().parents[2]
CODE_FILES = (
    "corpora/chat.py", "corpora/mor.py", "evalsuite/childes/measures.py", "evalsuite/childes/lexicon.py",
    "evalsuite/childes/parse_cache.py",
)
FEATURE_COLUMNS = ["source", "child_id", "sha256", "mor_style", "n_morphemes", "n_mor_items", "pos"]
UTTERANCE_COLUMNS = chat.COLUMNS + FEATURE_COLUMNS
TRANSCRIPT_COLUMNS = [
    "source", "file", "sha256", "corpus", "child", "child_id", "age_months", "mor_style", "read", "strict_ok",
    "n_utterances", "n_child_utterances", "from_cache",
]


@functools.lru_cache(maxsize=1)
def arrow_schema():
    """The fixed Arrow schema of a cache file (fixed so that thousands of files concatenate as one table)."""
    import pyarrow as pa

    s, i, f, b = pa.string(), pa.int64(), pa.float64(), pa.bool_()
    strs = pa.list_(s)
    ann = pa.list_(pa.struct([("start", i), ("end", i), ("word", s), ("target", s), ("code", s)]))
    types = {
        "file": s, "corpus": s, "child": s, "speaker": s, "age_months": f, "utt_index": i, "utterance": s,
        "utterance_clan": s, "target": s, "raw": s, "mor": strs, "mor_words": strs, "error_codes": strs,
        "annotations": ann, "postcodes": strs, "n_words": i, "unintelligible": b, "mor_aligned": b,
        "compounds": pa.list_(pa.list_(i)), "filler_only": b, "fully_unintelligible": b, "source": s,
        "child_id": s, "sha256": s, "mor_style": s, "n_morphemes": f, "n_mor_items": i, "pos": strs,
    }
    return pa.schema([(c, types[c]) for c in UTTERANCE_COLUMNS])


class ChildUtterances(NamedTuple):
    utterances: pd.DataFrame
    issues: pd.DataFrame
    transcripts: pd.DataFrame


@functools.lru_cache(maxsize=1)
def code_key() -> str:
    """Hash of the code that computes the cached rows (and the parser's version)."""
    import pylangacq

    h = hashlib.sha256(f"format={CACHE_FORMAT};pylangacq={pylangacq.__version__}".encode())
    for rel in CODE_FILES:
        h.update(rel.encode() + b"\0" + (_ROOT / rel).read_bytes())
    for tsv in sorted((_ROOT / "evalsuite/childes/data").glob("*.tsv")):
        h.update(tsv.name.encode() + b"\0" + tsv.read_bytes())
    return h.hexdigest()[:16]


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    from corpora.paths import cache_dir as default_cache

    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache()
    return base / "childes_parse" / code_key()


def _cache_path(root: Path, sha256: str, name: str) -> Path:
    tag = hashlib.sha1(name.encode()).hexdigest()[:10]
    return root / sha256[:2] / f"{sha256}-{tag}.parquet"


# ----------------------------------------------------------------------------- per transcript (worker)


def transcript_table(tr: chat.Transcript):
    """The utterance rows of one parsed transcript as an Arrow table of `arrow_schema()`."""
    import pyarrow as pa

    if not tr.rows:
        return arrow_schema().empty_table()
    return pa.Table.from_pandas(transcript_rows(tr), schema=arrow_schema(), preserve_index=False)


def transcript_rows(tr: chat.Transcript) -> pd.DataFrame:
    """The utterance table of one parsed transcript, with the CHAT-side features."""
    from corpora.mor import coarse_pos
    from evalsuite.childes.measures import mor_morphemes

    frame = pd.DataFrame(tr.rows, columns=chat.COLUMNS)
    frame["source"] = tr.source
    frame["child_id"] = tr.child_id
    frame["sha256"] = tr.sha256
    frame["mor_style"] = tr.mor_style
    ud = tr.mor_style in ("ud", "mixed")
    counts = []
    for items, words, aligned in zip(frame["mor"], frame["mor_words"], frame["mor_aligned"], strict=True):
        # UD style needs the surface word to tell walked (2) from took (1): unaligned -> no count
        usable = bool(items) and (aligned or not ud)
        counts.append(float(mor_morphemes(items, words, tr.mor_style)) if usable else float("nan"))
    frame["n_morphemes"] = pd.Series(counts, dtype="float64")
    frame["n_mor_items"] = [len(m) for m in frame["mor"]]
    frame["pos"] = [[coarse_pos(i) for i in m] for m in frame["mor"]]
    frame["age_months"] = frame["age_months"].astype("float64")
    return frame[UTTERANCE_COLUMNS]


def _transcript_record(tr: chat.Transcript, n_child: int, from_cache: bool) -> dict:
    return {"source": tr.source, "file": tr.file, "sha256": tr.sha256, "corpus": tr.corpus, "child": tr.child,
            "child_id": tr.child_id, "age_months": tr.age_months, "mor_style": tr.mor_style,
            "read": tr.error is None, "strict_ok": tr.strict_ok, "n_utterances": tr.n_utterances,
            "n_child_utterances": n_child, "from_cache": from_cache}


def _write_cache(path: Path, table, record: dict | list[dict], issues: list[dict]) -> None:
    import pyarrow.parquet as pq

    meta = {}
    meta[b"evalsuite_transcript"] = json.dumps(record, default=str).encode()
    meta[b"evalsuite_issues"] = json.dumps(issues, default=str).encode()
    table = table.replace_schema_metadata(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file


def _read_cache(path: Path) -> tuple[object, dict | list[dict], list[dict]] | None:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError):
        return None  # absent or unreadable (e.g. a crash mid-write elsewhere): recompute
    meta = table.schema.metadata or {}
    if b"evalsuite_transcript" not in meta or table.schema.remove_metadata() != arrow_schema():
        return None
    record = json.loads(meta[b"evalsuite_transcript"])
    issues = json.loads(meta[b"evalsuite_issues"])
    return table.replace_schema_metadata(None), record, issues


def _work(job: tuple[str, bytes | None, str, str, str, str]) -> tuple[object, dict, list[dict]]:
    """Parse one transcript and compute its rows (runs in a worker process); writes its cache file."""
    name, data, error, source, origin, cache_file = job
    if data is None:
        tr = chat.Transcript(file=name, source=source)
        tr.issue("corrupt_member", error, "error")
        return transcript_table(tr), _transcript_record(tr, 0, False), tr.issues
    tr = chat.parse_transcript(name, data, source=source, origin=origin)
    table = transcript_table(tr)
    record = _transcript_record(tr, table.num_rows, False)
    if cache_file:
        _write_cache(Path(cache_file), table, record, tr.issues)
    return table, record, tr.issues


# ----------------------------------------------------------------------------- the entry point


class _Pool:
    """A worker pool started on the first cache miss (a warm run starts no process)."""

    def __init__(self, n_workers: int, progress: bool):
        self.n_workers, self.progress, self.pool, self.bar = n_workers, progress, None, None

    def map(self, jobs: list[tuple]) -> list[tuple]:
        if not jobs:
            return []
        if self.progress and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc="CHAT transcripts (uncached)", unit="file")
        if self.n_workers == 1:
            out = []
            for job in jobs:
                out.append(_work(job))
                if self.bar is not None:
                    self.bar.update()
            return out
        if self.pool is None:
            import multiprocessing as mp

            # fork would copy a parent that may hold spaCy/torch threads; spawn is slower to start but
            # safe (scripts that call this need the `if __name__ == "__main__":` guard)
            self.pool = mp.get_context("spawn").Pool(self.n_workers)
        out = []
        for result in self.pool.imap_unordered(_work, jobs, chunksize=2):
            out.append(result)
            if self.bar is not None:
                self.bar.update()
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()
        if self.bar is not None:
            self.bar.close()


def _source_error(given: Path, err: UserError) -> dict:
    return {"source": str(given), "file": "", "corpus": given.stem, "utt_index": None, "speaker": "",
            "severity": "error", "kind": "unreadable_source", "message": str(err)}


def _load_source(given: Path, root: Path | None, pool: _Pool) -> tuple[object, list[dict], list[dict]]:
    """(rows table, transcript records, issues) of one path: from its shard, the per-transcript cache
    files, or by parsing. The shard (one Parquet per source and member list) keeps a warm run to one
    file read per corpus instead of one per transcript; it is keyed by every member's name and sha256."""
    import pyarrow as pa

    pointer = _zip_pointer(given, root)
    if pointer is not None and pointer.is_file():
        # the zip's own bytes are unchanged since its shard was written: read the shard without decompressing
        # and hashing every member (a warm run over the 51 shared zips: 0.3 s of hashing instead of 5.5 s)
        cached = _read_cache(root / "sources" / pointer.read_text(encoding="utf-8").strip())
        if cached is not None:
            table, records, issues = cached
            for r in records:
                r["from_cache"] = True
            return table, records, issues
    members = list(chat.iter_transcripts(given))
    shas = [hashlib.sha256(data).hexdigest() if data is not None else "" for _, data, _ in members]
    shard = None
    if root is not None:
        listing = "\n".join(f"{n}\t{h}" for (n, _, _), h in zip(members, shas, strict=True))
        key = hashlib.sha256(f"{given.resolve()}\n{listing}".encode()).hexdigest()
        shard = root / "sources" / f"{key}.parquet"
        cached = _read_cache(shard) if shard.exists() else None
        if cached is not None:
            _write_pointer(pointer, shard)
            table, records, issues = cached
            for r in records:
                r["from_cache"] = True
            return table, records, issues
    parts, jobs = [], []
    for (name, data, error), sha in zip(members, shas, strict=True):
        origin = str(given) if given.suffix.lower() == ".cha" else str(given / name) if given.is_dir() else name
        cache_file = ""
        if root is not None and data is not None:
            path = _cache_path(root, sha, origin)
            cached = _read_cache(path) if path.exists() else None
            if cached is not None:
                table, record, file_issues = cached
                # the same bytes may have been read under another source path: report the path given now
                record.update(source=str(given), from_cache=True)
                parts.append((_set_source(table, str(given)), record, [{**i, "source": str(given)} for i in file_issues]))
                continue
            cache_file = str(path)
        jobs.append((name, data, error, str(given), origin, cache_file))
    parts += pool.map(jobs)
    parts.sort(key=lambda part: part[1]["file"])
    table = pa.concat_tables([t for t, _, _ in parts]) if parts else arrow_schema().empty_table()
    records = [r for _, r, _ in parts]
    issues = [i for _, _, file_issues in parts for i in file_issues]
    if shard is not None:
        _write_cache(shard, table, records, issues)
        _write_pointer(pointer, shard)
    return table, records, issues


def _zip_pointer(given: Path, root: Path | None) -> Path | None:
    """Where a zip source's pointer to its shard lives: a small file keyed by the zip's path and the sha256 of
    its bytes (which determine every member, so an unchanged zip needs no member read). None for folders
    and single files (their members are read and hashed as before), and without a cache."""
    if root is None or given.suffix.lower() != ".zip" or not given.is_file():
        return None
    with open(given, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    key = hashlib.sha256(f"{given.resolve()}\n{digest}".encode()).hexdigest()
    return root / "sources" / f"zip-{key}.txt"


def _write_pointer(pointer: Path | None, shard: Path) -> None:
    if pointer is None:
        return
    pointer.parent.mkdir(parents=True, exist_ok=True)
    tmp = pointer.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(shard.name, encoding="utf-8")
    os.replace(tmp, pointer)  # atomic: a concurrent reader never sees half a name


def load_child_utterances(
    paths: Sequence[str | os.PathLike],
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    n_workers: int = 2,
    use_cache: bool = True,
) -> ChildUtterances:
    """Child utterances, issues and transcript list of CHAT sources (see the module docstring)."""
    import pyarrow as pa

    paths = list(paths)
    if not paths:
        raise UserError("no CHILDES data given")
    if n_workers < 1:
        raise UserError("n_workers must be at least 1")
    root = cache_root(cache_dir) if use_cache else None
    tables, records, issues = [], [], []
    pool = _Pool(n_workers, progress)
    try:
        for p in paths:
            given = Path(p).expanduser()
            try:
                table, recs, iss = _load_source(given, root, pool)
            except UserError as err:
                if len(paths) == 1:
                    raise
                issues.append(_source_error(given, err))  # one bad corpus among several: a row, not the end
                continue
            tables.append(table)
            records += recs
            issues += iss
    finally:
        pool.close()
    if len(paths) == 1 and Path(paths[0]).suffix.lower() == ".cha" and records and not records[0]["read"]:
        message = next(i["message"] for i in issues if i["severity"] == "error")
        raise UserError(f"cannot read CHAT file {paths[0]}: {message}")
    tables = [t for t in tables if t.num_rows]
    utterances = pa.concat_tables(tables).to_pandas() if tables else arrow_schema().empty_table().to_pandas()
    issue_table = chat.issues_frame(issues)
    transcripts = pd.DataFrame(records, columns=TRANSCRIPT_COLUMNS)
    if not len(transcripts) or not transcripts["read"].any():
        errors = issue_table[issue_table["severity"] == "error"]
        reason = f" ({errors['file'].iloc[0]}: {errors['message'].iloc[0]})" if len(errors) else ""
        raise UserError(f"no CHAT transcript could be read from the given paths{reason}")
    return ChildUtterances(utterances, issue_table, transcripts)


def _set_source(table, source: str):
    import pyarrow as pa

    index = table.schema.get_field_index("source")
    return table.set_column(index, "source", pa.array([source] * table.num_rows, pa.string()))


def write_chat_issues(issues: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the tidy chat_issues.csv (atomic)."""
    from evalsuite.results import write_table

    return write_table(issues, path)[0]

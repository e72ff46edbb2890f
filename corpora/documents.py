"""Story text as documents, and a leak-free train/validation split.

A corpus is a `.txt` file whose documents are separated by `<|endoftext|>` (TinyStories' format),
a `.jsonl` file (one JSON object with a "text" field, or one JSON string, per line), or a
directory of such files (read in sorted path order, so the document order is reproducible).

`iter_documents` streams: it holds one read buffer and one document at a time, so the ~2 GB
TinyStories train file is never in memory at once. `read_documents` is the list version.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from corpora.errors import UserError

EOT = "<|endoftext|>"
TEXT_SUFFIXES = (".txt", ".jsonl")
READ_BYTES = 1 << 20


def corpus_files(path: str | os.PathLike) -> list[Path]:
    """The text files that make up a corpus path, in the order their documents are read."""
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"file not found: {root}")
    if root.is_file():
        if root.suffix.lower() not in TEXT_SUFFIXES:
            raise UserError(f"unsupported corpus file {root}: expected .txt or .jsonl")
        return [root]
    files = sorted(
        (p for p in root.rglob("*")
         if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
         and not any(part.startswith(".") for part in p.relative_to(root).parts)),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        if any(p.suffix.lower() == ".cha" for p in root.rglob("*.cha")):
            raise UserError(f"{root} holds CHAT (.cha) transcripts, not story text; read it with corpora.chat")
        raise UserError(f"empty corpus: no .txt or .jsonl files in {root}")
    return files


def iter_documents(path: str | os.PathLike) -> Iterator[str]:
    """Yield the documents of a file or directory one at a time (stripped, empties dropped).

    Raises UserError for a missing path, an unsupported file, non-UTF-8 bytes (with file and byte
    offset), a bad JSONL line (with line number), and a corpus without any document.
    """
    files = corpus_files(path)
    count = 0
    for file in files:
        reader = _iter_jsonl if file.suffix.lower() == ".jsonl" else _iter_txt
        for doc in reader(file):
            count += 1
            yield doc
    if count == 0:
        where = files[0] if len(files) == 1 else Path(path)
        raise UserError(f"empty corpus: {where} has no documents")


def read_documents(path: str | os.PathLike) -> list[str]:
    """All documents of a `.txt`/`.jsonl` file or a directory of them, in a deterministic order."""
    return list(iter_documents(path))


def _iter_txt(file: Path) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    buffer = ""
    consumed = 0  # bytes handed to the decoder before the current block
    with file.open("rb") as handle:
        while True:
            block = handle.read(READ_BYTES)
            final = not block
            try:
                pending = len(decoder.getstate()[0])
                text = decoder.decode(block, final=final)
            except UnicodeDecodeError as err:
                offset = consumed - pending + err.start
                raise UserError(f"{file} is not UTF-8: invalid byte 0x{err.object[err.start]:02x} "
                                f"at byte offset {offset}") from None
            consumed += len(block)
            if consumed == len(block) and text.startswith("\ufeff"):
                text = text[1:]  # a UTF-8 byte-order mark is not part of the first story
            buffer += text
            pieces = buffer.split(EOT)
            buffer = pieces.pop()  # may end in a partial separator: keep it for the next block
            for piece in pieces:
                doc = piece.strip()
                if doc:
                    yield doc
            if final:
                break
    doc = buffer.strip()
    if doc:
        yield doc


def _iter_jsonl(file: Path) -> Iterator[str]:
    offset = 0
    with file.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{file} is not UTF-8: invalid byte 0x{raw[err.start]:02x} at byte offset "
                                f"{offset + err.start} (line {number})") from None
            offset += len(raw)
            if number == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{file} line {number}: not valid JSON ({err.msg})") from None
            if isinstance(value, dict):
                if not isinstance(value.get("text"), str):
                    raise UserError(f"{file} line {number}: JSON object without a string \"text\" field")
                value = value["text"]
            elif not isinstance(value, str):
                raise UserError(f"{file} line {number}: expected an object with \"text\" or a JSON string, "
                                f"got {type(value).__name__}")
            doc = value.strip()
            if doc:
                yield doc


# --- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusStats:
    """Size of a story corpus. Characters are of the stripped documents; words split on whitespace."""

    path: Path
    n_files: int
    n_documents: int
    n_characters: int
    n_words: int

    @property
    def mean_characters(self) -> float:
        return self.n_characters / self.n_documents

    @property
    def mean_words(self) -> float:
        return self.n_words / self.n_documents


def corpus_stats(path: str | os.PathLike) -> CorpusStats:
    """Count documents, characters and words of a corpus by streaming it once."""
    n_docs = n_chars = n_words = 0
    for doc in iter_documents(path):
        n_docs += 1
        n_chars += len(doc)
        n_words += len(doc.split())
    return CorpusStats(Path(path), len(corpus_files(path)), n_docs, n_chars, n_words)


# --- split -----------------------------------------------------------------------------------


def _rank_key(text: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\x00".encode() + text.encode("utf-8")).digest()


def split_documents(docs: Iterable[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split documents into (train, val), deterministically from `seed`, without leakage.

    Each distinct text gets a seeded sha256 rank; the `round(val_fraction * n_distinct)` lowest-ranked
    distinct texts go to validation. So a document is never split, identical texts always land on the
    same side (no text is in both), the result depends only on the seed and the set of texts (not on
    their order or on Python's hash randomisation), and small corpora get the exact fraction.
    Both sides keep the input order. The fraction is of distinct texts: duplicates follow their text.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0.0 < float(val_fraction) < 1.0:
        raise UserError(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"seed must be an integer, got {seed!r}")
    docs = list(docs)
    distinct = sorted(set(docs), key=lambda text: _rank_key(text, seed))
    n_val = round(val_fraction * len(distinct))
    if n_val == 0 or n_val == len(distinct):
        side = "validation" if n_val == 0 else "training"
        n = len(distinct)
        if n < 2:
            fix = "use at least 2 documents (one for each side)"
        else:  # the nearest fraction that puts one document on the empty side
            fraction = math.ceil(100 / n) / 100 if n_val == 0 else math.floor(100 * (n - 1) / n) / 100
            fix = f"set val_fraction={fraction:g} (train: --set train.val_fraction={fraction:g}) or use more documents"
        raise UserError(f"a split with val_fraction={val_fraction} of {n} distinct documents "
                        f"leaves the {side} side empty; {fix}")
    val_texts = set(distinct[:n_val])
    train = [doc for doc in docs if doc not in val_texts]
    val = [doc for doc in docs if doc in val_texts]
    return train, val

"""Tokenized corpora: one flat memory-mapped array of token ids per corpus, written once.

Layout (nanoGPT style): `path` holds the ids of every document, each followed by the tokenizer's
`eot_id`, as uint16 when the vocabulary fits (< 65536) and uint32 otherwise. `path.json` (the file
name with ".json" appended) is the sidecar that says what the array is: which tokenizer made it
(`tokenizer_identity`), how many documents, tokens, characters and UTF-8 bytes of raw text went in,
and where the text came from.

The sidecar is the commit marker. The array is written to a temporary file and renamed into place,
then the sidecar is written the same way; an old sidecar is removed first. A crash therefore leaves
either no sidecar (open_tokenized refuses) or a complete array with its matching sidecar.

`n_chars` is what turns a loss in nats per token into bits per character of raw text
(`bits_per_char`), the unit in which models with different tokenizers can be compared.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

from corpora.errors import UserError
from corpora.tokenizers import Tokenizer

FORMAT = "evalsuite-tokenized"
FORMAT_VERSION = 1
_DTYPES = {"uint16": 2, "uint32": 4}


@dataclass(frozen=True)
class TokenizedMeta:
    """The sidecar of a tokenized array; every field is required when reading one back."""

    tokenizer_identity: str
    tokenizer_spec: str
    tokenizer_name: str
    vocab_size: int
    eot_id: int
    dtype: str
    n_documents: int
    n_tokens: int  # ids in the array, the eot after each document included
    n_chars: int  # characters of the raw document text (separators not counted)
    n_bytes: int  # UTF-8 bytes of the raw document text
    created: str
    source: Any  # where the documents came from (a fingerprint dict) or None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def itemsize(self) -> int:
        return _DTYPES[self.dtype]

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "sidecar") -> TokenizedMeta:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(n for n in names - set(data) if n not in ("format", "format_version"))
        if unknown or missing:
            raise UserError(f"{where}: unknown keys {unknown} / missing keys {missing}")
        meta = cls(**data)
        if meta.format != FORMAT or meta.format_version != FORMAT_VERSION:
            raise UserError(f"{where}: not a {FORMAT} v{FORMAT_VERSION} sidecar")
        if meta.dtype not in _DTYPES:
            raise UserError(f"{where}: dtype must be one of {sorted(_DTYPES)}, got {meta.dtype!r}")
        for name in ("vocab_size", "n_documents", "n_tokens", "n_chars", "n_bytes", "eot_id"):
            value = getattr(meta, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UserError(f"{where}: {name} must be a non-negative integer, got {value!r}")
        return meta


def sidecar_path(path: str | os.PathLike) -> Path:
    """`train.bin` -> `train.bin.json`."""
    return Path(f"{os.fspath(path)}.json")


def dtype_for(vocab_size: int) -> str:
    return "uint16" if vocab_size < 65536 else "uint32"


def write_tokenized(
    docs: Iterable[str],
    tokenizer: Tokenizer,
    path: str | os.PathLike,
    progress: bool = False,
    *,
    source: Any = None,
    batch_size: int = 512,
) -> TokenizedMeta:
    """Tokenize `docs` (any iterable; streamed in batches) into `path` + `path.json`, atomically."""
    import numpy as np
    from tqdm.auto import tqdm

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    dtype = dtype_for(tokenizer.vocab_size)
    np_dtype = np.dtype(dtype)
    eot = tokenizer.eot_id
    n_documents = n_tokens = n_chars = n_bytes = 0
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    total = len(docs) if hasattr(docs, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(total=total, unit="doc", desc=f"tokenize {out.name}", disable=not progress)
    try:
        with open(tmp, "wb") as handle:
            for batch in _batches(docs, batch_size):
                encoded = tokenizer.encode_batch(batch)
                flat: list[int] = []
                for doc, ids in zip(batch, encoded, strict=True):
                    flat.extend(ids)
                    flat.append(eot)
                    n_chars += len(doc)
                    n_bytes += len(doc.encode("utf-8"))
                array = np.asarray(flat, dtype=np.int64)
                if array.size and (array.min() < 0 or array.max() >= tokenizer.vocab_size):
                    raise ValueError(
                        f"{tokenizer.name} produced ids outside [0, {tokenizer.vocab_size}): "
                        f"{int(array.min())}..{int(array.max())}"
                    )
                array.astype(np_dtype).tofile(handle)
                n_documents += len(batch)
                n_tokens += array.size
                bar.update(len(batch))
            handle.flush()
            os.fsync(handle.fileno())
        if n_documents == 0:
            raise UserError(f"no documents to tokenize into {out}")
        meta = TokenizedMeta(
            tokenizer_identity=tokenizer.identity,
            tokenizer_spec=str(tokenizer.spec),
            tokenizer_name=tokenizer.name,
            vocab_size=tokenizer.vocab_size,
            eot_id=eot,
            dtype=dtype,
            n_documents=n_documents,
            n_tokens=n_tokens,
            n_chars=n_chars,
            n_bytes=n_bytes,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            source=source,
        )
        side = sidecar_path(out)
        side.unlink(missing_ok=True)  # the old sidecar must not vouch for the new array
        os.replace(tmp, out)
        side_tmp = side.with_name(f".{side.name}.tmp-{os.getpid()}")
        side_tmp.write_text(json.dumps(asdict(meta), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(side_tmp, side)
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)
    return meta


def _batches(docs: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(docs)
    while batch := list(islice(iterator, size)):
        for doc in batch:
            if not isinstance(doc, str):
                raise TypeError(f"documents must be str, got {type(doc).__name__}")
        yield batch


def read_meta(path: str | os.PathLike) -> TokenizedMeta:
    """The sidecar of `path`, validated against the array's size on disk."""
    out = Path(path)
    side = sidecar_path(out)
    if not out.is_file():
        raise UserError(f"tokenized array not found: {out}")
    if not side.is_file():
        raise UserError(f"{out} has no sidecar {side.name}: it is incomplete or not a tokenized corpus")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {side}: {err}") from err
    if not isinstance(data, dict):
        raise UserError(f"{side}: expected a JSON object")
    meta = TokenizedMeta.from_dict(data, where=str(side))
    expected = meta.n_tokens * meta.itemsize
    actual = out.stat().st_size
    if actual != expected:
        raise UserError(
            f"{out} has {actual} bytes but its sidecar promises {meta.n_tokens} {meta.dtype} tokens "
            f"({expected} bytes): the array and sidecar do not match"
        )
    return meta


def open_tokenized(path: str | os.PathLike) -> tuple[Any, TokenizedMeta]:
    """A read-only `np.memmap` of the ids and its validated sidecar."""
    import numpy as np

    meta = read_meta(path)
    if meta.n_tokens == 0:
        return np.zeros(0, dtype=meta.dtype), meta
    return np.memmap(path, dtype=meta.dtype, mode="r", shape=(meta.n_tokens,)), meta


def bits_per_char(loss_nats_per_token: float, meta: TokenizedMeta) -> float:
    """Convert a mean loss (nats per token over this array) into bits per character of raw text.

    bpc = loss * n_tokens / (n_chars * ln 2). The eot tokens are in `n_tokens` (the model pays for
    predicting them) while only text characters are in `n_chars`, so the cost of ending a document
    is charged to its text. When the loss was averaged over a sample of the array, this assumes the
    sample has the array's tokens-per-character ratio.
    """
    if meta.n_chars <= 0:
        raise UserError("cannot compute bits per character: the tokenized text has no characters")
    return float(loss_nats_per_token) * meta.n_tokens / (meta.n_chars * math.log(2))


# ----------------------------------------------------------------------------------------------
# cache: tokenize once, reuse while the tokenizer and the source are unchanged


def source_fingerprint(docs_path: str | os.PathLike) -> dict:
    """Path, size and modification time of a corpus file, or of each corpus file under a directory."""
    from corpora.documents import corpus_files

    root = Path(docs_path).expanduser().resolve()
    files = [f.resolve() for f in corpus_files(root)]  # the files read_documents would read
    entries = []
    for file in files:
        stat = file.stat()
        name = file.name if file == root else file.relative_to(root).as_posix()
        entries.append({"name": name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return {"path": str(root), "files": entries}


def cached_tokenized(
    path: str | os.PathLike,
    tokenizer: Tokenizer,
    source: dict,
    docs_factory: Callable[[], Iterable[str]],
    *,
    progress: bool = False,
) -> Path:
    """Reuse `path` if its sidecar names this tokenizer and this `source`; else (re)write it from
    `docs_factory()`. `source` must describe everything the documents depend on (a fingerprint, plus
    split fraction and seed when the documents are one side of a split)."""
    out = Path(path)
    if is_reusable(out, tokenizer, source):
        return out
    write_tokenized(docs_factory(), tokenizer, out, progress, source=source)
    return out


def is_reusable(path: str | os.PathLike, tokenizer: Tokenizer, source: dict) -> bool:
    """True when `path` is a complete array made by this tokenizer from this source."""
    try:
        meta = read_meta(path)
    except UserError:
        return False
    normalized = json.loads(json.dumps(source))  # compare as the sidecar stores it
    return meta.tokenizer_identity == tokenizer.identity and meta.source == normalized


def tokenize_cached(
    docs_path: str | os.PathLike,
    tokenizer: Tokenizer,
    out_dir: str | os.PathLike,
    *,
    progress: bool = False,
) -> Path:
    """Tokenize the corpus at `docs_path` into `out_dir` once; later calls return the same array
    while the tokenizer identity and the source files (path, size, mtime) are unchanged."""
    from corpora.documents import iter_documents

    source = source_fingerprint(docs_path)
    path_tag = hashlib.sha256(source["path"].encode("utf-8")).hexdigest()[:8]
    identity_tag = "".join(c if c.isalnum() or c in "-_." else "-" for c in tokenizer.identity)
    stem = Path(source["path"]).stem or "corpus"
    out = Path(out_dir) / f"{stem}-{path_tag}-{identity_tag}.bin"
    return cached_tokenized(out, tokenizer, source, lambda: iter_documents(docs_path), progress=progress)

"""Tokenizers behind one interface: character-level, GPT-2 byte-level BPE, and a trained top-K BPE.

Why one interface: loss, bits per character, article counts and the dim-probe alignment all depend
on the tokenizer, so every consumer (tokenized memmaps, trainer, generator, probes, report) talks to
the same small surface: `name`, `identity`, `vocab_size`, `eot_id`, `encode`, `encode_batch`,
`decode`, `encode_with_offsets`, `save`.

`identity` is a hash of everything that decides the ids (vocabulary, merges, special tokens,
pre-tokenizer): two tokenizers with the same identity give the same ids for every text. Caches of
tokenized corpora are keyed by it, so a changed vocabulary can never reuse stale token arrays.

Byte-level BPE (GPT-2 and trained ones) runs on HF `tokenizers`; nothing here re-implements BPE.
A saved tokenizer is a directory (`tokenizer_meta.json` + `tokenizer.json` or `char_vocab.json`)
that the trainer copies into each checkpoint's `tokenizer/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from corpora.errors import UserError
from corpora.paths import find_data_dir

EOT = "<|endoftext|>"
META_FILE = "tokenizer_meta.json"
HF_FILE = "tokenizer.json"
CHAR_FILE = "char_vocab.json"
FORMAT_VERSION = 1
DEFAULT_BPE_VOCAB = 10_000
ARTICLES = ("the", "a", "an")

Offsets = list[tuple[int, int]]


def _sha12(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Tokenizer(ABC):
    """What every tokenizer offers. Offsets are character offsets into the input string."""

    name: str
    spec: str  # how it was asked for: "char", "gpt2", a directory path, "bpe"
    is_character_level: bool = False
    unk_id: int | None = None  # None: every text is representable (byte-level BPE)

    @property
    @abstractmethod
    def identity(self) -> str:
        """A string that changes whenever the vocabulary (or anything else deciding ids) changes."""

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def eot_id(self) -> int: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts; byte-level BPE overrides this with the parallel HF batch encoder."""
        return [self.encode(t) for t in texts]

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    @abstractmethod
    def encode_with_offsets(self, text: str) -> tuple[list[int], Offsets]:
        """Ids and (start, end) character offsets into `text`, one pair per id.

        Byte-level BPE can split one non-ASCII character over several tokens; those tokens share
        (overlap on) that character's span. For ASCII text the spans tile the text exactly.
        """

    @abstractmethod
    def save(self, directory: str | os.PathLike) -> Path: ...

    def encode_batch_with_offsets(self, texts: Sequence[str]) -> list[tuple[list[int], Offsets]]:
        """`encode_with_offsets` for many texts (parallel for byte-level BPE)."""
        return [self.encode_with_offsets(t) for t in texts]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size}, identity={self.identity!r})"


# ----------------------------------------------------------------------------------------------
# character level


class CharTokenizer(Tokenizer):
    """One id per character. Id 0 is the unknown token, id 1 is `<|endoftext|>`, then the characters
    of the corpus it was built from, in code-point order. Unknown characters decode to U+FFFD, so a
    decoded text keeps the length of the original."""

    is_character_level = True
    UNK_TEXT = "\ufffd"

    def __init__(self, chars: Iterable[str], *, spec: str = "char", corpus: dict | None = None):
        import numpy as np

        unique = sorted(set(chars) - {""})
        bad = [c for c in unique if len(c) != 1]
        if bad:
            raise UserError(f"char vocabulary entries must be single characters, got {bad[:3]!r}")
        self.chars = unique
        self.name = "char"
        self.spec = spec
        self.corpus = corpus
        self.unk_id = 0
        self._eot_id = 1
        self._id_to_text = [self.UNK_TEXT, EOT, *unique]
        codepoints = np.array([ord(c) for c in unique], dtype=np.int64)
        self._codepoints = codepoints  # sorted, because `unique` is sorted by code point
        self._ids = np.arange(2, 2 + len(unique), dtype=np.int64)
        self._identity = f"char-{self.vocab_size}:{_sha12({'kind': 'char', 'chars': unique, 'eot': EOT})}"

    @classmethod
    def from_documents(cls, docs: Iterable[str], *, spec: str = "char") -> CharTokenizer:
        chars: set[str] = set()
        hasher = _CorpusHasher()
        for doc in hasher.wrap(docs):
            chars.update(doc.replace(EOT, ""))
        if hasher.n_documents == 0:
            raise UserError("cannot build a char vocabulary from an empty corpus")
        return cls(chars, spec=spec, corpus=hasher.summary())

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_text)

    @property
    def eot_id(self) -> int:
        return self._eot_id

    def _encode_plain(self, text: str) -> list[int]:
        import numpy as np

        if not text:
            return []
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        if len(self._codepoints) == 0:
            return [self.unk_id] * len(cps)
        pos = np.searchsorted(self._codepoints, cps)
        pos_clipped = np.minimum(pos, len(self._codepoints) - 1)
        known = self._codepoints[pos_clipped] == cps
        ids = np.where(known, self._ids[pos_clipped], self.unk_id)
        return ids.tolist()

    def encode(self, text: str) -> list[int]:
        return self.encode_with_offsets(text)[0]

    def encode_with_offsets(self, text: str) -> tuple[list[int], Offsets]:
        ids: list[int] = []
        offsets: Offsets = []
        start = 0
        # a literal <|endoftext|> in the text is the end-of-text token, as in GPT-2
        for part in re.split(f"({re.escape(EOT)})", text):
            if part == EOT:
                ids.append(self.eot_id)
                offsets.append((start, start + len(EOT)))
            elif part:
                ids.extend(self._encode_plain(part))
                offsets.extend((i, i + 1) for i in range(start, start + len(part)))
            start += len(part)
        return ids, offsets

    def decode(self, ids: Sequence[int]) -> str:
        table = self._id_to_text
        try:
            return "".join(table[int(i)] for i in ids)
        except IndexError:
            bad = [int(i) for i in ids if not 0 <= int(i) < len(table)][:3]
            raise ValueError(f"token ids out of range for {self.name} (vocab {len(table)}): {bad}") from None

    def save(self, directory: str | os.PathLike) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        payload = {"unk_id": 0, "eot_id": 1, "eot_token": EOT, "chars": self.chars}
        _write_json_atomic(out / CHAR_FILE, payload)
        _write_meta(out, self, kind="char", extra={"corpus": self.corpus})
        return out


# ----------------------------------------------------------------------------------------------
# byte-level BPE (GPT-2 and trained) on HF tokenizers


class ByteBPETokenizer(Tokenizer):
    """Byte-level BPE: GPT-2's regex pre-tokenizer without an added prefix space, the byte-level
    decoder, and `<|endoftext|>` as a special token that a literal occurrence in text maps to."""

    def __init__(self, hf_tokenizer: Any, *, name: str, spec: str, extra_meta: dict | None = None):
        self._tok = hf_tokenizer
        self.name = name
        self.spec = spec
        self.extra_meta = dict(extra_meta or {})
        eot = hf_tokenizer.token_to_id(EOT)
        if eot is None:
            raise UserError(f"tokenizer {name!r} has no {EOT} token")
        self._eot_id = int(eot)
        self._identity: str | None = None

    @property
    def hf(self) -> Any:
        """The underlying `tokenizers.Tokenizer` (for code that wants its full API)."""
        return self._tok

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = f"byte-bpe-{self.vocab_size}:{_sha12(_canonical_hf(self._tok))}"
        return self._identity

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def eot_id(self) -> int:
        return self._eot_id

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [enc.ids for enc in self._tok.encode_batch(list(texts))]

    def encode_with_offsets(self, text: str) -> tuple[list[int], Offsets]:
        enc = self._tok.encode(text)  # the Python binding reports character offsets (a new list of int pairs)
        return list(enc.ids), enc.offsets

    def encode_batch_with_offsets(self, texts: Sequence[str]) -> list[tuple[list[int], Offsets]]:
        return [
            (list(enc.ids), enc.offsets)
            for enc in self._tok.encode_batch(list(texts))
        ]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, directory: str | os.PathLike) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{HF_FILE}.tmp-{os.getpid()}"
        self._tok.save(str(tmp))
        os.replace(tmp, out / HF_FILE)
        _write_meta(out, self, kind="byte-bpe", extra=self.extra_meta)
        return out


def _canonical_hf(hf_tokenizer: Any) -> dict:
    """The parts of a tokenizer.json that decide ids, in a form stable across library versions."""
    data = json.loads(hf_tokenizer.to_str())
    model = dict(data["model"])
    merges = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model.pop("merges", [])]
    vocab = model.pop("vocab", {})
    added = sorted(
        (int(t["id"]), t["content"], bool(t.get("special", False))) for t in data.get("added_tokens", [])
    )
    return {
        "model": model,
        "vocab": vocab,
        "merges": merges,
        "added": added,
        "normalizer": data.get("normalizer"),
        "pre_tokenizer": data.get("pre_tokenizer"),
        "decoder": data.get("decoder"),
        "post_processor": data.get("post_processor"),
    }


def _byte_level_pipeline(hf_tokenizer: Any) -> Any:
    from tokenizers import AddedToken, decoders, pre_tokenizers

    # add_prefix_space=False: GPT-2 encodes "Hello" at the start of a text without a space token.
    hf_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf_tokenizer.decoder = decoders.ByteLevel()
    # No post-processor: offsets keep the leading space of " the", so text[start:end] == decode([id]).
    hf_tokenizer.add_special_tokens([AddedToken(EOT, special=True)])
    return hf_tokenizer


def gpt2_from_files(directory: str | os.PathLike, *, spec: str | None = None) -> ByteBPETokenizer:
    """GPT-2 byte-level BPE from a directory holding `vocab.json` and `merges.txt`."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    folder = Path(directory)
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    missing = [p.name for p in (vocab, merges) if not p.is_file()]
    if missing:
        raise UserError(f"GPT-2 tokenizer files missing in {folder}: {', '.join(missing)}")
    try:
        model = models.BPE.from_file(str(vocab), str(merges))
    except Exception as err:  # the Rust loader's messages name the bad line; keep them
        raise UserError(f"cannot read BPE files in {folder}: {err}") from err
    hf = _byte_level_pipeline(HFTokenizer(model))
    return ByteBPETokenizer(
        hf, name="gpt2", spec=spec or str(folder), extra_meta={"source_files": str(folder.resolve())}
    )


def train_bpe(
    docs: Iterable[str],
    vocab_size: int = DEFAULT_BPE_VOCAB,
    *,
    min_frequency: int = 2,
    progress: bool = False,
) -> ByteBPETokenizer:
    """Train a byte-level BPE with at most `vocab_size` tokens (256 bytes + `<|endoftext|>` + merges).

    Each document is its own training text, so no merge spans a document boundary. The trained
    vocabulary can be smaller than asked for when the corpus runs out of pairs seen `min_frequency`
    times; the meta records both numbers.
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    if vocab_size < 258:
        raise UserError(f"BPE vocab size must be at least 258 (256 bytes + {EOT} + 1 merge), got {vocab_size}")
    hf = _byte_level_pipeline(HFTokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    hasher = _CorpusHasher()
    hf.train_from_iterator(hasher.wrap(docs), trainer=trainer)
    if hasher.n_documents == 0 or hasher.n_chars == 0:
        raise UserError("cannot train a BPE tokenizer on an empty corpus")
    actual = hf.get_vocab_size(with_added_tokens=True)
    extra = {
        "corpus": hasher.summary(),
        "trainer": {"requested_vocab_size": vocab_size, "min_frequency": min_frequency},
    }
    return ByteBPETokenizer(hf, name=f"bpe-{actual}", spec="bpe", extra_meta=extra)


def train_char(docs: Iterable[str]) -> CharTokenizer:
    """A character tokenizer whose vocabulary is every character of `docs`."""
    return CharTokenizer.from_documents(docs)


# ----------------------------------------------------------------------------------------------
# loading and saving


def load_tokenizer(
    spec: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    docs: Iterable[str] | None = None,
) -> Tokenizer:
    """A tokenizer from a spec.

    - "char": character-level; its vocabulary is built from `docs` (required: a char vocabulary
      without a corpus would silently map every unseen character to the unknown token).
    - "gpt2": `vocab.json` + `merges.txt` from `find_data_dir(data_dir)/"gpt2"`.
    - a directory: a saved tokenizer (`tokenizer_meta.json`), a checkpoint holding `tokenizer/`,
      or a folder with GPT-2-format `vocab.json` + `merges.txt`.
    """
    text = str(spec)
    if text == "char":
        if docs is None:
            raise UserError(
                "the char tokenizer builds its vocabulary from a corpus: pass documents "
                "(train_char(docs)) or a saved char tokenizer directory"
            )
        return CharTokenizer.from_documents(docs)
    if text == "gpt2":
        folder = find_data_dir(data_dir) / "gpt2"
        if not folder.is_dir():
            raise UserError(f"GPT-2 tokenizer files not found: {folder} does not exist")
        return gpt2_from_files(folder, spec="gpt2")
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / META_FILE).is_file():
            return _load_saved(path)
        if (path / "tokenizer" / META_FILE).is_file():
            return _load_saved(path / "tokenizer")
        if (path / "vocab.json").is_file() or (path / "merges.txt").is_file():
            return gpt2_from_files(path)
        raise UserError(
            f"{path} is not a tokenizer directory (no {META_FILE}, tokenizer/{META_FILE}, "
            "or vocab.json + merges.txt)"
        )
    if path.exists():
        raise UserError(f"tokenizer spec {text!r} is a file; give its directory")
    raise UserError(
        f"unknown tokenizer {text!r}: use 'char', 'gpt2', or a saved tokenizer directory (not found)"
    )


def _load_saved(folder: Path) -> Tokenizer:
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {folder / META_FILE}: {err}") from err
    kind = meta.get("kind")
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{folder / META_FILE}: unsupported format_version {meta.get('format_version')!r}")
    tok: Tokenizer
    if kind == "char":
        try:
            payload = json.loads((folder / CHAR_FILE).read_text(encoding="utf-8"))
            chars = payload["chars"]
        except (OSError, KeyError, json.JSONDecodeError) as err:
            raise UserError(f"cannot read char vocabulary in {folder}: {err}") from err
        tok = CharTokenizer(chars, spec=str(folder), corpus=meta.get("corpus"))
    elif kind == "byte-bpe":
        from tokenizers import Tokenizer as HFTokenizer

        try:
            hf = HFTokenizer.from_file(str(folder / HF_FILE))
        except Exception as err:
            raise UserError(f"cannot read {folder / HF_FILE}: {err}") from err
        extra = {k: v for k, v in meta.items() if k not in _META_CORE}
        tok = ByteBPETokenizer(hf, name=str(meta.get("name", "bpe")), spec=str(folder), extra_meta=extra)
    else:
        raise UserError(f"{folder / META_FILE}: unknown tokenizer kind {kind!r}")
    if tok.identity != meta.get("identity"):
        raise UserError(
            f"tokenizer in {folder} does not match its meta (identity {tok.identity} != "
            f"{meta.get('identity')}): the files were changed after saving"
        )
    return tok


_META_CORE = {
    "format",
    "format_version",
    "kind",
    "name",
    "spec",
    "identity",
    "vocab_size",
    "eot_id",
    "unk_id",
    "saved",
    "tokenizers_version",
}


def _write_meta(folder: Path, tok: Tokenizer, *, kind: str, extra: dict | None) -> None:
    import tokenizers

    meta = {
        "format": "evalsuite-tokenizer",
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": tok.name,
        "spec": tok.spec,
        "identity": tok.identity,
        "vocab_size": tok.vocab_size,
        "eot_id": tok.eot_id,
        "unk_id": tok.unk_id,
        "saved": _now(),
        "tokenizers_version": tokenizers.__version__,
    }
    for key, value in (extra or {}).items():
        if key not in _META_CORE:
            meta[key] = value
    _write_json_atomic(folder / META_FILE, meta)


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _CorpusHasher:
    """Counts and hashes documents while they stream past (one pass, no list in memory)."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.n_documents = 0
        self.n_chars = 0

    def wrap(self, docs: Iterable[str]) -> Iterator[str]:
        for doc in docs:
            if not isinstance(doc, str):
                raise TypeError(f"documents must be str, got {type(doc).__name__}")
            self.n_documents += 1
            self.n_chars += len(doc)
            self._sha.update(doc.encode("utf-8"))
            self._sha.update(b"\x00")
            yield doc

    def summary(self) -> dict:
        return {"n_documents": self.n_documents, "n_chars": self.n_chars, "sha256": self._sha.hexdigest()}


# ----------------------------------------------------------------------------------------------
# article tokens


def article_token_ids(tok: Tokenizer, *, context_free: bool = False) -> dict[str, list[int]]:
    """Ids of the articles the/a/an, derived from the tokenizer itself.

    For each article, the variants "the", " the", "The", " The" count when the tokenizer encodes the
    variant as exactly one token that decodes back to it. A character-level tokenizer has no word
    tokens (its "a" is the letter in "cat" too), so it gets empty lists rather than letter counts.

    context_free=True drops the bare lowercase variants ("a", "the", "an" with no leading space): in a
    byte-level BPE those ids are mostly pieces inside longer words ("p|a|rk"), so code that cannot
    look at the neighbouring characters (a per-token loss weight) must not treat them as articles.
    """
    result: dict[str, list[int]] = {}
    for article in ARTICLES:
        ids: list[int] = []
        if not tok.is_character_level:
            for word in (article, article.capitalize()):
                for variant in (word, " " + word):
                    if context_free and variant == article:
                        continue
                    encoded = tok.encode(variant)
                    if len(encoded) == 1 and tok.decode(encoded) == variant and encoded[0] not in ids:
                        ids.append(int(encoded[0]))
        result[article] = ids
    return result

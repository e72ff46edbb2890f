"""Tokenized memmaps: layout, sidecar, atomic writes, the cache, and bits per character."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from corpora import tokenized as tokenized_module
from corpora.errors import UserError
from corpora.tokenized import (
    TokenizedMeta,
    bits_per_char,
    open_tokenized,
    read_meta,
    sidecar_path,
    tokenize_cached,
    write_tokenized,
)
from corpora.tokenizers import EOT, CharTokenizer, load_tokenizer, train_bpe, train_char


@pytest.fixture(scope="module")
def sample_path(shared_data) -> Path:
    return shared_data / "tinystories" / "tinystories_sample.txt"


@pytest.fixture(scope="module")
def docs(sample_path) -> list[str]:
    text = sample_path.read_text(encoding="utf-8")
    return [d.strip() for d in text.split(EOT) if d.strip()]


@pytest.fixture(scope="module")
def bpe(docs):
    return train_bpe(docs, 300)


def test_memmap_round_trip(docs, bpe, tmp_path):
    path = tmp_path / "train.bin"
    meta = write_tokenized(iter(docs), bpe, path, batch_size=2)  # an iterator, several batches
    array, read_back = open_tokenized(path)
    assert read_back == meta
    assert isinstance(array, np.memmap) and array.dtype == np.uint16 and meta.dtype == "uint16"
    assert bpe.decode(array.tolist()) == EOT.join(docs) + EOT  # every document followed by eot
    assert int((array == bpe.eot_id).sum()) == len(docs) == meta.n_documents
    assert array[-1] == bpe.eot_id
    assert meta.n_tokens == array.size == sum(len(bpe.encode(d)) + 1 for d in docs)
    assert meta.n_chars == sum(len(d) for d in docs)
    assert meta.n_bytes == sum(len(d.encode("utf-8")) for d in docs)
    assert meta.n_bytes > meta.n_chars  # the sample has curly quotes
    assert meta.tokenizer_identity == bpe.identity
    assert path.stat().st_size == meta.n_tokens * 2
    side = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    for key in ("tokenizer_identity", "tokenizer_spec", "dtype", "n_documents", "n_tokens", "n_chars",
                "n_bytes", "created", "source"):
        assert key in side
    assert sidecar_path(path).name == "train.bin.json"
    # batch size does not change the array
    other = tmp_path / "one_batch.bin"
    write_tokenized(docs, bpe, other, batch_size=1000)
    assert np.array_equal(open_tokenized(other)[0], array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one_batch.bin", "one_batch.bin.json",
                                                         "train.bin", "train.bin.json"]


def test_gpt2_array_is_uint16_and_matches_encode(docs, shared_data, tmp_path):
    gpt2 = load_tokenizer("gpt2", shared_data)
    meta = write_tokenized(docs, gpt2, tmp_path / "g.bin")
    array, _ = open_tokenized(tmp_path / "g.bin")
    assert meta.dtype == "uint16"  # 50257 < 65536
    expected = [i for d in docs for i in [*gpt2.encode(d), 50256]]
    assert array.tolist() == expected


class _HugeVocabChar(CharTokenizer):
    """A char tokenizer that claims a vocabulary too large for uint16 (only the dtype choice sees it)."""

    @property
    def vocab_size(self) -> int:
        return 70_000


def test_large_vocab_is_written_as_uint32(docs, tmp_path):
    small = train_char(docs)
    huge = _HugeVocabChar(small.chars)
    meta = write_tokenized(docs, huge, tmp_path / "big.bin")
    array, _ = open_tokenized(tmp_path / "big.bin")
    assert meta.dtype == "uint32" and array.dtype == np.uint32
    assert (tmp_path / "big.bin").stat().st_size == 4 * meta.n_tokens
    assert array.tolist() == [i for d in docs for i in [*small.encode(d), small.eot_id]]


def test_sidecar_must_match_the_array(docs, bpe, tmp_path):
    path = tmp_path / "x.bin"
    write_tokenized(docs, bpe, path)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 2)  # one token short
    with pytest.raises(UserError, match="do not match"):
        open_tokenized(path)

    write_tokenized(docs, bpe, path)
    side = sidecar_path(path)
    data = json.loads(side.read_text(encoding="utf-8"))
    data["n_tokenz"] = data.pop("n_tokens")
    side.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError, match="unknown keys"):
        open_tokenized(path)

    side.unlink()
    with pytest.raises(UserError, match="no sidecar"):
        open_tokenized(path)
    with pytest.raises(UserError, match="not found"):
        open_tokenized(tmp_path / "absent.bin")


def test_a_crash_leaves_no_half_array(docs, bpe, tmp_path):
    path = tmp_path / "train.bin"
    old = write_tokenized(docs[:2], bpe, path)

    def crashing():
        yield docs[0]
        yield docs[1]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_tokenized(crashing(), bpe, path, batch_size=1)
    # the old complete array and its sidecar are untouched; no temporary files remain
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.bin", "train.bin.json"]
    assert read_meta(path) == old

    fresh = tmp_path / "fresh.bin"
    with pytest.raises(RuntimeError):
        write_tokenized(crashing(), bpe, fresh, batch_size=1)
    assert not fresh.exists() and not sidecar_path(fresh).exists()


def test_empty_corpus_and_bad_ids(bpe, tmp_path):
    with pytest.raises(UserError, match="no documents"):
        write_tokenized([], bpe, tmp_path / "e.bin")
    assert list(tmp_path.iterdir()) == []

    class Broken(CharTokenizer):
        def encode_batch(self, texts):
            return [[self.vocab_size] for _ in texts]

    with pytest.raises(ValueError, match="outside"):
        write_tokenized(["abc"], Broken("abc"), tmp_path / "b.bin")
    assert list(tmp_path.iterdir()) == []


def test_bits_per_char_by_hand(docs, bpe, tmp_path):
    meta = TokenizedMeta(
        tokenizer_identity="x", tokenizer_spec="x", tokenizer_name="x", vocab_size=300, eot_id=0,
        dtype="uint16", n_documents=1, n_tokens=1000, n_chars=4000, n_bytes=4000, created="", source=None,
    )
    # 2 nats/token * 1000 tokens = 2000 nats = 2885.39 bits over 4000 characters
    assert bits_per_char(2.0, meta) == pytest.approx(0.7213475204444817, rel=1e-12)
    written = write_tokenized(docs, bpe, tmp_path / "v.bin")
    assert bits_per_char(1.5, written) == pytest.approx(1.5 * written.n_tokens / (written.n_chars * math.log(2)))
    empty = dataclasses.replace(meta, n_chars=0)
    with pytest.raises(UserError):
        bits_per_char(1.0, empty)


def test_tokenize_cached_reuses_until_tokenizer_or_source_changes(docs, bpe, sample_path, tmp_path, monkeypatch):
    corpus = tmp_path / "stories.txt"
    corpus.write_text(sample_path.read_text(encoding="utf-8"), encoding="utf-8")
    out_dir = tmp_path / "tok"
    first = tokenize_cached(corpus, bpe, out_dir)
    meta = read_meta(first)
    assert meta.n_documents == len(docs)
    assert meta.source["path"] == str(corpus.resolve())

    calls = []
    real_write = tokenized_module.write_tokenized

    def counting_write(*args, **kwargs):
        calls.append(args[2])
        return real_write(*args, **kwargs)

    monkeypatch.setattr(tokenized_module, "write_tokenized", counting_write)
    assert tokenize_cached(corpus, bpe, out_dir) == first
    assert calls == []  # reused, not re-tokenized

    char = train_char(docs)
    other = tokenize_cached(corpus, char, out_dir)
    assert other != first and read_meta(other).tokenizer_identity == char.identity
    assert len(calls) == 1

    with corpus.open("a", encoding="utf-8") as handle:
        handle.write(f"{EOT}\nOne more story about a cat.\n")
    stat = corpus.stat()
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    again = tokenize_cached(corpus, bpe, out_dir)
    assert again == first and len(calls) == 2
    assert read_meta(again).n_documents == len(docs) + 1

    with pytest.raises(UserError):
        tokenize_cached(tmp_path / "missing.txt", bpe, out_dir)

"""Documents from .txt / .jsonl / directories, their errors, streaming, and the leak-free split."""

from __future__ import annotations

import json
import random
import tracemalloc
from collections import Counter

import pytest

from corpora import documents
from corpora.documents import corpus_stats, iter_documents, read_documents, split_documents
from corpora.errors import UserError

SAMPLE_OPENINGS = [
    "Once upon a time there was a little boy named Ben.",
    "Once upon a time, there was a reliable otter named Ollie.",
    "One day, a little boy named Tim went to the park.",
]


def test_real_tinystories_sample_has_five_stories(shared_data):
    docs = read_documents(shared_data / "tinystories" / "tinystories_sample.txt")
    assert len(docs) == 5
    for opening, doc in zip(SAMPLE_OPENINGS, docs[:3], strict=True):
        assert doc.startswith(opening)
    for doc in docs:
        assert "<|endoftext|>" not in doc and doc == doc.strip() and len(doc) > 200
    assert docs[0].endswith("And that's how Ben found an amazing vase in the store!")


def test_streaming_with_tiny_blocks_matches_whole_read(shared_data, monkeypatch):
    # 7-byte blocks cut the separator and multi-byte characters (the sample has curly quotes).
    path = shared_data / "tinystories" / "tinystories_sample.txt"
    whole = read_documents(path)
    monkeypatch.setattr(documents, "READ_BYTES", 7)
    assert list(iter_documents(path)) == whole


def test_sample_split_and_stats(shared_data):
    path = shared_data / "tinystories" / "tinystories_sample.txt"
    docs = read_documents(path)
    train, val = split_documents(docs, 0.2, seed=0)
    assert len(val) == 1 and len(train) == 4 and sorted(train + val) == sorted(docs)
    stats = corpus_stats(path)
    assert stats.n_documents == 5 and stats.n_files == 1
    assert stats.n_characters == sum(map(len, docs))
    assert stats.n_words == sum(len(doc.split()) for doc in docs)
    assert stats.mean_characters == pytest.approx(stats.n_characters / 5)


def test_txt_strips_and_drops_empty_documents(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\ufeff first story \n<|endoftext|>\n\n<|endoftext|>  second\nline <|endoftext|>\n")
    assert read_documents(path) == ["first story", "second\nline"]


def test_jsonl_objects_and_strings(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [json.dumps({"text": " one ", "id": 1}), "", json.dumps("two"), json.dumps({"text": "   "}),
             json.dumps({"text": "thrée"}, ensure_ascii=False)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert read_documents(path) == ["one", "two", "thrée"]


@pytest.mark.parametrize("bad_line, complaint", [
    ("{not json", "line 2: not valid JSON"),
    ('{"story": "x"}', 'line 2: JSON object without a string "text" field'),
    ('{"text": 5}', 'line 2: JSON object without a string "text" field'),
    ("[1, 2]", "line 2: expected an object"),
])
def test_jsonl_bad_line_names_line_number(tmp_path, bad_line, complaint):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + bad_line + "\n")
    with pytest.raises(UserError, match=complaint):
        read_documents(path)


def test_directory_is_read_in_sorted_order(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("b1<|endoftext|>b2")
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "a1"}) + "\n")
    (tmp_path / "sub" / "c.txt").write_text("c1")
    (tmp_path / ".hidden.txt").write_text("hidden")
    (tmp_path / "notes.md").write_text("ignored")
    (tmp_path / "empty.txt").write_text("")
    assert read_documents(tmp_path) == ["a1", "b1", "b2", "c1"]
    assert corpus_stats(tmp_path).n_files == 4


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        read_documents(tmp_path / "nope.txt")


@pytest.mark.parametrize("content", ["", "  \n", "<|endoftext|>\n<|endoftext|>"])
def test_empty_corpus(tmp_path, content):
    path = tmp_path / "c.txt"
    path.write_text(content)
    with pytest.raises(UserError, match="empty corpus"):
        read_documents(path)


def test_empty_directory_and_chat_directory(tmp_path):
    with pytest.raises(UserError, match="empty corpus"):
        read_documents(tmp_path)
    (tmp_path / "a.cha").write_text("@Begin\n")
    with pytest.raises(UserError, match="CHAT"):
        read_documents(tmp_path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("a,b")
    with pytest.raises(UserError, match="expected .txt or .jsonl"):
        read_documents(path)


@pytest.mark.parametrize("block", [1, 3, 1 << 20])
def test_non_utf8_names_file_and_byte_offset(tmp_path, monkeypatch, block):
    monkeypatch.setattr(documents, "READ_BYTES", block)
    path = tmp_path / "latin1.txt"
    path.write_bytes("héllo ".encode() + b"caf\xe9 story")  # é in UTF-8 is 2 bytes: bad byte at 10
    with pytest.raises(UserError, match=r"latin1\.txt is not UTF-8: invalid byte 0xe9 at byte offset 10"):
        read_documents(path)


def test_non_utf8_jsonl(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'"ok"\n"caf\xe9"\n')
    with pytest.raises(UserError, match=r"byte offset 9 \(line 2\)"):
        read_documents(path)


def test_iteration_streams_big_files(tmp_path):
    # 24 MB of stories must not be held at once: the peak stays a few read blocks (1 MiB each).
    story = "Once upon a time a small dog ran in the sun. " * 20
    path = tmp_path / "big.txt"
    with path.open("w") as handle:
        for _ in range(24_000_000 // (len(story) + 14)):
            handle.write(story + "<|endoftext|>")
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_documents(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 24_000_000 // (len(story) + 14)
    assert peak < 10_000_000, f"peak {peak} bytes: the file was read whole"


# --- split -----------------------------------------------------------------------------------


def corpus(n: int = 400) -> list[str]:
    return [f"story number {i} about a cat" for i in range(n)]


def test_split_is_deterministic_and_seed_dependent():
    docs = corpus()
    first = split_documents(docs, 0.1, seed=7)
    assert split_documents(docs, 0.1, seed=7) == first
    assert split_documents(docs, 0.1, seed=8)[1] != first[1]
    train, val = first
    assert len(val) == 40 and len(train) == 360
    assert train == [doc for doc in docs if doc not in set(val)]  # input order kept


def test_split_does_not_depend_on_input_order():
    docs = corpus()
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    assert set(split_documents(docs, 0.25, 3)[1]) == set(split_documents(shuffled, 0.25, 3)[1])


def test_split_never_leaks_duplicated_documents():
    base = corpus(100)
    docs = base + base[:50] + base[:10] * 3  # many exact duplicates
    random.Random(0).shuffle(docs)
    for seed in range(5):
        train, val = split_documents(docs, 0.3, seed)
        assert not set(train) & set(val)
        assert Counter(train) + Counter(val) == Counter(docs)  # every document once, none split
        assert len(set(val)) == 30


@pytest.mark.parametrize("fraction", [0, 0.0, 1, 1.0, -0.1, 1.5, True])
def test_split_rejects_fraction_outside_open_interval(fraction):
    with pytest.raises(UserError, match="val_fraction"):
        split_documents(corpus(), fraction, 0)


def test_split_rejects_an_empty_side():
    with pytest.raises(UserError, match="validation side empty"):
        split_documents(["a", "b", "c"], 0.1, 0)
    with pytest.raises(UserError, match="training side empty"):
        split_documents(["a", "b", "c"], 0.9, 0)
    with pytest.raises(UserError, match="empty"):
        split_documents(["same", "same", "same"], 0.5, 0)  # one distinct text cannot be split

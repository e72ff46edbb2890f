"""Tokenizers (char, GPT-2 BPE, trained BPE), article ids, and the tokenizer report."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from corpora.errors import UserError
from corpora.tokenizer_report import COLUMNS, tokenizer_report
from corpora.tokenizers import (
    EOT,
    HF_FILE,
    CharTokenizer,
    article_token_ids,
    gpt2_from_files,
    load_tokenizer,
    train_bpe,
    train_char,
)

ASCII_TEXT = "Once upon a time, Tim's dog ran to the park.\nHe said: \"Hi!\" 42 times."


def _sample_docs(shared_data: Path) -> list[str]:
    text = (shared_data / "tinystories" / "tinystories_sample.txt").read_text(encoding="utf-8")
    return [d.strip() for d in text.split(EOT) if d.strip()]


@pytest.fixture(scope="module")
def docs(shared_data) -> list[str]:
    return _sample_docs(shared_data)


@pytest.fixture(scope="module")
def gpt2(shared_data):
    return load_tokenizer("gpt2", shared_data)


@pytest.fixture(scope="module")
def bpe300(docs):
    return train_bpe(docs, 300)


# --- GPT-2 -------------------------------------------------------------------------------------


def test_gpt2_known_ids_match_the_vocab_file(gpt2, shared_data):
    vocab = json.loads((shared_data / "gpt2" / "vocab.json").read_text(encoding="utf-8"))
    # the ids the mission states, checked against the file itself ("Ġ" is GPT-2's byte for a space)
    assert (vocab["Ġthe"], vocab["Ġa"], vocab["Ġan"]) == (262, 257, 281)
    assert gpt2.encode(" the") == [262]
    assert gpt2.encode(" a") == [257]
    assert gpt2.encode(" an") == [281]
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.vocab_size == 50257
    assert gpt2.eot_id == 50256 == vocab[EOT]
    assert gpt2.unk_id is None


def test_gpt2_round_trips_the_sample_and_maps_literal_eot(gpt2, docs, shared_data):
    for doc in docs:
        assert gpt2.decode(gpt2.encode(doc)) == doc
    raw = (shared_data / "tinystories" / "tinystories_sample.txt").read_text(encoding="utf-8")
    ids = gpt2.encode(raw)
    assert gpt2.decode(ids) == raw
    assert ids.count(50256) == raw.count(EOT) > 0
    assert gpt2.encode(f"a{EOT}b") == [64, 50256, 65]
    assert gpt2.encode_batch(docs[:2]) == [gpt2.encode(docs[0]), gpt2.encode(docs[1])]


def test_gpt2_offsets_tile_ascii_text_and_match_decoded_tokens(gpt2):
    ids, offsets = gpt2.encode_with_offsets(ASCII_TEXT)
    assert ids == gpt2.encode(ASCII_TEXT)
    assert len(offsets) == len(ids)
    assert offsets[0][0] == 0 and offsets[-1][1] == len(ASCII_TEXT)
    for (_, end), (start, _) in zip(offsets, offsets[1:], strict=False):
        assert end == start  # no gap, no overlap for ASCII
    for token_id, (start, end) in zip(ids, offsets, strict=True):
        assert ASCII_TEXT[start:end] == gpt2.decode([token_id])
    assert " the" in [ASCII_TEXT[s:e] for s, e in offsets]  # the leading space stays in the span


def test_gpt2_offsets_cover_non_ascii_text(gpt2, docs):
    text = docs[0]  # has curly quotes, which byte-level BPE splits over several tokens
    assert any(ord(c) > 127 for c in text)
    ids, offsets = gpt2.encode_with_offsets(text)
    assert len(ids) == len(offsets)
    starts = [s for s, _ in offsets]
    assert starts == sorted(starts)
    covered = set()
    for start, end in offsets:
        assert 0 <= start < end <= len(text)
        covered.update(range(start, end))
    assert covered == set(range(len(text)))


def test_gpt2_from_explicit_directory_and_save_load(gpt2, shared_data, tmp_path, docs):
    explicit = load_tokenizer(str(shared_data / "gpt2"))
    assert explicit.identity == gpt2.identity
    assert gpt2.identity.startswith("byte-bpe-50257:")
    saved = gpt2.save(tmp_path / "tok")
    reloaded = load_tokenizer(saved)
    assert reloaded.identity == gpt2.identity
    assert reloaded.name == "gpt2"
    assert reloaded.encode_batch(docs) == gpt2.encode_batch(docs)
    assert reloaded.eot_id == 50256


def test_gpt2_identity_changes_when_merges_change(gpt2, shared_data, tmp_path):
    folder = tmp_path / "gpt2-edited"
    folder.mkdir()
    shutil.copy(shared_data / "gpt2" / "vocab.json", folder / "vocab.json")
    merges = (shared_data / "gpt2" / "merges.txt").read_text(encoding="utf-8").splitlines()
    (folder / "merges.txt").write_text("\n".join(merges[:-1]) + "\n", encoding="utf-8")  # drop one merge
    edited = gpt2_from_files(folder)
    assert edited.identity != gpt2.identity


def test_gpt2_spec_errors(tmp_path):
    with pytest.raises(UserError, match="gpt2"):
        load_tokenizer("gpt2", tmp_path)  # a data dir without gpt2/
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "vocab.json").write_text("{}", encoding="utf-8")
    with pytest.raises(UserError, match="merges.txt"):
        load_tokenizer(tmp_path / "half")


# --- trained BPE -------------------------------------------------------------------------------


def test_train_bpe_small_vocab(bpe300, docs):
    assert 257 < bpe300.vocab_size <= 300
    assert bpe300.encode(EOT) == [bpe300.eot_id]
    joined = "\n".join(docs)
    ids = bpe300.encode(joined)
    assert bpe300.decode(ids) == joined
    assert len(ids) < len(joined.encode("utf-8"))  # the merges compress
    assert max(ids) < bpe300.vocab_size
    corpus = bpe300.extra_meta["corpus"]
    assert corpus["n_documents"] == len(docs)
    assert corpus["n_chars"] == sum(len(d) for d in docs)
    assert bpe300.extra_meta["trainer"]["requested_vocab_size"] == 300


def test_train_bpe_is_deterministic_and_identity_tracks_vocab(bpe300, docs):
    again = train_bpe(iter(docs), 300)  # a generator works as well as a list
    assert again.identity == bpe300.identity
    bigger = train_bpe(docs, 320)
    assert bigger.identity != bpe300.identity


def test_trained_bpe_save_load_gives_identical_ids(bpe300, docs, tmp_path):
    folder = bpe300.save(tmp_path / "bpe")
    meta = json.loads((folder / "tokenizer_meta.json").read_text(encoding="utf-8"))
    assert meta["identity"] == bpe300.identity
    assert meta["vocab_size"] == bpe300.vocab_size
    assert meta["corpus"]["n_documents"] == len(docs)
    reloaded = load_tokenizer(str(folder))
    assert reloaded.identity == bpe300.identity
    assert reloaded.name == bpe300.name
    assert reloaded.encode_batch(docs) == bpe300.encode_batch(docs)
    # a checkpoint directory holding tokenizer/ loads too (the trainer copies the folder there)
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(folder, checkpoint / "tokenizer")
    assert load_tokenizer(checkpoint).identity == bpe300.identity


def test_saved_tokenizer_edited_after_saving_is_refused(bpe300, tmp_path):
    folder = bpe300.save(tmp_path / "bpe")
    data = json.loads((folder / HF_FILE).read_text(encoding="utf-8"))
    data["model"]["merges"] = data["model"]["merges"][:-1]
    (folder / HF_FILE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError, match="changed after saving"):
        load_tokenizer(folder)


def test_train_bpe_bad_input():
    with pytest.raises(UserError, match="empty corpus"):
        train_bpe([], 300)
    with pytest.raises(UserError, match="at least 258"):
        train_bpe(["some text"], 100)


# --- character level ---------------------------------------------------------------------------


def test_char_tokenizer_vocab_unknowns_offsets_and_save(docs, tmp_path):
    tok = train_char(docs)
    chars = sorted(set("".join(docs)))
    assert tok.vocab_size == len(chars) + 2
    assert tok.encode("Ben") == [chars.index(c) + 2 for c in "Ben"]
    text = f"Ben ☃ ran{EOT}x"
    ids, offsets = tok.encode_with_offsets(text)
    assert ids[4] == tok.unk_id == 0  # the snowman is not in the stories
    assert ids[9] == tok.eot_id == 1 and offsets[9] == (9, 9 + len(EOT))
    decoded = tok.decode(ids)
    assert decoded == f"Ben \ufffd ran{EOT}x"  # unknowns keep their one-character width
    for token_id, (start, end) in zip(ids, offsets, strict=True):
        if token_id != tok.unk_id:
            assert text[start:end] == tok.decode([token_id])
    reloaded = load_tokenizer(tok.save(tmp_path / "char"))
    assert isinstance(reloaded, CharTokenizer)
    assert reloaded.identity == tok.identity
    assert reloaded.encode_batch(docs) == tok.encode_batch(docs)
    assert train_char(docs[:2]).identity != tok.identity


def test_char_spec_needs_a_corpus(docs):
    with pytest.raises(UserError, match="corpus"):
        load_tokenizer("char")
    assert load_tokenizer("char", docs=docs).identity == train_char(docs).identity
    with pytest.raises(UserError, match="empty corpus"):
        train_char([])


def test_unknown_specs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown tokenizer"):
        load_tokenizer("bogus-tokenizer")
    with pytest.raises(UserError, match="not a tokenizer directory"):
        load_tokenizer(tmp_path)
    (tmp_path / "f.txt").write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match="is a file"):
        load_tokenizer(tmp_path / "f.txt")


# --- article ids -------------------------------------------------------------------------------


def test_article_ids_on_gpt2(gpt2):
    ids = article_token_ids(gpt2)
    assert set(ids) == {"the", "a", "an"}
    assert 262 in ids["the"] and 257 in ids["a"] and 281 in ids["an"]
    every = {i for group in ids.values() for i in group}
    assert 264 not in every and 389 not in every  # " s" and " are"
    for article, group in ids.items():
        for token_id in group:
            assert gpt2.decode([token_id]).strip().lower() == article


def test_article_ids_are_derived_from_each_tokenizer(bpe300, gpt2, docs):
    ids = article_token_ids(bpe300)
    for article, group in ids.items():
        for token_id in group:
            assert bpe300.decode([token_id]).strip().lower() == article
            assert len(bpe300.encode(bpe300.decode([token_id]))) == 1
    assert ids["the"] and ids["the"] != article_token_ids(gpt2)["the"]  # not a fixed table
    assert article_token_ids(train_char(docs)) == {"the": [], "a": [], "an": []}


# --- report ------------------------------------------------------------------------------------


def test_report_on_the_sample(gpt2, bpe300, docs):
    char = train_char(docs[:3])  # built from part of the corpus, so the rest has unknown characters
    frame = tokenizer_report({"sample": docs, "tiny": ["The cat sat on a mat."]}, [gpt2, char, bpe300])
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 6
    row = frame[(frame.corpus == "sample") & (frame.tokenizer == "gpt2")].iloc[0]
    n_tokens = sum(len(gpt2.encode(d)) for d in docs)
    n_chars = sum(len(d) for d in docs)
    n_words = sum(len(d.split()) for d in docs)
    assert row.n_tokens == n_tokens and row.n_chars == n_chars and row.n_words == n_words
    assert row.tokens_per_char == pytest.approx(n_tokens / n_chars)
    assert row.tokens_per_word == pytest.approx(n_tokens / n_words)
    assert row.unk_rate == 0.0 and "no unknown token" in row.unk_note
    used = {i for d in docs for i in gpt2.encode(d)}
    assert row.vocab_used_share == pytest.approx(len(used) / 50257)
    # in these stories every article word is one whole-word GPT-2 token
    article_words = sum(1 for d in docs for w in re.findall(r"[A-Za-z]+", d) if w.lower() in ("the", "a", "an"))
    assert row.article_token_share * n_tokens == pytest.approx(article_words)
    assert row.article_word_share == pytest.approx(article_words / n_words)

    tiny = frame[(frame.corpus == "tiny") & (frame.tokenizer == "gpt2")].iloc[0]
    assert tiny.n_tokens == 7  # The| cat| sat| on| a| mat|.
    assert tiny.share_the == pytest.approx(1 / 7)
    assert tiny.share_a == pytest.approx(1 / 7)
    assert tiny.share_an == 0.0

    char_row = frame[(frame.corpus == "sample") & (frame.tokenizer == "char")].iloc[0]
    known = set("".join(docs[:3]))
    unknown = sum(1 for d in docs for c in d if c not in known)
    assert unknown > 0
    assert char_row.unk_rate == pytest.approx(unknown / n_chars)
    assert char_row.tokens_per_char == 1.0
    assert char_row.article_token_share != char_row.article_token_share  # NaN: no word tokens
    assert "character-level" in char_row.article_note

    small = frame[(frame.corpus == "sample") & (frame.tokenizer == bpe300.name)].iloc[0]
    assert small.tokens_per_char > row.tokens_per_char  # a 300-token vocabulary cuts finer than GPT-2
    assert small.article_token_share <= small.article_id_share  # in-word uses are not counted


def test_context_free_article_ids_leave_out_word_pieces(gpt2):
    """A per-token loss weight sees ids without context: the bare "a" piece must not count."""
    bare_a = gpt2.encode("a")
    assert len(bare_a) == 1
    assert bare_a[0] in article_token_ids(gpt2)["a"]
    # "park" splits into pieces in some contexts; the bare "a" id is a piece in many words
    free = article_token_ids(gpt2, context_free=True)
    assert bare_a[0] not in free["a"]
    assert 257 in free["a"] and 262 in free["the"] and 281 in free["an"]
    assert gpt2.encode("The")[0] in free["the"]

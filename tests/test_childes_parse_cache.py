"""The parse cache: every transcript read or reported, computed once, keyed by sha256 and code."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest

from corpora.errors import UserError
from evalsuite.childes import parse_cache
from evalsuite.childes.parse_cache import load_child_utterances


def _brown_zip(shared_data: Path, out: Path, n: int = 2, extra: dict[str, bytes] | None = None) -> Path:
    """A small TalkBank-style zip: the first `n` real Adam transcripts (+ extra members)."""
    files = sorted((shared_data / "childes" / "Brown" / "Adam").glob("*.cha"))[:n]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f"Brown/Adam/{f.name}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return out


def test_cold_then_warm_gives_the_same_rows(shared_data, tmp_path):
    archive = _brown_zip(shared_data, tmp_path / "Brown.zip", extra={"Brown/Adam/cut.cha": b"@UTF8\n@Begin\n*CHI:\tI w"})
    cold = load_child_utterances([archive], cache_dir=tmp_path / "cache", n_workers=1)
    warm = load_child_utterances([archive], cache_dir=tmp_path / "cache", n_workers=1)
    assert not cold.transcripts["from_cache"].any() and warm.transcripts["from_cache"].all()
    pd.testing.assert_frame_equal(cold.utterances, warm.utterances)
    pd.testing.assert_frame_equal(cold.issues, warm.issues)
    # the cut transcript is listed (transcripts and issues), the real ones are read
    assert cold.transcripts["read"].tolist() == [True, True, False]
    err = cold.issues[cold.issues["severity"] == "error"]
    assert err[["file", "kind"]].values.tolist() == [["Brown/Adam/cut.cha", "no_end"]]
    u = cold.utterances
    assert set(u["speaker"]) == {"CHI"} and u["child"].eq("Adam").all() and u["child_id"].eq("Brown/adam").all()
    assert u["mor_style"].eq("ud").all() and u["age_months"].between(27, 29).all()
    ok = u[u["mor_aligned"] & (u["n_mor_items"] > 0)]
    assert ok["n_morphemes"].notna().all() and (ok["n_morphemes"] >= ok["n_words"] - 1).mean() > 0.99
    assert u.loc[~u["mor_aligned"], "n_morphemes"].isna().all()  # UD style without surface words: not guessed


def test_changed_transcript_is_recomputed_and_the_rest_reused(shared_data, tmp_path):
    cache = tmp_path / "cache"
    load_child_utterances([_brown_zip(shared_data, tmp_path / "a.zip")], cache_dir=cache, n_workers=1)
    first = sorted((shared_data / "childes" / "Brown" / "Adam").glob("*.cha"))[0]
    edited = first.read_bytes().replace(b"@End", b"*CHI:\tmore cookie .\n@End")
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[f"Brown/Adam/{first.name}"] = edited
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    again = load_child_utterances([archive], cache_dir=cache, n_workers=1)
    assert again.transcripts["from_cache"].tolist() == [False, True]  # keyed by the file's sha256
    edited_rows = again.utterances[again.utterances["file"] == f"Brown/Adam/{first.name}"]
    assert edited_rows["utterance"].iloc[-1] == "more cookie ."


def test_an_unchanged_zip_is_found_by_its_own_hash_without_reading_members(shared_data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    archive = _brown_zip(shared_data, tmp_path / "z.zip")
    cold = load_child_utterances([archive], cache_dir=cache, n_workers=1)
    pointers = list(cache.glob("*/*/sources/zip-*.txt"))
    assert len(pointers) == 1 and (pointers[0].parent / pointers[0].read_text()).is_file()
    read_members = []
    real_iter = parse_cache.chat.iter_transcripts
    monkeypatch.setattr(parse_cache.chat, "iter_transcripts", lambda p: read_members.append(p) or real_iter(p))
    warm = load_child_utterances([archive], cache_dir=cache, n_workers=1)
    assert read_members == [] and warm.transcripts["from_cache"].all()  # no member decompressed or hashed
    pd.testing.assert_frame_equal(cold.utterances, warm.utterances)
    pd.testing.assert_frame_equal(cold.issues, warm.issues)
    pd.testing.assert_frame_equal(cold.transcripts.drop(columns="from_cache"), warm.transcripts.drop(columns="from_cache"))
    # a pointer to a damaged shard is not served: the members are read and hashed as before
    (pointers[0].parent / pointers[0].read_text()).write_bytes(b"not parquet")
    again = load_child_utterances([archive], cache_dir=cache, n_workers=1)
    assert read_members == [archive] and again.transcripts["from_cache"].all()  # from the per-transcript files
    pd.testing.assert_frame_equal(cold.utterances, again.utterances)
    # a changed zip (new bytes) has another pointer: its members are read again
    _brown_zip(shared_data, archive, n=3)
    changed = load_child_utterances([archive], cache_dir=cache, n_workers=1)
    assert len(read_members) == 2 and len(changed.transcripts) == 3
    assert len(list(cache.glob("*/*/sources/zip-*.txt"))) == 2


def test_code_key_tracks_the_feature_code():
    key = parse_cache.code_key()
    assert len(key) == 16 and all((parse_cache._ROOT / f).exists() for f in parse_cache.CODE_FILES)
    assert "corpora/chat.py" in parse_cache.CODE_FILES and "evalsuite/childes/measures.py" in parse_cache.CODE_FILES


@pytest.mark.slow
def test_two_workers_match_one(shared_data, tmp_path):
    archive = _brown_zip(shared_data, tmp_path / "Brown.zip", n=3)
    one = load_child_utterances([archive], n_workers=1, use_cache=False)
    two = load_child_utterances([archive], n_workers=2, use_cache=False)
    pd.testing.assert_frame_equal(one.utterances, two.utterances)


def test_bad_sources(tmp_path, shared_data):
    broken = tmp_path / "Broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="not a zip file"):
        load_child_utterances([broken])  # given directly: one clear error
    good = _brown_zip(shared_data, tmp_path / "Brown.zip", n=1)
    both = load_child_utterances([good, broken], n_workers=1, use_cache=False)  # among several: a listed row
    row = both.issues[both.issues["kind"] == "unreadable_source"]
    assert row["source"].tolist() == [str(broken)] and len(both.transcripts) == 1
    bad = tmp_path / "latin1.cha"
    bad.write_bytes("@UTF8\n@Begin\n*CHI:\tcaf\xe9 .\n@End\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        load_child_utterances([bad], use_cache=False)


def test_write_chat_issues_is_tidy(tmp_path, shared_data):
    archive = _brown_zip(shared_data, tmp_path / "Brown.zip", n=1, extra={"Brown/Adam/x.cha": b"\xff\xfe"})
    loaded = load_child_utterances([archive], n_workers=1, use_cache=False)
    path = parse_cache.write_chat_issues(loaded.issues, tmp_path / "chat_issues.csv")
    back = pd.read_csv(path)
    assert list(back.columns) == ["source", "file", "corpus", "utt_index", "speaker", "severity", "kind", "message"]
    assert "x.cha" in set(back["file"].str.split("/").str[-1])

"""`evalsuite tokenizer train|report` through the real entry point (exit codes, files written)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import run_cli

from corpora.tokenizer_report import COLUMNS
from corpora.tokenizers import EOT, load_tokenizer


def test_help_lists_both_commands(capsys):
    assert run_cli(["tokenizer", "--help"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "report" in out


def test_train_then_report(sample, shared_data, tmp_path, capsys):
    tok_dir = tmp_path / "bpe"
    assert run_cli(["tokenizer", "train", str(sample), "--vocab-size", "300", "-o", str(tok_dir), "--no-progress"]) == 0
    tok = load_tokenizer(tok_dir)
    assert 257 < tok.vocab_size <= 300
    assert tok.identity in capsys.readouterr().out

    # a second train into the same folder must not silently replace the tokenizer
    assert run_cli(["tokenizer", "train", str(sample), "--vocab-size", "300", "-o", str(tok_dir), "--no-progress"]) == 2
    assert "--force" in capsys.readouterr().err
    assert run_cli(["tokenizer", "train", str(sample), "--vocab-size", "320", "-o", str(tok_dir),
                "--no-progress", "--force"]) == 0
    assert load_tokenizer(tok_dir).identity != tok.identity

    csv = tmp_path / "out" / "report.csv"
    code = run_cli(["tokenizer", "report", str(sample), "--tokenizer", "gpt2", "--tokenizer", "char",
                "--tokenizer", str(tok_dir), "--csv", str(csv), "--data-dir", str(shared_data)])
    assert code == 0
    out = capsys.readouterr().out
    assert "tok/char" in out and "gpt2" in out
    frame = pd.read_csv(csv, keep_default_na=False)
    assert list(frame.columns) == COLUMNS
    assert list(frame.tokenizer) == ["gpt2", "char", load_tokenizer(tok_dir).name]
    gpt2_row = frame.iloc[0]
    assert gpt2_row.n_documents == 5
    assert 0.15 < float(gpt2_row.tokens_per_char) < 0.35  # English BPE: about 4 characters per token
    assert "built from tinystories_sample" in frame.iloc[1].unk_note
    meta = json.loads((tmp_path / "out" / "report.meta.json").read_text(encoding="utf-8"))
    assert [t["spec"] for t in meta["tokenizers"]] == ["gpt2", "char", str(tok_dir)]
    assert meta["tokenizers"][0]["identity"] == gpt2_row.tokenizer_identity


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, [], "not found"),
        (f"\n{EOT}\n  \n", [], "empty corpus"),
        (b"caf\xe9 au lait", [], "not UTF-8"),
        ("A story.", ["--tokenizer", "no-such-tokenizer"], "unknown tokenizer"),
    ],
    ids=["missing-file", "empty-corpus", "non-utf8", "unknown-tokenizer"],
)
def test_report_bad_input_is_one_line_and_exit_2(tmp_path, capsys, content, args, message):
    corpus = tmp_path / "c.txt"
    if isinstance(content, bytes):
        corpus.write_bytes(content)
    elif content is not None:
        corpus.write_text(content, encoding="utf-8")
    code = run_cli(["tokenizer", "report", str(corpus), *args, "--csv", str(tmp_path / "r.csv")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not (tmp_path / "r.csv").exists()


def test_train_bad_input_exit_2(tmp_path, capsys):
    assert run_cli(["tokenizer", "train", str(tmp_path / "absent.txt"), "-o", str(tmp_path / "t")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "c.txt").write_text("tiny", encoding="utf-8")
    assert run_cli(["tokenizer", "train", str(tmp_path / "c.txt"), "--vocab-size", "50", "-o", str(tmp_path / "t")]) == 2
    assert "at least 258" in capsys.readouterr().err
    # the corpus reader's error surfaces through the Rust trainer that pulls the documents
    (tmp_path / "empty.txt").write_text(f"{EOT}\n", encoding="utf-8")
    assert run_cli(["tokenizer", "train", str(tmp_path / "empty.txt"), "-o", str(tmp_path / "t"), "--no-progress"]) == 2
    assert "empty corpus" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_train_10k_on_a_registry_corpus_is_saved_with_the_corpus(shared_data, monkeypatch, tmp_path, capsys):
    """`tokenizer train tinystories-subset --vocab-size 10000`: fetched like a download, saved in its
    cache folder. HF's trainer stops a little short of 10,000 on this corpus (9,924 at min frequency 2):
    the meta records what was asked."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("EVALSUITE_DATA", str(shared_data))
    monkeypatch.setenv("EVALSUITE_CACHE", str(cache))
    assert run_cli(["tokenizer", "train", "tinystories-subset", "--vocab-size", "10000", "--no-progress"]) == 0
    tok = load_tokenizer(cache / "tinystories-subset" / "tokenizer-bpe10000")
    assert 9_500 <= tok.vocab_size <= 10_000 and tok.unk_id is None
    assert tok.extra_meta["trainer"]["requested_vocab_size"] == 10_000
    assert tok.extra_meta["corpus"]["n_documents"] == 6_499
    assert "saved to" in capsys.readouterr().out


def test_train_default_output_sits_beside_a_local_corpus(sample, tmp_path):
    corpus = tmp_path / "stories.txt"
    corpus.write_bytes(sample.read_bytes())
    assert run_cli(["tokenizer", "train", str(corpus), "--vocab-size", "300", "--no-progress"]) == 0
    assert load_tokenizer(tmp_path / "tokenizer-bpe300").vocab_size <= 300


def test_train_on_a_chat_source_is_a_user_error(capsys):
    assert run_cli(["tokenizer", "train", "childes", "--no-progress"]) == 2
    assert "build-cds" in capsys.readouterr().err

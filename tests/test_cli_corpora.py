"""`evalsuite corpora list|fetch|info`: output, exit codes, and one-line errors (never a traceback)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from loopback_mirror import serve_loopback

from evalsuite.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in err


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich tables: keep long paths and names on one line


def test_unknown_corpus_name(capsys):
    code, out, err = run_cli(capsys, "corpora", "info", "tinystorys")
    assert_one_line_error(code, err, "unknown corpus 'tinystorys' (known: ", "tinystories-v2-valid", "childes-brown")
    code, out, err = run_cli(capsys, "corpora", "fetch", "nope")
    assert_one_line_error(code, err, "unknown corpus 'nope'")


def test_usage_error_is_exit_2_without_traceback(capsys):
    code, _, err = run_cli(capsys, "corpora", "fetch")
    assert code == 2 and "Missing argument" in err and "Traceback" not in err


def test_missing_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "corpora", "info", str(tmp_path / "missing.txt"))
    assert_one_line_error(code, err, "file not found", "missing.txt")


def test_empty_corpus(capsys, tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n<|endoftext|>\n")
    code, _, err = run_cli(capsys, "corpora", "info", str(path))
    assert_one_line_error(code, err, "empty corpus", "empty.txt")


def test_non_utf8_file(capsys, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"a story<|endoftext|>caf\xe9")
    code, _, err = run_cli(capsys, "corpora", "info", str(path))
    assert_one_line_error(code, err, "latin1.txt is not UTF-8", "byte offset 23")


def test_info_on_real_sample(capsys, shared_data):
    code, out, _ = run_cli(capsys, "corpora", "info", str(shared_data / "tinystories" / "tinystories_sample.txt"))
    assert code == 0
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in out.splitlines()
            if line.count("│") == 3}
    assert rows["documents"] == "5" and rows["files"] == "1"
    assert rows["characters"] == "3,709" and rows["words"] == "725"  # counted from the 5 stories
    assert rows["mean characters / document"] == "741.8"


def test_info_on_chat_directory(capsys, shared_data):
    code, out, _ = run_cli(capsys, "corpora", "info", str(shared_data / "childes" / "Brown" / "Eve"))
    assert code == 0 and "CHAT transcripts" in out and "20" in out


def test_list_shows_registry(capsys):
    code, out, _ = run_cli(capsys, "corpora", "list")
    assert code == 0
    for name in ("tinystories-v1-train", "tinystories-v2-valid", "childes-brown", "childes-sachs"):
        assert name in out
    assert "not pinned" in out and "CDLA-Sharing-1.0" in out


def test_info_for_registry_name_explains_unpinned_checksum(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "corpora", "info", "tinystories-v1-valid", "--cache-dir", str(tmp_path))
    assert code == 0
    assert "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/TinyStories-valid.txt" in out
    assert "not pinned" in out and "TinyStories-valid.txt.sha256" in out and "Eldan" in out
    assert "cached" in out and str(tmp_path) in out


def test_fetch_through_mirror_then_info_shows_cache(capsys, tmp_path, shared_data):
    content = (shared_data / "tinystories" / "tinystories_sample.txt").read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    with serve_loopback() as server:
        server.files["TinyStories-valid.txt"] = content
        code, out, err = run_cli(capsys, "corpora", "fetch", "tinystories-v1-valid", "--mirror", server.url,
                                 "--cache-dir", str(tmp_path), "--no-progress")
        assert code == 0, err
        assert f"sha256: {digest}" in out and "not pinned" in out
        cached = tmp_path / "tinystories-v1-valid" / "TinyStories-valid.txt"
        assert cached.read_bytes() == content
        # a second fetch is served from the cache: no request reaches the server
        code, out, _ = run_cli(capsys, "corpora", "fetch", "tinystories-v1-valid", "--mirror", server.url,
                               "--cache-dir", str(tmp_path), "--no-progress")
        assert code == 0 and len(server.requests) == 1
    code, out, _ = run_cli(capsys, "corpora", "info", "tinystories-v1-valid", "--cache-dir", str(tmp_path))
    assert code == 0 and digest in out and "yes" in out
    code, out, _ = run_cli(capsys, "corpora", "info", str(cached))
    assert code == 0 and "documents" in out


def test_fetch_truncated_download_is_one_line_and_resumable(capsys, tmp_path):
    with serve_loopback() as server:
        server.files["TinyStories-valid.txt"] = b"story " * 5000
        server.default_mode = "truncate"
        code, _, err = run_cli(capsys, "corpora", "fetch", "tinystories-v1-valid", "--mirror", server.url,
                               "--cache-dir", str(tmp_path), "--no-progress", "--retries", "1")
        assert_one_line_error(code, err, "stopped after 2000 of 30000 bytes", "resume")
        assert len(server.requests) == 2 and server.requests[1].range == "bytes=1000-"
        code, out, _ = run_cli(capsys, "corpora", "list", "--cache-dir", str(tmp_path))
        assert "partial" in out
        server.default_mode = "normal"
        code, _, err = run_cli(capsys, "corpora", "fetch", "tinystories-v1-valid", "--mirror", server.url,
                               "--cache-dir", str(tmp_path), "--no-progress")
        assert code == 0, err
    assert (tmp_path / "tinystories-v1-valid" / "TinyStories-valid.txt").read_bytes() == b"story " * 5000


def test_fetch_zip_from_directory_mirror_and_unpack(capsys, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Brown/Eve/010600a.cha", "@UTF8\n@Begin\n@End\n")
    (mirror / "Brown.zip").write_bytes(buffer.getvalue())
    monkeypatch.setenv("EVALSUITE_MIRROR", str(mirror))
    code, out, err = run_cli(capsys, "corpora", "fetch", "childes-brown", "--cache-dir", str(tmp_path / "c"),
                             "--no-progress")
    assert code == 0, err
    extracted = tmp_path / "c" / "childes-brown" / "extracted"
    assert f"extracted: {extracted}" in out
    assert (extracted / "Brown" / "Eve" / "010600a.cha").read_text() == "@UTF8\n@Begin\n@End\n"


def test_installed_entry_point_exits_2_without_traceback():
    exe = REPO / ".venv" / "bin" / "evalsuite"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "evalsuite.cli"]
    result = subprocess.run([*command, "corpora", "info", "no-such-corpus"], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown corpus 'no-such-corpus' (known: ")
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""

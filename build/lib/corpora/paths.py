"""Where data, caches and results live. Every location can be overridden."""

from __future__ import annotations

import os
from pathlib import Path

from corpora.errors import UserError

DATA_ENV = "EVALSUITE_DATA"
CACHE_ENV = "EVALSUITE_CACHE"
MIRROR_ENV = "EVALSUITE_MIRROR"


def find_data_dir(explicit: str | os.PathLike | None = None, *, required: bool = True) -> Path | None:
    """The reference-data folder (CHILDES, TinyStories sample, GPT-2 tokenizer files).

    Order: an explicit path, then $EVALSUITE_DATA, then ./shared/data or ../shared/data
    relative to the working directory (where a checkout sits beside the shared folder).
    """
    candidates: list[Path] = []
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise UserError(f"data directory not found: {path}")
        return path
    if os.environ.get(DATA_ENV):
        path = Path(os.environ[DATA_ENV]).expanduser()
        if not path.is_dir():
            raise UserError(f"${DATA_ENV} points to {path}, which is not a directory")
        return path
    candidates += [Path.cwd() / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for path in candidates:
        if path.is_dir():
            return path
    if required:
        raise UserError(
            f"reference data not found: pass --data-dir or set ${DATA_ENV} "
            "(a folder with childes/, tinystories/, gpt2/)"
        )
    return None


def cache_dir() -> Path:
    """Download cache: $EVALSUITE_CACHE or ~/.cache/evalsuite."""
    root = os.environ.get(CACHE_ENV) or (Path.home() / ".cache" / "evalsuite")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path

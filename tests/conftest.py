"""Shared fixtures. Reference data comes from ../shared/data or $EVALSUITE_DATA; tests skip without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    if os.environ.get("EVALSUITE_DATA"):
        path = Path(os.environ["EVALSUITE_DATA"])
        return path if path.is_dir() else None
    path = REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real reference data folder; skips the test with the reason when it is absent."""
    path = _shared_data_dir()
    if path is None:
        pytest.skip("reference data absent: set EVALSUITE_DATA or place shared/data beside the repo")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Downloads never touch the user's real cache."""
    monkeypatch.setenv("EVALSUITE_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a loaded 2-core machine OpenMP spin-waiting makes
    them 10-50x slower: one intra-op thread for the module, restored afterwards.
    Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def sample(shared_data: Path) -> Path:
    """The 5 real TinyStories stories of the reference data."""
    return shared_data / "tinystories" / "tinystories_sample.txt"


def run_cli(argv: list[str]) -> int:
    """Run `evalsuite ARGV` through the real entry point; its exit code."""
    from evalsuite.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code

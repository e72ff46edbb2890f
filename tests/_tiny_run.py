"""One real tiny training run shared by the diagnose, dynamics, figures and report tests.

A trained byte-level BPE (so article tokens exist), a 6-step spinnet-tiny run on TinyStories-like
text written here, with snapshots, evaluations and a metrics stream: every file the trainer writes
is the real thing. Built once per test session (about 10 s on 2 CPU cores) and treated read-only;
tests that plant faults copy it first.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

NAMES = ["Tom", "Lily", "Ben", "Mia", "Sam", "Anna"]
THINGS = ["ball", "kite", "cake", "dog", "cat", "boat", "hat"]
PLACES = ["park", "garden", "house", "forest"]

_CACHE: dict[str, Path] = {}


def story(rng: random.Random) -> str:
    name, friend = rng.sample(NAMES, 2)
    thing, place = rng.choice(THINGS), rng.choice(PLACES)
    return (
        f"Once upon a time, {name} had a {thing}. The {thing} was red and new.\n"
        f"{name} went to the {place} with {friend}. An old man saw them and smiled.\n"
        f"\"What a nice {thing}!\" he said. {name} gave the {thing} to {friend}, and they played all day."
    )


def stories(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [story(rng) for _ in range(n)]


def tiny_run(tmp_path_factory) -> Path:
    """The run directory of the shared tiny run (built on first use in this session)."""
    if "run" in _CACHE and _CACHE["run"].is_dir():
        return _CACHE["run"]
    from corpora.tokenizers import train_bpe
    from trainers.config import load_config
    from trainers.train import train

    root = tmp_path_factory.mktemp("tiny_run")
    docs = stories(60)
    corpus = root / "corpus.txt"
    corpus.write_text("<|endoftext|>".join(docs), encoding="utf-8")
    train_bpe(docs, vocab_size=320).save(root / "tok")
    cfg = load_config("spinnet-tiny", [
        f"train.tokenizer={root / 'tok'}", f"train.data={corpus}", "train.max_iters=6", "train.eval_interval=3",
        "train.log_interval=1", "train.eval_iters=1", "train.batch_size=2", "train.block_size=32",
        "train.warmup_iters=1", "train.snapshot_steps=[3]", f"train.out_dir={root / 'run'}",
    ])
    train(cfg, progress=False)
    _CACHE["run"] = root / "run"
    return root / "run"


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of a run directory (its data/ arrays are still referenced by absolute path)."""
    shutil.copytree(run, dest)
    return dest

"""Shared inputs of the diagnose, dynamics, figures and report tests: one real tiny training run,
a results directory built from it (plus tidy tables shaped as the other commands write them), and
the figures drawn from that directory.

A trained byte-level BPE (so article tokens exist), a 6-step spinnet-tiny run on TinyStories-like
text written here, with snapshots, evaluations and a metrics stream: every file the trainer writes
is the real thing. Built once per test session (about 10 s on 2 CPU cores) and treated read-only;
tests that plant faults copy it first.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

NAMES = ["Tom", "Lily", "Ben", "Mia", "Sam", "Anna"]
THINGS = ["ball", "kite", "cake", "dog", "cat", "boat", "hat"]
PLACES = ["park", "garden", "house", "forest"]

SCORES = ("grammar", "creativity", "consistency", "plot")

_CACHE: dict[str, Any] = {}


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


def _gpt_eval_summary(out_dir):
    """summary.csv as gpt-eval writes it, computed by the real scoring functions from judged stories."""
    from evalsuite.judge.rubric import load_rubric
    from evalsuite.judge.scoring import checkpoint_summary, story_scores

    rubric = load_rubric("tinystories_gpt_eval")
    rng = np.random.default_rng(0)
    rows = []
    for family, offset in (("spinnet", 0.0), ("baseline", 0.6)):
        for i, tokens in enumerate((2e4, 2e5, 2e6)):
            for story in range(12):
                grades = {d: int(np.clip(round(3 + 1.5 * i + offset + rng.normal(0, 1)), 1, 10)) for d in SCORES}
                code = "ABCDEF"[min(5, i + int(rng.integers(0, 2)))]
                rows.append({"checkpoint_id": f"{family}-tiny/step_{i}-abc{i}", "story": f"p{story}#0", "repeat": 0,
                             "status": "ok", **grades, "age_group": code, "age_group_index": float("ABCDEF".index(code)),
                             "checkpoint": f"runs/{family}-tiny/step_{i}", "model_family": family,
                             "val_loss": 3.6 - 0.6 * i - offset / 3, "val_bpc": 2.4 - 0.4 * i, "tokens_seen": tokens})
    table = pd.DataFrame(rows)
    stories = story_scores(table, rubric, ["checkpoint_id", "story"])
    summary = checkpoint_summary(stories, table, rubric, ["checkpoint_id"], n_resamples=200)
    facts = table.groupby("checkpoint_id")[["checkpoint", "model_family", "val_loss", "val_bpc", "tokens_seen"]].first()
    summary = summary.merge(facts.reset_index(), on="checkpoint_id", how="left")
    out_dir.mkdir(parents=True)
    summary.to_csv(out_dir / "summary.csv", index=False)
    meta = {"command": "gpt-eval", "versions": {"openai": "1.0", "pandas": pd.__version__},
            "judge": {"model": "tiny-judge-7b", "base_url": "http://127.0.0.1:8080/v1", "seed": 0, "temperature": 0.0},
            "bootstrap": {"n_resamples": 200, "seed": 0}}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))


def _dim_probe(out_dir):
    rng = np.random.default_rng(1)
    rows = []
    for layer in (0, 1, 2):
        for category in ("NOUN", "VERB", "PRON", "EMOTION", "DIALOGUE", "ALL"):
            for k in range(8):
                ratio = 1.0 if category == "ALL" else float(np.exp(rng.normal(0, 0.2)))
                p_adj = float("nan") if category == "ALL" else float(rng.uniform(0, 0.2))
                rows.append({"model": "probe", "layer": layer, "component": f"e{k}", "category": category,
                             "mean": ratio, "ratio": ratio, "p_adj": p_adj, "significant": p_adj < 0.05})
    out_dir.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(out_dir / "dim_probe.csv", index=False)


def _childes(out_dir):
    """rates.csv computed by childes-compare's own rate_table from analysed units, and checkpoint_dev_ages.csv
    with the columns its age model (evalsuite.childes.developmental_age.apply_model) writes."""
    from evalsuite.childes.compare import CompareConfig, rate_table
    from evalsuite.childes.detectors import ERROR_TYPES

    rng = np.random.default_rng(2)
    units = []
    for i in range(240):
        age = 24 + (i * 7) % 30  # 24..53 months
        units.append({"source": "childes", "child": "Adam" if i % 2 else "Eve", "age_months": float(age),
                      "doc_id": f"f{i % 6}", "hits": [],
                      **{f"has_{t}": bool(rng.random() < 0.25 - age / 400) for t in ERROR_TYPES}})
    for i in range(90):
        step = i % 3
        units.append({"source": "model", "checkpoint_id": f"spinnet-tiny/step_{step}-abc{step}",
                      "model_family": "spinnet", "val_loss": 3.6 - 0.6 * step, "val_bpc": 2.4 - 0.4 * step,
                      "doc_id": f"d{i}", "hits": [], **{f"has_{t}": bool(rng.random() < 0.2 - 0.05 * step)
                                                          for t in ERROR_TYPES}})
    out_dir.mkdir(parents=True)
    rate_table(pd.DataFrame(units), CompareConfig()).to_csv(out_dir / "rates.csv", index=False)
    pd.DataFrame([{"file": None, "checkpoint_id": f"spinnet-tiny/step_{s}-abc{s}", "child": None,
                   "age_months": float("nan"), "predicted_age_months": 30.0 + 8 * s if s < 2 else float("nan"),
                   "ci_low": 26.0 + 8 * s if s < 2 else float("nan"), "ci_high": 35.0 + 8 * s if s < 2 else float("nan"),
                   "in_range": s < 2, "out_of_range_reason": "" if s < 2 else "mlu_m above the training range",
                   "run": "spinnet-tiny", "val_loss": 3.6 - 0.6 * s, "val_bpc": 2.4 - 0.4 * s,
                   "model_family": "spinnet"} for s in range(3)]).to_csv(out_dir / "checkpoint_dev_ages.csv", index=False)


def tiny_results(tmp_path_factory) -> Path:
    """A results directory: dynamics of the tiny run, and tidy tables shaped as gpt-eval, dim-probe,
    childes-compare and the benchmarks write them (built once per session, read-only)."""
    if "results" in _CACHE and _CACHE["results"].is_dir():
        return _CACHE["results"]
    from evalsuite.dynamics import write_dynamics

    root = tmp_path_factory.mktemp("results")
    write_dynamics([tiny_run(tmp_path_factory)], root / "dynamics", checkpoints="all", n_blocks=2)
    _gpt_eval_summary(root / "gpt_eval")
    _dim_probe(root / "dim-probe")
    _childes(root / "childes-compare")
    (root / "benchmarks").mkdir()
    pd.DataFrame({"format": ["safetensors fp32", ".spinnet trits5"], "size_bytes": [1.2e6, 9.0e4],
                  "compression_ratio": [1.0, 13.3]}).to_csv(root / "benchmarks" / "compression.csv", index=False)
    _CACHE["results"] = root
    return root


def tiny_figures(tmp_path_factory) -> list:
    """Every figure drawn from `tiny_results` into its figures/ folder (once per session)."""
    if "figures" not in _CACHE:
        from evalsuite.figures import make_figures

        _CACHE["figures"] = make_figures(tiny_results(tmp_path_factory))
    return _CACHE["figures"]

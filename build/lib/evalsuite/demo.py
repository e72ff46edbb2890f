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


def default_corpus(data_dir: Path | None) -> tuple[Path, str]:
    """The real story text the demo trains on, with a note that says what it is.

    Order: $EVALSUITE_DEMO_CORPUS, then the TinyStories sample in the reference data.
    """
    env = os.environ.get("EVALSUITE_DEMO_CORPUS")
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise UserError(f"$EVALSUITE_DEMO_CORPUS points to {path}, which does not exist")
        return path, f"$EVALSUITE_DEMO_CORPUS ({path})"
    if data_dir is not None:
        sample = data_dir / "tinystories" / "tinystories_sample.txt"
        if sample.is_file():
            return sample, "TinyStories sample from the reference data (5 real stories: a smoke test, not a study)"
    raise UserError(
        "no offline story text found for the demo: pass --corpus FILE (.txt with <|endoftext|> or .jsonl), "
        "or set EVALSUITE_DATA to the reference data folder"
    )


def plan_demo(
    out_dir: Path,
    corpus: Path | None = None,
    data_dir: Path | None = None,
    judge_base_url: str | None = None,
    judge_model: str | None = None,
    max_iters: int = 300,
    n_prompts: int = 12,
    childes_files: int = 0,
) -> DemoPlan:
    """Build the demo's list of commands. `childes_files=0` means all CHILDES files found."""
    data = find_data_dir(data_dir, required=False) if data_dir is None else find_data_dir(data_dir)
    if corpus is None:
        corpus, note = default_corpus(data)
    else:
        if not corpus.exists():
            raise UserError(f"corpus not found: {corpus}")
        note = f"user corpus ({corpus})"
    runs = out_dir / "runs"
    res = out_dir / "results"
    data_args = ["--data-dir", str(data)] if data is not None else []
    steps: list[DemoStep] = []

    families = ("spinnet", "baseline")
    for family in families:
        steps.append(DemoStep(
            name=f"train {family}-tiny",
            args=["train", "--config", f"{family}-tiny", "--data", str(corpus), "--out-dir", str(runs / family),
                  "--set", f"train.max_iters={max_iters}", "--set", f"train.snapshot_steps=[{max_iters // 3},{2 * max_iters // 3}]",
                  "--no-progress"],
            outputs=[str(runs / family)],
        ))
    samples = res / "generate" / "samples.jsonl"
    checkpoints: list[str] = []
    for family in families:
        checkpoints += [str(runs / family / f"step_{max_iters // 3:07d}"), str(runs / family / f"step_{2 * max_iters // 3:07d}"),
                        str(runs / family / "best")]
    steps.append(DemoStep(
        name="generate stories",
        args=["generate", *checkpoints, "--out", str(samples), "--limit", str(n_prompts), "--max-new-tokens", "200"],
        outputs=[str(samples)],
    ))
    steps.append(DemoStep(
        name="compress SpinNet",
        args=["compress", str(runs / "spinnet" / "best"), "-o", str(res / "compress" / "spinnet-tiny.spinnet")],
        outputs=[str(res / "compress")],
    ))
    steps.append(DemoStep(
        name="diagnose SpinNet",
        args=["diagnose", str(runs / "spinnet" / "best"), "--samples", str(samples), "--out", str(res / "diagnose")],
        outputs=[str(res / "diagnose")],
    ))
    steps.append(DemoStep(
        name="dim-probe SpinNet",
        args=["dim-probe", str(runs / "spinnet" / "best"), "--text", str(samples), "--out", str(res / "dim_probe"),
              "--baseline", str(runs / "baseline" / "best")],
        outputs=[str(res / "dim_probe")],
    ))
    childes = data / "childes" / "Brown" if data is not None else None
    childes_step = DemoStep(
        name="childes-compare",
        args=["childes-compare", "--samples", str(samples), "--out", str(res / "childes"), *data_args]
        + (["--max-files", str(childes_files)] if childes_files else []),
        outputs=[str(res / "childes")],
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
        args=["gpt-eval", str(samples), "--out", str(res / "gpt_eval")],
        required=False,
        outputs=[str(res / "gpt_eval")],
    )
    if judge_base_url:
        judge_step.args += ["--base-url", judge_base_url] + (["--model", judge_model] if judge_model else [])
    else:
        judge_step.skip_reason = (
            "no judge: no local LLM can be installed from the package registries on this machine, and no "
            "--judge-base-url was given. Score the stories with any OpenAI-compatible server: "
            f"`evalsuite gpt-eval {samples} --base-url URL --model NAME` (key from OPENAI_API_KEY)"
        )
    steps.append(judge_step)
    steps.append(DemoStep(name="figures", args=["figures", str(res), "-o", str(res / "figures")],
                          outputs=[str(res / "figures")]))
    steps.append(DemoStep(name="report", args=["report", str(res)], outputs=[str(res / "report.html")]))
    return DemoPlan(out_dir=out_dir, corpus=corpus, corpus_note=note, data_dir=data, steps=steps)

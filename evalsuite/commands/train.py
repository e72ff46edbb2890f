"""CLI command: `evalsuite train`.

A thin layer over trainers.train.train: it returns a dataclass, this prints tables. Torch is imported inside the command functions so `evalsuite --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from corpora.errors import UserError


def register(app: typer.Typer) -> None:
    """Add `train` to the root app."""
    app.command("train")(train_command)


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def train_command(
    config: str | None = typer.Option(
        None, "--config", "-c", help="Preset name (spinnet-28m, baseline-28m, spinnet-tiny, ...) or a YAML file."
    ),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Override one setting: section.key=value (repeatable), e.g. --set train.lr=3e-4."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in -o/--out from its latest/ checkpoint."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory (default: train.out_dir)."),
    out_dir_alias: Path | None = typer.Option(None, "--out-dir", hidden=True, help="Old spelling of --out."),
    data: str | None = typer.Option(
        None, "--data", help="Training data (same as --set train.data=...): a corpus or a tokenized .bin/dir."
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Reference data folder (for the gpt2 tokenizer)."),
    time_limit_s: float | None = typer.Option(
        None, "--time-limit-s", help="Checkpoint and stop after this many seconds (continue later with --resume)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    threads: int | None = typer.Option(
        None, "--threads", min=1,
        help="CPU threads for torch (default: torch's). Small models on a busy machine train faster with 1.",
    ),
    list_presets: bool = typer.Option(
        False, "--list-presets", help="Print every preset with its embedding and non-embedding parameters, and exit."
    ),
) -> None:
    """Train a SpinNet or baseline model; writes checkpoints, metrics_stream.jsonl and config.yaml."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from evalsuite.commands._options import resolve_out
    from trainers.config import load_config
    from trainers.train import CONFIG_YAML, RunInfo, train

    out_dir = resolve_out(out, out_dir_alias, "--out-dir")
    console = Console(stderr=False)
    if list_presets:
        _print_presets(console)
        return
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if data_dir is not None:
        if not data_dir.is_dir():
            raise UserError(f"data directory not found: {data_dir}")
        os.environ["EVALSUITE_DATA"] = str(data_dir)
    extra = list(overrides or [])
    if data is not None:
        extra.append(f"train.data={data}")
    if out_dir is not None:
        extra.append(f"train.out_dir={out_dir}")
    if config is None:
        saved = (out_dir / CONFIG_YAML) if out_dir is not None else None
        if not (resume and saved is not None and saved.is_file()):
            raise UserError("--config is required (a preset or YAML), except with --resume --out RUN_DIR")
        config = str(saved)
    run_config = load_config(config, extra)

    tcfg = run_config.train
    run_dir = Path(tcfg.out_dir).expanduser()
    if resume and not (run_dir / CONFIG_YAML).is_file() and not (run_dir / "latest").is_dir():
        # a mistyped folder must not quietly become a new run from step 0
        raise UserError(f"--resume: {run_dir} is not a run folder (no latest/ and no {CONFIG_YAML}); "
                        "check the name, or drop --resume to start a new run there")

    def on_start(info: RunInfo) -> None:
        table = Table(title=f"train {info.model_family} -> {info.run_dir}", show_header=False)
        rows = [
            ("parameters", f"{_fmt_int(info.n_params)} ({_fmt_int(info.n_params_non_embedding)} non-embedding)"),
            ("tokenizer", info.tokenizer),
            ("train tokens", _fmt_int(info.train_tokens)),
            ("val tokens", _fmt_int(info.val_tokens)),
            # tokens_per_step already counts every process: spell out its factors, not a multiplier
            ("tokens per step", f"{_fmt_int(info.tokens_per_step)} over {info.world_size} process(es) "
             f"({tcfg.batch_size} x {tcfg.block_size} x {tcfg.grad_accum} accum each)"),
            ("planned tokens", f"{_fmt_int(info.planned_tokens)} over {_fmt_int(info.max_iters)} steps"),
            ("device / dtype", f"{info.device} / {info.dtype}"),
            ("start step", f"{info.start_step}{' (resumed)' if info.resumed else ''}"),
        ]
        for key, value in rows:
            table.add_row(key, value)
        console.print(table)
        for note in info.notes:
            console.print(f"note: {escape(note)}")

    result = train(run_config, resume=resume, progress=progress, on_start=on_start, time_limit_s=time_limit_s)
    if result.info.world_size > 1 and int(os.environ.get("RANK", "0")) != 0:
        return
    meta_path = _write_run_meta(run_config, result)
    summary = Table(title="result", show_header=False)
    steps = f"{_fmt_int(result.steps)} of {_fmt_int(result.info.max_iters)}"
    if result.stopped_early:
        steps += " (stopped at the time limit: continue with --resume)"
    summary.add_row("steps", steps)
    summary.add_row("tokens seen", _fmt_int(result.tokens_seen))
    if result.val_loss is not None:
        summary.add_row("final val loss", f"{result.val_loss:.4f} nats/token")
        summary.add_row("final val bpc", f"{result.val_bpc:.4f} bits/char")
    if result.best_val_loss is not None:
        summary.add_row("best val loss", f"{result.best_val_loss:.4f} nats/token ({result.best_val_bpc:.4f} bpc)")
    summary.add_row("run dir", escape(str(result.run_dir)))
    summary.add_row("wall time", f"{result.elapsed_s:.1f} s")
    console.print(summary)
    console.print(f"meta: {escape(str(meta_path))}")


def _print_presets(console: object) -> None:
    from rich.table import Table

    from trainers.config import list_presets
    from trainers.model import preset_parameter_counts

    table = Table(title="presets (parameters measured on the built model)")
    for column in ("preset", "family", "vocab", "embedding", "non-embedding"):
        table.add_column(column, justify="left" if column in ("preset", "family") else "right", no_wrap=True)
    for name in list_presets():
        row = preset_parameter_counts(name)

        def fmt(v: int | None) -> str:
            return _fmt_int(v) if v is not None else "corpus"

        table.add_row(name, row["family"], fmt(row["vocab_size"]), fmt(row["embedding"]), _fmt_int(row["non_embedding"]))
    console.print(table)  # type: ignore[attr-defined]
    console.print("vocab 'corpus': a char vocabulary taken from the training text; bpe:N: at most N "  # type: ignore[attr-defined]
                  "(the trained BPE can be smaller when the corpus runs out of pairs; embedding = vocab x d_model)")


_TRAIN = "trainers.train.train"
METRIC_COLUMNS: dict[str, str] = {
    "step": "optimizer step of the log line",
    "tokens_seen": "training tokens seen so far (all processes)",
    "train_loss": "cross-entropy of the step's batch, nats/token",
    "train_objective": "the loss the optimizer minimised (train_loss with any article weighting)",
    "val_loss": "validation cross-entropy, nats/token (null between evaluations)",
    "val_bpc": "val_loss in bits per character of the validation text (corpora.tokenized.bits_per_char)",
    "lr": "learning rate at the step",
    "grad_norm": "global gradient norm before clipping",
    "tokens_per_s": "training throughput",
    "article_loss": "validation loss on article tokens (the/a/an)",
    "other_loss": "validation loss on the other tokens",
    "article_other_ratio": "article_loss / other_loss",
    "component_grad_norms": "SpinNet: gradient norm per algebra component (list of n)",
    "val_tokens": "validation tokens scored (the fixed evaluation set; null between evaluations)",
    "val_loss_se": "standard error of val_loss over the evaluation blocks (sd of block means / sqrt(blocks))",
}


def _write_run_meta(run_config, result) -> Path:
    """`<run>/meta.json` in the evalsuite.results schema: the command line, code version, resolved
    config, data inputs, seed, and the metrics stream's columns."""
    from dataclasses import asdict

    from evalsuite.results import build_meta, column, describe_columns, write_meta
    from trainers.metrics import METRIC_KEYS, METRICS_FILE

    definitions = {k: column(METRIC_COLUMNS[k], _TRAIN) for k in METRIC_COLUMNS}
    config = asdict(run_config)
    data = Path(str(run_config.train.data)) if run_config.train.data else None
    meta = build_meta(
        "train", config=config, inputs=[data] if data is not None and data.exists() else [],
        seeds={"train.seed": run_config.train.seed},
        columns={METRICS_FILE: describe_columns(METRIC_KEYS, definitions, METRICS_FILE)},
        outputs=[METRICS_FILE, "config.yaml"],
        extra={"steps": result.steps, "tokens_seen": result.tokens_seen, "val_loss": result.val_loss,
               "val_bpc": result.val_bpc, "best_val_loss": result.best_val_loss, "stopped_early": result.stopped_early},
    )
    return write_meta(Path(result.run_dir), meta)

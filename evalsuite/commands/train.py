"""CLI commands: `evalsuite train` and `evalsuite compress`.

Thin layers over trainers.train.train and trainers.compress.compress: those return dataclasses,
these print tables. Torch is imported inside the command functions so `evalsuite --help` stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from corpora.errors import UserError

BITS_TO_PACKING = {"1.6": "trits5", "2": "trits2"}


def register(app: typer.Typer) -> None:
    """Add `train` and `compress` to the root app."""
    app.command("train")(train_command)
    app.command("compress")(compress_command)


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def train_command(
    config: str | None = typer.Option(
        None, "--config", "-c", help="Preset name (spinnet-28m, baseline-28m, spinnet-tiny, ...) or a YAML file."
    ),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Override one setting: section.key=value (repeatable), e.g. --set train.lr=3e-4."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out-dir from its latest/ checkpoint."),
    out_dir: Path | None = typer.Option(None, "--out-dir", "-o", help="Run directory (default: train.out_dir)."),
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
    from rich.table import Table

    from trainers.config import load_config
    from trainers.train import CONFIG_YAML, RunInfo, train

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
            raise UserError("--config is required (a preset or YAML), except with --resume --out-dir RUN_DIR")
        config = str(saved)
    run_config = load_config(config, extra)

    tcfg = run_config.train

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
            console.print(f"note: {note}")

    result = train(run_config, resume=resume, progress=progress, on_start=on_start, time_limit_s=time_limit_s)
    if result.info.world_size > 1 and int(os.environ.get("RANK", "0")) != 0:
        return
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
    summary.add_row("run dir", str(result.run_dir))
    summary.add_row("wall time", f"{result.elapsed_s:.1f} s")
    console.print(summary)


def _print_presets(console: object) -> None:
    from rich.table import Table

    from trainers.config import list_presets, preset_parameter_counts

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


def compress_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint directory, or a run directory (uses best/)."),
    output: Path = typer.Option(..., "--output", "-o", help="The .spinnet file to write."),
    bits: str = typer.Option("1.6", "--bits", help="1.6 (5 trits per byte) or 2 (4 trits per byte)."),
    float_dtype: str = typer.Option("float16", "--float-dtype", help="Embeddings and norms: float16 or float32."),
) -> None:
    """Pack a ternary SpinNet checkpoint into a .spinnet file and print honest size ratios."""
    from rich.console import Console
    from rich.table import Table

    from trainers.compress import compress

    if bits not in BITS_TO_PACKING:
        raise UserError(f"--bits must be 1.6 or 2, got {bits!r}")
    if float_dtype not in ("float16", "float32"):
        raise UserError(f"--float-dtype must be float16 or float32, got {float_dtype!r}")
    if output.suffix != ".spinnet":
        raise UserError(f"the output file must end in .spinnet, got {output.name}")
    report = compress(checkpoint, output, packing=BITS_TO_PACKING[bits], float_dtype=float_dtype)  # type: ignore[arg-type]
    table = Table(title=f"compressed {checkpoint} -> {output}", show_header=False)
    mib = 1024 * 1024
    rows = [
        ("file size", f"{report.file_bytes / mib:.3f} MiB ({_fmt_int(report.file_bytes)} bytes)"),
        ("ternary weights", f"{_fmt_int(report.n_ternary_weights)} packed as {report.packing}"),
        ("bits per parameter (whole file)", f"{report.bits_per_parameter:.3f} "
         f"({_fmt_int(report.n_parameters)} parameters)"),
        ("bits per ternary weight", f"{report.bits_per_ternary_weight:.4f} (limit log2(3) = 1.585)"),
        ("  with per-layer scales", f"{report.bits_per_ternary_weight_with_scales:.4f}"),
        ("other tensors", f"{report.float_dtype}, {report.float_bytes / mib:.3f} MiB "
         f"({'norms, mixer' if report.embedding_bytes else 'embeddings, norms, mixer'})"),
        *([("quantized embedding", f"{report.embedding_bytes / mib:.3f} MiB (codes + float32 row scales)")]
          if report.embedding_bytes else []),
        (
            "vs fp32 weights only",
            f"{report.ratio_vs_fp32_weights:.2f}x smaller ({report.fp32_weights_bytes / mib:.3f} MiB "
            f"= 4 bytes x {_fmt_int(report.n_parameters)} parameters)",
        ),
        (
            "  ternary layers alone",
            f"{report.ratio_ternary_vs_fp32:.2f}x smaller than their fp32 weights",
        ),
    ]
    if report.checkpoint_dir_bytes is not None:
        rows.append((
            "vs training checkpoint",
            f"{report.ratio_vs_checkpoint:.2f}x smaller ({report.checkpoint_dir_bytes / mib:.3f} MiB: "
            "weights, optimizer state, config, tokenizer)",
        ))
    if report.safetensors_bytes is not None:
        rows.append(("vs model.safetensors", f"{report.ratio_vs_safetensors:.2f}x smaller"))
    rows.append(("max |logit diff| vs checkpoint", f"{report.max_abs_logit_diff_vs_checkpoint:.3g} "
                 f"(from {report.float_dtype} rounding; vs rounded reference "
                 f"{report.max_abs_logit_diff_vs_rounded_reference:.3g})"))
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)
    report_path = output.with_name(output.name + ".report.json")
    report_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    Console().print(f"report: {report_path}")

"""CLI command: `evalsuite compress` (a ternary SpinNet checkpoint -> a .spinnet file).

A thin layer over trainers.compress.compress: it returns a report dataclass, this prints it.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from corpora.errors import UserError

BITS_TO_PACKING = {"1.6": "trits5", "2": "trits2"}


def register(app: typer.Typer) -> None:
    """Add `compress` to the root app."""
    app.command("compress")(compress_command)


def _fmt_int(n: int) -> str:
    return f"{n:,}"


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
        ("bits per ternary weight", f"{report.bits_per_ternary_weight:.4f} (limit log2(3) = 1.585)"),
        ("  with per-layer scales", f"{report.bits_per_ternary_weight_with_scales:.4f}"),
        ("other tensors", f"{report.float_dtype}, {report.float_bytes / mib:.3f} MiB (embeddings, norms)"),
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

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
    out: Path | None = typer.Option(None, "--out", "-o", help="The .spinnet file to write (required)."),
    output_alias: Path | None = typer.Option(None, "--output", hidden=True, help="Old spelling of --out."),
    bits: str = typer.Option("1.6", "--bits", help="1.6 (5 trits per byte) or 2 (4 trits per byte)."),
    float_dtype: str = typer.Option("float16", "--float-dtype", help="Embeddings and norms: float16 or float32."),
) -> None:
    """Pack a ternary SpinNet checkpoint into a .spinnet file and print honest size ratios."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from evalsuite.commands._options import resolve_out
    from evalsuite.results import build_meta, describe_columns, write_meta, write_text_atomic
    from trainers.compress import compress

    output = resolve_out(out, output_alias, "--output")
    if output is None:
        raise UserError("missing the output file: -o/--out MODEL.spinnet")

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
    report_path = write_text_atomic(output.with_name(output.name + ".report.json"),
                                    json.dumps(report.to_dict(), indent=2) + "\n")
    meta = build_meta(
        "compress", config={"packing": BITS_TO_PACKING[bits], "float_dtype": float_dtype}, inputs=[checkpoint],
        columns={report_path.name: describe_columns(report.to_dict(), _report_columns(), report_path.name)},
        outputs=[output.name, report_path.name],
    )
    meta_path = write_meta(output.with_name(output.name + ".meta.json"), meta)
    Console().print(escape(f"report: {report_path}; meta: {meta_path}"))


_COMPRESS = "trainers.compress.compress"
REPORT_FIELDS: dict[str, str] = {
    "path": "the .spinnet file written",
    "file_bytes": "size of the .spinnet file on disk",
    "packing": "trits5 (5 trits per byte, 1.6 bits) or trits2 (2 bits)",
    "float_dtype": "dtype of the non-ternary tensors (embeddings unless quantized, norms, mixer)",
    "n_parameters": "parameters of the model (latent float weights counted once)",
    "n_ternary_weights": "ternary weights packed",
    "ternary_bytes": "bytes of the packed trits",
    "scale_bytes": "bytes of the per-layer float32 scales",
    "float_bytes": "bytes of the non-ternary tensors in float_dtype (embeddings when not quantized, norms, mixer)",
    "embedding_bytes": "bytes of the quantized embedding codes + float32 row scales (0 when embedding_quant is none)",
    "bits_per_parameter": "8 x file_bytes / n_parameters: the whole file, everything included",
    "file_payload_bytes": "bytes of the embedded tokenizer and other files",
    "header_bytes": "bytes of the preamble and JSON header",
    "bits_per_ternary_weight": "8 x ternary_bytes / n_ternary_weights",
    "bits_per_ternary_weight_with_scales": "8 x (ternary_bytes + scale_bytes) / n_ternary_weights",
    "fp32_weights_bytes": "4 bytes x n_parameters (a float32 weights-only file)",
    "ratio_vs_fp32_weights": "fp32_weights_bytes / file_bytes",
    "fp32_block_weights_bytes": "4 bytes x the ternary layers' parameters",
    "ratio_ternary_vs_fp32": "fp32_block_weights_bytes / (ternary_bytes + scale_bytes)",
    "checkpoint_dir": "the training checkpoint compressed",
    "checkpoint_dir_bytes": "bytes of every file of the training checkpoint directory",
    "ratio_vs_checkpoint": "checkpoint_dir_bytes / file_bytes",
    "safetensors_bytes": "bytes of model.safetensors",
    "ratio_vs_safetensors": "safetensors_bytes / file_bytes",
    "max_abs_logit_diff_vs_checkpoint": "max |logit difference| on a probe batch, .spinnet vs the checkpoint",
    "max_abs_logit_diff_vs_rounded_reference": "the same vs the checkpoint with floats rounded to float_dtype",
}


def _report_columns() -> dict[str, dict[str, str]]:
    from evalsuite.results import column

    return {name: column(text, _COMPRESS) for name, text in REPORT_FIELDS.items()}

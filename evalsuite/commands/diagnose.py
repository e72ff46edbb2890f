"""CLI command: `evalsuite diagnose` (checks on a checkpoint).

A thin layer over evalsuite.diagnose.diagnose.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import typer

STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def register(app: typer.Typer) -> None:
    """Add `diagnose` to the root app."""
    app.command("diagnose")(diagnose_command)


def _default_csv(ckpt: Path) -> Path:
    path = ckpt.expanduser().resolve()
    label = "-".join(p for p in (path.parent.name, path.name) if p) if path.name in ("best", "latest") or \
        path.name.startswith("step_") else path.stem
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") or "checkpoint"
    from evalsuite.results import results_dir_for

    return results_dir_for("results", "diagnose") / f"{label}.csv"


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def diagnose_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint directory, a run directory (uses best/), or a .spinnet file."),
    samples: Path | None = typer.Option(None, "--samples", "-s", help="samples.jsonl from `evalsuite generate` (article check)."),
    corpus: Path | None = typer.Option(
        None, "--corpus", help="Training corpus to compare with: a tokenized .bin, or raw text (default: the run's train.bin)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="CSV to write (default results/diagnose/<run>-<checkpoint>.csv; a .meta.json goes beside it)."
    ),
    output: Path | None = typer.Option(None, "--output", hidden=True, help="Old spelling of --out."),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 1 when any check warns or fails."),
) -> None:
    """The checks to run when a model writes bad stories: vocabulary, epochs, losses, lr schedule, identities, articles."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from evalsuite.commands._options import resolve_out
    from evalsuite.diagnose import diagnose, diagnose_meta
    from evalsuite.results import write_meta, write_table

    frame = diagnose(checkpoint, samples=samples, corpus=corpus)
    csv = resolve_out(out, output, "--output") or _default_csv(checkpoint)
    write_table(frame, csv)
    meta_path = write_meta(csv.with_suffix(".meta.json"),
                           diagnose_meta(frame, samples=samples, corpus=corpus, table_name=csv.name))

    table = Table(title=escape(f"diagnose {frame.attrs.get('checkpoint')}"), show_lines=True)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("value", max_width=18, overflow="fold")
    table.add_column("detail / advice", overflow="fold", ratio=1)
    for row in frame.itertuples(index=False):
        style = STATUS_STYLE[row.status]
        # user text and bracketed names (article_frequency[the]) are escaped, or rich eats them as markup
        text = escape(row.detail) + (f"\n[italic]{escape(row.advice)}[/italic]" if row.advice and row.status != "pass" else "")
        value = _fmt(row.value) + (f" {row.unit}" if row.unit and _fmt(row.value) else "")
        table.add_row(escape(row.check), f"[{style}]{row.status}[/{style}]", escape(value), text)
    console = Console()
    console.print(table)
    counts = frame["status"].value_counts()
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("pass", "warn", "fail", "skip"))
    console.print(f"{summary}; wrote {escape(str(csv))} and {escape(str(meta_path))}")
    if strict and (counts.get("warn", 0) or counts.get("fail", 0)):
        raise typer.Exit(1)

"""CLI command: `evalsuite report` (one static HTML page over a results folder).

A thin layer over evalsuite.report.build_report.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `report` to the root app."""
    app.command("report")(report_command)


def report_command(
    results_dir: Path = typer.Argument(..., help="Results directory to report on."),
    out: Path | None = typer.Option(None, "--out", "-o", help="HTML file to write (default RESULTS_DIR/report.html)."),
    output: Path | None = typer.Option(None, "--output", hidden=True, help="Old spelling of --out."),
    embed: bool = typer.Option(False, "--embed/--link", help="Inline the images (one self-contained file) or link them."),
    redraw: bool = typer.Option(True, "--redraw/--no-redraw", help="Redraw the figures first, or use those already in RESULTS_DIR/figures."),
    top_rows: int = typer.Option(10, "--top-rows", min=1, help="Rows of each table shown on the page."),
) -> None:
    """One static HTML page with all figures, the tidy tables and the runs' metadata."""
    from evalsuite.commands._options import resolve_out
    from evalsuite.commands.figures import print_figures
    from evalsuite.report import build_report

    output = resolve_out(out, output, "--output")

    result = build_report(results_dir, output, make_figures=redraw, embed=embed, top_rows=top_rows)
    if redraw:
        print_figures(result.figures)
    typer.echo(f"wrote {result.path} ({len(result.tables)} tables, {len(result.metas)} metadata files)")

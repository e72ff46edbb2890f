"""CLI commands: `evalsuite figures` (paper figures from saved results) and `evalsuite report` (HTML page).

Thin layers over evalsuite.figures.make_figures and evalsuite.report.build_report.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `figures` and `report` to the root app."""
    app.command("figures")(figures_command)
    app.command("report")(report_command)


def _print_figures(results: list) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="figures")
    table.add_column("figure", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("files / reason", overflow="fold", ratio=1)
    for fig in results:
        if fig.skipped:
            table.add_row(fig.name, "[yellow]skipped[/yellow]", fig.skipped)
        else:
            table.add_row(fig.name, "[green]drawn[/green]", ", ".join(str(p) for p in fig.paths))
    Console().print(table)


def figures_command(
    results_dir: Path = typer.Argument(..., help="Results directory (holding dynamics/, gpt_eval/, dim-probe/, ...)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Where to write the figures (default RESULTS_DIR/figures)."),
    only: list[str] | None = typer.Option(None, "--only", help="Draw only this figure (repeatable)."),
) -> None:
    """Draw the paper's figures (PDF + PNG) from saved tidy results; never re-runs a model."""
    from evalsuite.figures import make_figures

    results = make_figures(results_dir, output, only=only)
    _print_figures(results)
    drawn = sum(1 for r in results if not r.skipped)
    typer.echo(f"{drawn} of {len(results)} figures drawn into {output or results_dir / 'figures'}")


def report_command(
    results_dir: Path = typer.Argument(..., help="Results directory to report on."),
    output: Path | None = typer.Option(None, "--output", "-o", help="HTML file to write (default RESULTS_DIR/report.html)."),
    embed: bool = typer.Option(False, "--embed/--link", help="Inline the images (one self-contained file) or link them."),
    redraw: bool = typer.Option(True, "--redraw/--no-redraw", help="Redraw the figures first, or use those already in RESULTS_DIR/figures."),
    top_rows: int = typer.Option(10, "--top-rows", min=1, help="Rows of each table shown on the page."),
) -> None:
    """One static HTML page with all figures, the tidy tables and the runs' metadata."""
    from evalsuite.report import build_report

    result = build_report(results_dir, output, make_figures=redraw, embed=embed, top_rows=top_rows)
    if redraw:
        _print_figures(result.figures)
    typer.echo(f"wrote {result.path} ({len(result.tables)} tables, {len(result.metas)} metadata files)")

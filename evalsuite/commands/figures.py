"""CLI command: `evalsuite figures` (paper figures from saved results).

A thin layer over evalsuite.figures.make_figures.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `figures` to the root app."""
    app.command("figures")(figures_command)


def print_figures(results: list) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="figures")
    table.add_column("figure", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("files / reason", overflow="fold", ratio=1)
    for fig in results:  # reasons and paths are user text: escaped, never read as markup
        if fig.skipped:
            table.add_row(fig.name, "[yellow]skipped[/yellow]", escape(fig.skipped))
        else:
            table.add_row(fig.name, "[green]drawn[/green]", escape(", ".join(str(p) for p in fig.paths)))
    Console().print(table)


def figures_command(
    results_dir: Path = typer.Argument(..., help="Results directory (holding dynamics/, gpt_eval/, dim-probe/, ...)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to write the figures (default RESULTS_DIR/figures)."),
    output: Path | None = typer.Option(None, "--output", hidden=True, help="Old spelling of --out."),
    only: list[str] | None = typer.Option(None, "--only", help="Draw only this figure (repeatable)."),
) -> None:
    """Draw the paper's figures (PDF + PNG) from saved tidy results; never re-runs a model."""
    from corpora.errors import UserError
    from evalsuite.commands._options import resolve_out
    from evalsuite.figures import make_figures
    from evalsuite.results import results_dir_for

    output = resolve_out(out, output, "--output")
    results = make_figures(results_dir, output, only=only)
    print_figures(results)
    drawn = sum(1 for r in results if not r.skipped)
    if drawn == 0:  # nothing drawn is a failure to report, not a success with a table of skips
        why = results[0].skipped if len(results) == 1 else "each figure's reason is in the table above"
        raise UserError(f"no figure could be drawn from {results_dir}: {why}")
    # provenance of the figures is figures.json beside them (inputs, captions), written by make_figures
    typer.echo(f"{drawn} of {len(results)} figures drawn into {output or results_dir_for(results_dir, 'figures')}")



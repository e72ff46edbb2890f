"""CLI command: `evalsuite figures` (paper figures from saved results).

A thin layer over evalsuite.figures.make_figures.
"""

from __future__ import annotations

from pathlib import Path

import typer

from corpora.errors import UserError


def register(app: typer.Typer) -> None:
    """Add `figures` to the root app."""
    app.command("figures")(figures_command)


def print_figures(results: list) -> None:
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
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to write the figures (default RESULTS_DIR/figures)."),
    output: Path | None = typer.Option(None, "--output", hidden=True, help="Old spelling of --out."),
    only: list[str] | None = typer.Option(None, "--only", help="Draw only this figure (repeatable)."),
) -> None:
    """Draw the paper's figures (PDF + PNG) from saved tidy results; never re-runs a model."""
    from evalsuite.commands._options import resolve_out
    from evalsuite.figures import MANIFEST, make_figures
    from evalsuite.results import build_meta, describe_columns, results_dir_for, write_meta

    output = resolve_out(out, output, "--output")

    target = output or results_dir_for(results_dir, "figures")
    existing = Path(target) / "meta.json"
    if existing.is_file() and _meta_command(existing) != "figures":  # never overwrite another command's
        raise UserError(f"{existing} belongs to another command; draw the figures into their own folder (-o DIR)")
    results = make_figures(results_dir, output, only=only)
    print_figures(results)
    drawn = sum(1 for r in results if not r.skipped)
    if drawn:
        inputs = sorted({p for r in results for p in r.inputs})
        meta = build_meta("figures", config={"results_dir": str(results_dir), "only": only or None}, inputs=inputs,
                          columns={MANIFEST: describe_columns(MANIFEST_FIELDS, _manifest_columns(), MANIFEST)},
                          outputs=[MANIFEST, *sorted(p.name for r in results for p in r.paths)])
        write_meta(target, meta)
    typer.echo(f"{drawn} of {len(results)} figures drawn into {target}")


MANIFEST_FIELDS = {
    "name": "figure name (evalsuite.figures.FIGURES)",
    "paths": "the PDF and PNG files drawn",
    "skipped": "why the figure was not drawn (null when drawn)",
    "inputs": "the result tables it was drawn from",
    "caption": "what the figure shows, with its units and intervals",
}


def _meta_command(path: Path) -> str | None:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8")).get("command")
    except (OSError, ValueError, AttributeError):
        return None


def _manifest_columns() -> dict[str, dict[str, str]]:
    from evalsuite.results import column

    return {k: column(v, "evalsuite.figures.make_figures") for k, v in MANIFEST_FIELDS.items()}

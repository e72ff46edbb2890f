"""CLI: `evalsuite gpt-eval` scores stories with an LLM judge (TinyStories GPT-Eval rubric by default).

Inputs are samples.jsonl files (from `evalsuite generate`) or checkpoints, which are turned into
samples first with the generation options. `--validate` instead scores real TinyStories text and
controlled corruptions of it, and reports whether the judge ranks clean above corrupted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `gpt-eval` to the root app."""
    app.command("gpt-eval")(gpt_eval)


def gpt_eval(
    inputs: list[Path] = typer.Argument(None, help="samples.jsonl files and/or checkpoints (dirs, run dirs, .spinnet)."),
    base_url: str = typer.Option(None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1. "
                                  "Omitted: the embedded local judge (`pip install -e '.\\[judge]'` or --judge-gguf)."),
    model: str = typer.Option(None, help="Judge model name on that server."),
    rubric: str = typer.Option("tinystories_gpt_eval", help="Rubric name in rubrics/ or a YAML path."),
    repeats: int = typer.Option(1, help="Score each story K times (test-retest agreement for K >= 2)."),
    temperature: float = typer.Option(0.0, help="Judge sampling temperature."),
    top_p: float = typer.Option(1.0, help="Judge top_p."),
    max_tokens: int = typer.Option(512, help="Most tokens in one judge reply."),
    seed: int = typer.Option(0, help="Judge seed (sent to servers that honour it)."),
    logprobs: bool = typer.Option(False, "--logprobs/--no-logprobs", help="Ask for top logprobs; adds G-Eval-style expected grades."),
    top_logprobs: int = typer.Option(10, help="Alternatives per token with --logprobs."),
    response_format: str = typer.Option("auto", help="auto (json_schema, falling back to json_object), json_schema or json_object."),
    concurrency: int = typer.Option(4, help="Most judge requests in flight."),
    timeout: float = typer.Option(120.0, help="Seconds before a judge request times out (then retried)."),
    max_retries: int = typer.Option(6, help="Retries after 429/5xx/timeouts/connection errors."),
    invalid_retries: int = typer.Option(2, help="Re-asks after a malformed or out-of-range reply."),
    backoff_base: float = typer.Option(1.0, help="Seconds of the first retry wait (doubles per retry, with jitter)."),
    backoff_max: float = typer.Option(60.0, help="Longest retry wait in seconds (Retry-After headers aside)."),
    max_requests: int = typer.Option(None, help="Request budget for this run (retries count)."),
    max_total_tokens: int = typer.Option(None, help="Token budget (prompt + completion) for this run."),
    price_input: float = typer.Option(None, help="USD per 1M prompt tokens, for the cost estimate."),
    price_output: float = typer.Option(None, help="USD per 1M completion tokens, for the cost estimate."),
    retry_invalid: bool = typer.Option(False, help="Ask again for stories whose cached reply was invalid."),
    cache: Path = typer.Option(None, help="SQLite judge cache (default: $EVALSUITE_CACHE/judge_cache.sqlite)."),
    out: Path = typer.Option(Path("results/gpt_eval"), "--out", "-o", help="Output folder."),
    dry_run: bool = typer.Option(False, help="Print the plan and cost estimate, call nothing."),
    progress: bool = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: when stderr is a terminal)."),
    n_bootstrap: int = typer.Option(10_000, help="Bootstrap resamples for the 95% CIs."),
    bootstrap_seed: int = typer.Option(0, help="Seed of the bootstrap."),
    judge_gguf: Path = typer.Option(None, help="GGUF model for the embedded judge (xllamacpp, else llama-cpp-python)."),
    local_judge: bool = typer.Option(True, "--local-judge/--no-local-judge",
                                     help="Without --base-url, use the packaged local judge when installed (.\\[judge])."),
    validate: bool = typer.Option(False, "--validate", help="Validity check on real TinyStories text and corruptions."),
    corpus: Path = typer.Option(None, help="--validate: stories (.txt with <|endoftext|>, .jsonl, or a folder)."),
    data_dir: Path = typer.Option(None, help="Reference data folder (default: $EVALSUITE_DATA or ../shared/data)."),
    rates: str = typer.Option("0.25,0.5,1.0", help="--validate: corruption rates."),
    validate_limit: int = typer.Option(20, help="--validate: a random sample of N stories of the corpus (0 = all)."),
    validate_seed: int = typer.Option(0, help="--validate: seed of the story sample and of the corruptions."),
    judge_mode: str = typer.Option("auto", help="rubric (LLM grades), or an offline mode of the local judge: loglik, "
                                   "yesno, pairwise (comma-separated with --validate). auto: rubric for --base-url; "
                                   "for the packaged judge the mode that passed its validity check."),
    offline_max_chars: int = typer.Option(400, help="Offline modes: characters of each continuation scored."),
    free_scores: bool = typer.Option(True, "--free-scores/--no-free-scores",
                                     help="Judge-free scores (grammar detectors, repetition, AoA, consistency)."),
    prompts: str = typer.Option("tinystories", help="Checkpoint inputs: prompt set for generation."),
    gen_temperature: float = typer.Option(0.8, help="Checkpoint inputs: generation temperature."),
    gen_top_k: int = typer.Option(0, help="Checkpoint inputs: generation top-k (0 = off)."),
    gen_top_p: float = typer.Option(1.0, help="Checkpoint inputs: generation top-p."),
    gen_max_new_tokens: int = typer.Option(300, help="Checkpoint inputs: most tokens per story."),
    gen_seed: int = typer.Option(1337, help="Checkpoint inputs: generation seed."),
    device: str = typer.Option("cpu", help="Checkpoint inputs: cpu, cuda or auto."),
) -> None:
    """Score stories with an LLM judge; per-story scores and per-checkpoint means with 95% bootstrap CIs."""
    from rich.console import Console
    from rich.markup import escape

    from corpora.errors import UserError
    from corpora.paths import cache_dir
    from evalsuite.judge.client import JudgeSettings, probe_judge
    from evalsuite.judge.evaluate import GptEvalConfig, ValidationConfig, run_gpt_eval, run_validation
    from evalsuite.judge.local_model import check_embedded_available, embedded_judge_server
    from evalsuite.judge.offline import OFFLINE_MODES
    from evalsuite.judge.offline_eval import OfflineJudge
    from evalsuite.judge.rubric import load_rubric
    from evalsuite.judge.validate import validation_set, variant_items

    console = Console(stderr=True)
    rub = load_rubric(rubric)
    if not validate and not inputs:
        raise UserError("give samples.jsonl files or checkpoints to score, or --validate")
    if validate and inputs:
        raise UserError("--validate scores a corpus (--corpus/--data-dir), not INPUTS; run them separately")
    show_progress = sys.stderr.isatty() if progress is None else progress
    modes = _judge_modes(judge_mode, validate, base_url is None)
    if modes == ["auto"]:
        modes = [_auto_mode(base_url, judge_gguf, local_judge, console)]
    if not validate and any(p.suffix == ".jsonl" for p in inputs):
        from evalsuite.judge.evaluate import load_samples

        load_samples([p for p in inputs if p.suffix == ".jsonl"])  # bad sample files fail before any judge work
    # The judge first: a checkpoint input must not cost minutes of generation before "no judge".
    if modes == ["free"]:
        pass  # judge-free scores need no judge
    elif base_url is None:
        check_embedded_available(judge_gguf, use_packaged=local_judge)
    elif not dry_run:
        console.print(f"judge at {base_url}: {probe_judge(base_url, _api_key(base_url), min(timeout, 10.0))}")

    def sample_inputs(k: int):
        return _sample_inputs(inputs, out, k, prompts, gen_temperature, gen_top_k, gen_top_p, gen_max_new_tokens,
                              gen_seed, device, console, show_progress)

    def validation():
        return validation_set(rub, corpus, data_dir=data_dir, rates=_rates(rates), limit=validate_limit,
                              seed=validate_seed)

    offline = OfflineJudge(judge_gguf=judge_gguf, use_packaged=local_judge, max_chars=offline_max_chars, cache=cache)
    if validate and (set(modes) <= set(OFFLINE_MODES) or modes == ["free"]):
        _offline_validation(validation(), [m for m in modes if m != "free"], offline, out, console, show_progress,
                            bootstrap_seed, free_scores or modes == ["free"])
        return
    if not validate and (modes[0] in OFFLINE_MODES or modes == ["free"]):
        _offline_scoring(sample_inputs(1), modes[0], offline, out, console, show_progress, n_bootstrap, bootstrap_seed)
        return
    if validate:
        vset = validation()
        items = variant_items(vset.variants, repeats)
    else:
        samples = sample_inputs(repeats)
        items = samples.items

    import contextlib

    endpoint_id = None
    embedded = None
    with contextlib.ExitStack() as stack:
        if base_url is None:
            # the embedded judge's server lives exactly as long as this block
            endpoint = stack.enter_context(embedded_judge_server(
                judge_gguf, max_prompt_chars=_max_prompt_chars(items, rub), max_tokens=max_tokens,
                use_packaged=local_judge, progress=show_progress))
            embedded = endpoint.judge
            base_url, model, endpoint_id = endpoint.base_url, endpoint.model, endpoint.endpoint_id
            console.print(f"embedded judge: {model} on {base_url}")
            if embedded.smoke_test:
                console.print(f"[bold yellow]warning: {escape(embedded.info['warning'])}[/bold yellow]")
            # One model context answers one request at a time: queued requests would only run into the
            # client's timeout, so ask one at a time and allow a slow CPU its minutes.
            if concurrency != 1 or timeout < 900:
                console.print(f"embedded judge: concurrency {concurrency} -> 1, timeout {timeout:g}s -> "
                              f"{max(timeout, 900.0):g}s")
            concurrency, timeout = 1, max(timeout, 900.0)
        settings = JudgeSettings(
            base_url=base_url, model=model or "", api_key=_api_key(base_url), temperature=temperature, top_p=top_p,
            max_tokens=max_tokens, seed=seed, logprobs=logprobs, top_logprobs=top_logprobs,
            response_format=response_format, timeout_s=timeout, max_retries=max_retries,
            invalid_retries=invalid_retries, backoff_base_s=backoff_base, backoff_max_s=backoff_max,
            concurrency=concurrency, max_requests=max_requests,
            max_total_tokens=max_total_tokens, price_input_per_1m=price_input, price_output_per_1m=price_output,
            retry_invalid_cached=retry_invalid, endpoint_id=endpoint_id,
        )
        cache_path = cache or (cache_dir() / "judge_cache.sqlite")

        def show_plan(plan) -> bool:
            console.print(
                f"rubric {rub.identity()}, judge {settings.model} at {settings.endpoint}: {len(items)} judgments, "
                f"{len(plan.cached)} cached; to run: {plan.estimate.describe()}"
            )
            if repeats > 1 and temperature == 0:
                console.print("[yellow]note: repeats at judge temperature 0 measure only the server's own "
                              "nondeterminism; use --temperature > 0 for test-retest of sampled judgments[/yellow]")
            return not dry_run

        if validate:
            vconfig = ValidationConfig(validation=vset, rubric=rub, settings=settings, cache_path=cache_path,
                                       repeats=repeats, seed=bootstrap_seed, progress=show_progress)
            result = run_validation(vconfig, items=items, on_plan=show_plan)
        else:
            gconfig = GptEvalConfig(items=items, rubric=rub, settings=settings, cache_path=cache_path,
                                    free_scores=free_scores, n_resamples=n_bootstrap, seed=bootstrap_seed,
                                    progress=show_progress)
            result = run_gpt_eval(gconfig, on_plan=show_plan)
    if result.run is None:  # dry run
        return

    judge_info = embedded.info if embedded is not None else None
    if validate:
        _report_validation(result, vconfig, out, console, judge_info)
    else:
        _report_scores(result, gconfig, samples.context(), out, console, repeats, judge_info)
    if embedded is not None and embedded.smoke_test:
        console.print(f"[bold yellow]reminder: {escape(embedded.info['warning'])}[/bold yellow]")


def _max_prompt_chars(items, rub) -> int:
    """Characters of the longest rendered judge prompt (json_object mode adds the schema)."""
    longest = max((sum(len(m["content"]) for m in rub.render(it.prompt, it.completion)) for it in items), default=0)
    return longest + len(rub.json_object_instruction())


def _api_key(base_url: str) -> str:
    key = os.environ.get("OPENAI_API_KEY", "")
    if not key and "api.openai.com" in base_url:
        from corpora.errors import UserError

        raise UserError("OPENAI_API_KEY is not set (needed for api.openai.com)")
    return key or "EMPTY"  # local servers usually take any key


def _rates(rates: str) -> tuple[float, ...]:
    from corpora.errors import UserError

    try:
        return tuple(float(r) for r in rates.split(",") if r.strip())
    except ValueError:
        raise UserError(f"--rates must be comma-separated numbers, got {rates!r}") from None


def _sample_inputs(inputs, out, repeats, prompts, temperature, top_k, top_p, max_new_tokens, seed, device, console,
                   show_progress=False):
    """samples.jsonl inputs as they are; checkpoints are turned into samples first (saved under out/)."""
    from evalsuite.judge.evaluate import samples_from_inputs

    sampling = None
    if any(p.suffix != ".jsonl" for p in inputs):
        from evalsuite.generate import SamplingConfig

        sampling = SamplingConfig(temperature=temperature, top_k=top_k or None, top_p=top_p,
                                  max_new_tokens=max_new_tokens, seed=seed)

    def tell(path: Path, n: int, target: Path) -> None:
        console.print(f"generating {n} stories from {path} -> {target}")

    return samples_from_inputs(inputs, out, repeats=repeats, prompts=prompts, sampling=sampling, device=device,
                               progress=show_progress, on_generate=tell)


def _judge_modes(judge_mode: str, validate: bool, embedded: bool) -> list[str]:
    from corpora.errors import UserError
    from evalsuite.judge.offline import JUDGE_MODES, OFFLINE_MODES

    modes = [m.strip() for m in judge_mode.split(",") if m.strip()]
    bad = [m for m in modes if m not in (*JUDGE_MODES, "free")]
    if not modes or bad:
        raise UserError(f"--judge-mode must be one of {', '.join(JUDGE_MODES)}, free (judge-free scores only; "
                        f"offline modes comma-separated with --validate), "
                        f"got {judge_mode!r}")
    if "pairwise" in modes and not validate:
        raise UserError("--judge-mode pairwise compares a story with its corrupted copy: it is for --validate; "
                        "score samples with loglik or yesno")
    if len(modes) > 1 and not (validate and set(modes) <= set(OFFLINE_MODES)):
        raise UserError("several --judge-mode values are for --validate with offline modes (loglik,yesno,pairwise)")
    if modes == ["auto"]:
        return modes
    if set(modes) & set(OFFLINE_MODES) and not embedded:
        raise UserError("the offline judge modes run the local judge in-process; drop --base-url")
    return modes


def _auto_mode(base_url, judge_gguf, local_judge, console) -> str:
    """rubric for a given judge; for the packaged local judge, the mode that passed its validity check."""
    from evalsuite.judge.offline import PACKAGED_DEFAULT_MODE, PACKAGED_VALIDITY_NOTE
    from evalsuite.judge.server import GGUF_ENV

    if base_url is not None or judge_gguf or os.environ.get(GGUF_ENV) or not local_judge:
        return "rubric"
    if PACKAGED_DEFAULT_MODE is None:
        console.print(f"[bold yellow]no mode of the packaged local judge passed its validity check "
                      f"({PACKAGED_VALIDITY_NOTE}); it reports no grades: judge-free scores only[/bold yellow]")
        return "free"
    console.print(f"packaged local judge: mode {PACKAGED_DEFAULT_MODE} ({PACKAGED_VALIDITY_NOTE}); its rubric "
                  f"grades failed that check and are not reported (--judge-mode rubric forces them)")
    return PACKAGED_DEFAULT_MODE



def _offline_validation(vset, modes, offline, out, console, progress, seed, with_free_scores) -> None:
    """--validate with offline modes: each mode's preference for clean text, per corruption and rate."""
    from rich.console import Console

    from evalsuite.judge.offline_eval import run_offline_validation, write_offline_validation

    def loaded(scorer) -> None:
        console.print(f"offline judge {scorer.model_id}: modes {', '.join(modes)} on {vset.n_stories} "
                      f"stories of {vset.corpus} x {len(vset.variants) // vset.n_stories} variants")

    result = run_offline_validation(vset, modes, offline, free_scores=with_free_scores, seed=seed, progress=progress,
                                    on_scorer=loaded)
    write_offline_validation(out, result)
    wide = Console()
    if not wide.is_terminal:  # a log file: do not squeeze ten columns into 80 characters
        wide = Console(width=200)
    wide.print(_validity_table(result.table))
    for row in result.verdicts.itertuples():
        verdict = "PASSES" if row.passes else "FAILS"
        console.print(f"{row.method}: {verdict} (worst at rate 1.0: {row.worst_corruption}, clean preferred "
                      f"in {row.worst_share:.0%} of {row.n_pairs_min} pairs; goal >= 90% for each corruption)")
    # The negative control a reader would ask for has not been run: a pass shows the score reacts to
    # these corruptions, not that it judges stories better than a trivial scorer would.
    console.print("control not run: no weaker scorer (an untrained model, unigram word frequencies) was tested on "
                  "the same pairs, so a pass says the score reacts to these corruptions, not that it beats a "
                  "trivial scorer")
    console.print(f"wrote {out}/validity.csv, validity_verdicts.csv, validity_pairs.csv, validity_scores.csv, "
                  f"validity_meta.json")


def _print_summary(frame, title):
    from rich.console import Console
    from rich.table import Table

    view = Table(title=title)
    for col in ("checkpoint", "score", "mean [95% CI]", "n stories"):
        view.add_column(col)
    for ckpt, sub in frame.groupby("checkpoint_id", sort=True):
        for i, row in enumerate(sub.itertuples()):
            view.add_row(str(ckpt) if i == 0 else "", row.score, _fmt(row.mean, row.ci_low, row.ci_high),
                         str(row.n_stories), end_section=i == len(sub) - 1)
    Console().print(view)


def _offline_scoring(samples, mode, offline, out, console, progress, n_bootstrap, seed) -> None:
    """Samples scored by an offline mode of the local judge (or judge-free scores only, mode 'free')."""
    from evalsuite.judge.offline_eval import run_offline_scoring, write_offline_scoring

    result = run_offline_scoring(samples.items, mode, offline, samples=samples.context(), n_bootstrap=n_bootstrap,
                                 seed=seed, progress=progress)
    write_offline_scoring(out, result)
    if result.summary is not None:
        _print_summary(result.summary, f"local judge, mode {mode}: mean over stories [95% bootstrap CI]")
    _print_summary(result.free, "judge-free scores: mean over stories [95% bootstrap CI]")
    if mode == "loglik":
        console.print("[yellow]judge_bpc = bits per character of the story under the local judge model (lower = "
                      "more expected text). It separates clean from corrupted stories, but degenerate repetition "
                      "is also very expected: read it beside repeated_3gram_share[/yellow]")
    console.print(f"wrote {out}/ ({', '.join(result.outputs())}, meta.json)")


def _validity_table(table):
    from rich.table import Table

    view = Table(title="validity: is the clean story preferred over its corrupted copy? (per corruption and rate)")
    for col in ("method", "score", "corruption", "rate", "clean preferred", "ties", "95% CI", "sign p",
                "mean diff [95% CI]", "d_z"):
        view.add_column(col)
    for r in table.itertuples():
        view.add_row(r.method, r.score, r.corruption, f"{r.rate:.2f}",
                     f"{r.clean_preferred}/{r.n_pairs} ({r.share_clean_preferred:.0%})", str(r.ties),
                     f"[{r.share_ci_low:.2f}, {r.share_ci_high:.2f}]", f"{r.sign_test_p:.3g}",
                     _fmt(r.mean_diff, r.diff_ci_low, r.diff_ci_high), f"{r.d_z:.2f}")
    return view


def _fmt(mean: float, low: float, high: float) -> str:
    import math

    if math.isnan(mean):
        return "-"
    if math.isnan(low):
        return f"{mean:.2f}"
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def _run_summary_line(run) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(run.counts().items()))
    cost = f", cost ${run.cost_usd:.4f}" if run.cost_usd is not None else ""
    return (f"judgments: {counts}; {run.n_cached} from cache, {run.requests_made} requests, "
            f"{run.prompt_tokens:,}+{run.completion_tokens:,} tokens{cost}")


def _report_scores(result, config, samples, out, console, repeats, judge_info=None) -> None:
    from rich.console import Console
    from rich.markup import escape as rich_escape
    from rich.table import Table

    from evalsuite.judge.evaluate import write_gpt_eval

    write_gpt_eval(out, result, config, samples=samples, repeats=repeats, judge_info=judge_info)
    run, tables, free, rub = result.run, result.tables, result.free_summary, config.rubric
    console.print(_run_summary_line(run))
    if run.stopped_reason:
        console.print(f"[yellow]stopped early: {rich_escape(str(run.stopped_reason))}; rerun to finish (cached results are kept)[/yellow]")
    table = Table(title=f"{rub.id} v{rub.version}: mean over stories, 95% bootstrap CI")
    for col in ("checkpoint", "score", "mean", "95% CI", "n stories", "failed judgments"):
        table.add_column(col, justify="left" if col in ("checkpoint", "score") else "right")
    for ckpt, sub in tables.summary.groupby("checkpoint_id", sort=True):
        for i, row in enumerate(sub.itertuples()):
            ci = "-" if row.ci_low != row.ci_low else f"[{row.ci_low:.2f}, {row.ci_high:.2f}]"
            table.add_row(str(ckpt) if i == 0 else "", row.score, f"{row.mean:.2f}" if row.mean == row.mean else "-",
                          ci, str(row.n_stories), str(row.n_judgments_failed), end_section=i == len(sub) - 1)
    Console().print(table)
    for question, sub in tables.categories.groupby("question", sort=False):
        cat = Table(title=f"{question}: share of successful judgments (count)")
        codes = list(dict.fromkeys(sub["code"]))
        labels = dict(zip(sub["code"], sub["label"], strict=False))
        cat.add_column("checkpoint")
        cat.add_column("n", justify="right")
        for code in codes:
            cat.add_column(f"{code} ({labels[code]})", justify="right")
        for ckpt, part in sub.groupby("checkpoint_id", sort=True):
            by = part.set_index("code")
            n = int(by["n"].iloc[0])
            cat.add_row(str(ckpt), str(n), *[f"{by.at[c, 'share']:.0%} ({by.at[c, 'count']})" if n else "-" for c in codes])
        Console().print(cat)
    if not tables.reliability.empty:
        rel = Table(title=f"test-retest over {repeats} repeats (ICC(1,1) [95% CI], Spearman r(rep0, rep1))")
        for col in ("score", "n", "ICC", "Spearman", "exact agreement"):
            rel.add_column(col)
        for row in tables.reliability.itertuples():
            rel.add_row(row.score, str(row.n_stories), _fmt(row.icc, row.icc_ci_low, row.icc_ci_high),
                        f"{row.spearman_r01:.2f}", f"{row.exact_agreement:.2f}")
        Console().print(rel)
    if free is not None:
        _print_summary(free, "judge-free scores: mean over stories [95% bootstrap CI]")
    console.print(f"wrote {out}/ (summary.csv/.parquet, story_scores, judgments.jsonl, meta.json)")
    _fail_if_a_checkpoint_failed(result.failed, out)


def _fail_if_a_checkpoint_failed(failed, out: Path) -> None:
    """Outputs are written; a checkpoint with no successful judgment still ends the command with an error."""
    from corpora.errors import UserError

    if failed:
        ckpt, n, last = failed[-1]
        others = f" (and {len(failed) - 1} more checkpoint(s))" if len(failed) > 1 else ""
        raise UserError(f"all {n} judgements of checkpoint {ckpt} failed{others}; outputs written to {out}/; "
                        f"last failure: {last}")



def _report_validation(result, vconfig, out, console, judge_info=None) -> None:
    from rich.console import Console
    from rich.table import Table

    from evalsuite.judge.evaluate import write_validation

    write_validation(out, result, vconfig, judge_info)
    report = result.report
    console.print(_run_summary_line(result.run))
    pairs = Table(title="validity: does the judge grade clean text above corrupted text? (matching dimension)")
    for col in ("corruption", "dimension", "rate", "realised", "n", "clean > corrupted", "ties", "sign p", "mean drop [95% CI]"):
        pairs.add_column(col)
    for r in report.pairs.itertuples():
        pairs.add_row(r.corruption, r.dimension, f"{r.rate:.2f}", f"{r.realized_rate_mean:.2f}", str(r.n_pairs),
                      f"{r.clean_higher}/{r.n_pairs} ({r.share_clean_higher:.0%})" if r.n_pairs else "-",
                      str(r.ties), f"{r.sign_test_p:.3g}", _fmt(r.mean_drop, r.drop_ci_low, r.drop_ci_high))
    Console().print(pairs)
    trend = Table(title="Spearman correlation between corruption rate (clean = 0) and grade")
    for col in ("corruption", "dimension", "rho", "p", "n"):
        trend.add_column(col)
    for r in report.trend.itertuples():
        trend.add_row(r.corruption, r.dimension, f"{r.spearman_rate_vs_grade:.2f}", f"{r.spearman_p:.3g}", str(r.n))
    Console().print(trend)
    console.print(f"wrote {out}/validation_*.csv/.parquet and validation_meta.json")
    _fail_if_a_checkpoint_failed(result.failed, out)

"""CLI: `evalsuite gpt-eval` scores stories with an LLM judge (TinyStories GPT-Eval rubric by default).

Inputs are samples.jsonl files (from `evalsuite generate`) or checkpoints, which are turned into
samples first with the generation options. `--validate` instead scores real TinyStories text and
controlled corruptions of it, and reports whether the judge ranks clean above corrupted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

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
    max_requests: int = typer.Option(None, help="Request budget for this run (retries count)."),
    max_total_tokens: int = typer.Option(None, help="Token budget (prompt + completion) for this run."),
    price_input: float = typer.Option(None, help="USD per 1M prompt tokens, for the cost estimate."),
    price_output: float = typer.Option(None, help="USD per 1M completion tokens, for the cost estimate."),
    retry_invalid: bool = typer.Option(False, help="Ask again for stories whose cached reply was invalid."),
    cache: Path = typer.Option(None, help="SQLite judge cache (default: $EVALSUITE_CACHE/judge_cache.sqlite)."),
    out: Path = typer.Option(Path("results/gpt_eval"), help="Output folder."),
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
    validate_limit: int = typer.Option(0, help="--validate: use only the first N stories (0 = all)."),
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
    from evalsuite.judge.cache import JudgeCache
    from evalsuite.judge.client import JudgeSettings, execute_plan, plan_judgments
    from evalsuite.judge.local_model import embedded_judge
    from evalsuite.judge.rubric import load_rubric
    from evalsuite.judge.server import ChatServer

    console = Console(stderr=True)
    rub = load_rubric(rubric)
    if not validate and not inputs:
        raise UserError("give samples.jsonl files or checkpoints to score, or --validate")
    if validate and inputs:
        raise UserError("--validate scores a corpus (--corpus/--data-dir), not INPUTS; run them separately")
    items, context = (_validation_items(rub, corpus, data_dir, rates, repeats, validate_limit) if validate
                      else _sample_items(inputs, out, repeats, prompts, gen_temperature, gen_top_k, gen_top_p,
                                         gen_max_new_tokens, gen_seed, device, console))

    server = None
    endpoint_id = None
    embedded = None
    if base_url is None:
        # A UserError naming every option when no local judge is installed.
        embedded = embedded_judge(judge_gguf, max_prompt_chars=_max_prompt_chars(items, rub), max_tokens=max_tokens,
                                  use_packaged=local_judge, progress=sys.stderr.isatty() if progress is None else progress)
        backend = embedded.backend
        server = ChatServer(backend).start()
        base_url, model = server.base_url, backend.model_name
        endpoint_id = f"embedded:{backend.model_name}" + (f"@{embedded.info['sha256'][:16]}" if embedded.info.get("sha256") else "")
        console.print(f"embedded judge: {backend.model_name} on {base_url}")
        if embedded.smoke_test:
            console.print(f"[bold yellow]warning: {escape(embedded.info['warning'])}[/bold yellow]")
        # One model context answers one request at a time: queued requests would only run into the
        # client's timeout, so ask one at a time and allow a slow CPU its minutes.
        if concurrency != 1 or timeout < 900:
            console.print(f"embedded judge: concurrency {concurrency} -> 1, timeout {timeout:g}s -> {max(timeout, 900.0):g}s")
        concurrency, timeout = 1, max(timeout, 900.0)
    try:
        settings = JudgeSettings(
            base_url=base_url, model=model or "", api_key=_api_key(base_url), temperature=temperature, top_p=top_p,
            max_tokens=max_tokens, seed=seed, logprobs=logprobs, top_logprobs=top_logprobs,
            response_format=response_format, timeout_s=timeout, max_retries=max_retries,
            invalid_retries=invalid_retries, concurrency=concurrency, max_requests=max_requests,
            max_total_tokens=max_total_tokens, price_input_per_1m=price_input, price_output_per_1m=price_output,
            retry_invalid_cached=retry_invalid, endpoint_id=endpoint_id,
        )
        cache_path = cache or (cache_dir() / "judge_cache.sqlite")
        with JudgeCache(cache_path) as store:
            plan = plan_judgments(items, rub, settings, store)
            console.print(
                f"rubric {rub.identity()}, judge {settings.model} at {settings.endpoint}: {len(items)} judgments, "
                f"{len(plan.cached)} cached; to run: {plan.estimate.describe()}"
            )
            if repeats > 1 and temperature == 0:
                console.print("[yellow]note: repeats at judge temperature 0 measure only the server's own "
                              "nondeterminism; use --temperature > 0 for test-retest of sampled judgments[/yellow]")
            if dry_run:
                return
            show_progress = sys.stderr.isatty() if progress is None else progress
            run = execute_plan(plan, rub, settings, store, progress=show_progress)
    finally:
        if server is not None:
            server.stop()
        if embedded is not None and hasattr(embedded.backend, "close"):
            embedded.backend.close()

    judge_info = embedded.info if embedded is not None else None
    if validate:
        _report_validation(run, rub, settings, context, out, console, n_bootstrap, bootstrap_seed, cache_path, judge_info)
    else:
        _report_scores(run, rub, settings, context, out, console, n_bootstrap, bootstrap_seed, repeats, cache_path,
                       judge_info)
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


def _sample_items(inputs, out, repeats, prompts, temperature, top_k, top_p, max_new_tokens, seed, device, console):
    """samples.jsonl inputs as they are; checkpoints are turned into samples first (saved under out/)."""
    import json

    from evalsuite.generate import SamplingConfig, iter_samples, load_prompt_set, safe_name
    from evalsuite.judge.evaluate import load_samples, samples_to_items

    sample_files: list[Path] = []
    generated: list[dict[str, Any]] = []
    for path in inputs:
        if path.suffix == ".jsonl":
            sample_files.append(path)
            continue
        prompt_set = load_prompt_set(prompts)
        sampling = SamplingConfig(temperature=temperature, top_k=top_k or None, top_p=top_p,
                                  max_new_tokens=max_new_tokens, seed=seed)
        target = out / "samples" / f"{safe_name(str(path))}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        console.print(f"generating {len(prompt_set.prompts)} stories from {path} -> {target}")
        with target.open("w", encoding="utf-8") as handle:
            for row in iter_samples(path, prompt_set, sampling, device=device):
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        sample_files.append(target)
        generated.append({"checkpoint": str(path), "samples": str(target)})
    samples = load_samples(sample_files)
    return samples_to_items(samples, repeats), {"samples_files": [str(p) for p in sample_files], "generated": generated}


def _validation_items(rub, corpus, data_dir, rates, repeats, limit):
    from corpora.documents import read_documents
    from corpora.errors import UserError
    from corpora.paths import find_data_dir
    from evalsuite.judge.validate import DEFAULT_MATCH, check_match, make_variants, variant_items

    if corpus is None:
        corpus = find_data_dir(data_dir) / "tinystories" / "tinystories_sample.txt"
    docs = read_documents(corpus)
    if limit:
        docs = docs[:limit]
    try:
        rate_values = tuple(float(r) for r in rates.split(",") if r.strip())
    except ValueError:
        raise UserError(f"--rates must be comma-separated numbers, got {rates!r}") from None
    check_match(rub, DEFAULT_MATCH)
    variants = make_variants(docs, rates=rate_values)
    return variant_items(variants, repeats), {"corpus": str(corpus), "n_stories": len(docs), "rates": rate_values,
                                              "variants": variants, "match": DEFAULT_MATCH}


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


def _report_scores(run, rub, settings, context, out, console, n_bootstrap, seed, repeats, cache_path,
                   judge_info=None) -> None:
    from rich.console import Console
    from rich.table import Table

    from evalsuite.judge.evaluate import run_meta, score_run, write_judgments_jsonl, write_meta, write_tables

    tables = score_run(run.results, rub, seed=seed, n_resamples=n_bootstrap)
    out.mkdir(parents=True, exist_ok=True)
    write_judgments_jsonl(out / "judgments.jsonl", run.results)
    frames = {"judgments": tables.judgments.drop(columns=["prompt", "completion"], errors="ignore"),
              "story_scores": tables.stories, "summary": tables.summary, "categories": tables.categories}
    if not tables.reliability.empty:
        frames["reliability"] = tables.reliability
    write_tables(out, frames)
    meta = run_meta(run, rub, settings.public_dict(), {
        "command": "gpt-eval", "repeats": repeats, "bootstrap": {"n_resamples": n_bootstrap, "seed": seed},
        "inputs": context, "cache": str(cache_path), **({"embedded_judge": judge_info} if judge_info else {}),
    })
    write_meta(out / "meta.json", meta)

    from rich.markup import escape as rich_escape

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
    console.print(f"wrote {out}/ (summary.csv/.parquet, story_scores, judgments.jsonl, meta.json)")


def _report_validation(run, rub, settings, context, out, console, n_bootstrap, seed, cache_path,
                       judge_info=None) -> None:
    from rich.console import Console
    from rich.table import Table

    from evalsuite.judge.evaluate import run_meta, write_judgments_jsonl, write_meta, write_tables
    from evalsuite.judge.scoring import judgment_table, story_scores
    from evalsuite.judge.validate import realized_rates_table, validation_report

    table = judgment_table(run.results, rub)
    stories = story_scores(table, rub, ["story_id", "corruption", "rate"])
    realized = realized_rates_table(context["variants"])
    stories = stories.merge(realized, on=["story_id", "corruption", "rate"], how="left")
    report = validation_report(stories, context["match"], seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    write_judgments_jsonl(out / "validation_judgments.jsonl", run.results)
    write_tables(out, {"validation_pairs": report.pairs, "validation_trend": report.trend,
                       "validation_story_scores": stories})
    meta = run_meta(run, rub, settings.public_dict(), {
        "command": "gpt-eval --validate", "corpus": context["corpus"], "n_stories": context["n_stories"],
        "rates": context["rates"], "match": context["match"], "cache": str(cache_path),
        **({"embedded_judge": judge_info} if judge_info else {}),
    })
    write_meta(out / "validation_meta.json", meta)

    console.print(_run_summary_line(run))
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

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
    backoff_base: float = typer.Option(1.0, help="Seconds of the first retry wait (doubles per retry, with jitter)."),
    backoff_max: float = typer.Option(60.0, help="Longest retry wait in seconds (Retry-After headers aside)."),
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
    from evalsuite.judge.evaluate import GptEvalConfig, run_gpt_eval
    from evalsuite.judge.local_model import check_embedded_available, embedded_judge_server
    from evalsuite.judge.offline import OFFLINE_MODES
    from evalsuite.judge.rubric import load_rubric

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
    if validate and (set(modes) <= set(OFFLINE_MODES) or modes == ["free"]):
        context = _validation_context(rub, corpus, data_dir, rates, validate_limit, validate_seed)
        _offline_validation(context, [m for m in modes if m != "free"], judge_gguf, local_judge, offline_max_chars,
                            cache, out, console, show_progress, bootstrap_seed, free_scores or modes == ["free"])
        return
    if not validate and (modes[0] in OFFLINE_MODES or modes == ["free"]):
        items, context = _sample_items(inputs, out, 1, prompts, gen_temperature, gen_top_k, gen_top_p,
                                       gen_max_new_tokens, gen_seed, device, console, show_progress)
        _offline_scoring(items, context, modes[0], judge_gguf, local_judge, offline_max_chars, cache, out, console,
                         show_progress, n_bootstrap, bootstrap_seed)
        return
    items, context = (_validation_items(rub, corpus, data_dir, rates, repeats, validate_limit, validate_seed) if validate
                      else _sample_items(inputs, out, repeats, prompts, gen_temperature, gen_top_k, gen_top_p,
                                         gen_max_new_tokens, gen_seed, device, console, show_progress))

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

        result = run_gpt_eval(GptEvalConfig(items=items, rubric=rub, settings=settings, cache_path=cache_path,
                                            score=not validate, free_scores=free_scores and not validate,
                                            n_resamples=n_bootstrap, seed=bootstrap_seed, progress=show_progress),
                              on_plan=show_plan)
    if result.run is None:  # dry run
        return

    judge_info = embedded.info if embedded is not None else None
    if validate:
        _report_validation(result.run, rub, settings, context, out, console, n_bootstrap, bootstrap_seed, cache_path,
                           judge_info)
    else:
        _report_scores(result, rub, settings, context, out, console, n_bootstrap, bootstrap_seed, repeats, cache_path,
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


def _sample_items(inputs, out, repeats, prompts, temperature, top_k, top_p, max_new_tokens, seed, device, console,
                  show_progress=False):
    """samples.jsonl inputs as they are; checkpoints are turned into samples first (saved under out/)."""
    import json

    from tqdm import tqdm

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
        with target.open("w", encoding="utf-8") as handle, tqdm(
            total=len(prompt_set.prompts), desc=f"generating {path.name}", unit="story", disable=not show_progress
        ) as bar:
            for row in iter_samples(path, prompt_set, sampling, device=device):
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                bar.update(1)
        sample_files.append(target)
        generated.append({"checkpoint": str(path), "samples": str(target)})
    samples = load_samples(sample_files)
    return samples_to_items(samples, repeats), {"samples_files": [str(p) for p in sample_files], "generated": generated}


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


def _validation_context(rub, corpus, data_dir, rates, limit, seed):
    """Real stories (default: a seeded sample of the shared TinyStories subset) and their corruptions."""
    import random

    from corpora.documents import read_documents
    from corpora.errors import UserError
    from corpora.paths import find_data_dir
    from evalsuite.judge.validate import DEFAULT_MATCH, check_match, make_variants, usable_story

    if corpus is None:
        corpus = find_data_dir(data_dir) / "tinystories" / "tinystories_subset.jsonl"
    docs = [d for d in read_documents(corpus) if usable_story(d)]
    if not docs:
        raise UserError(f"no story in {corpus} is long enough to validate with")
    n_corpus = len(docs)
    if limit and limit < len(docs):
        # a seeded shuffle, then the first N: a smaller sample is a prefix of a larger one (same seed)
        order = list(range(len(docs)))
        random.Random(seed).shuffle(order)
        docs = [docs[i] for i in order[:limit]]
    try:
        rate_values = tuple(float(r) for r in rates.split(",") if r.strip())
    except ValueError:
        raise UserError(f"--rates must be comma-separated numbers, got {rates!r}") from None
    check_match(rub, DEFAULT_MATCH)
    variants = make_variants(docs, rates=rate_values, seed=seed)
    return {"corpus": str(corpus), "n_corpus_stories": n_corpus, "n_stories": len(docs), "rates": rate_values,
            "sample_seed": seed, "variants": variants, "match": DEFAULT_MATCH, "stories": docs}


def _validation_items(rub, corpus, data_dir, rates, repeats, limit, seed=0):
    from evalsuite.judge.validate import variant_items

    context = _validation_context(rub, corpus, data_dir, rates, limit, seed)
    return variant_items(context["variants"], repeats), context


def _offline_validation(context, modes, judge_gguf, local_judge, max_chars, cache, out, console, progress, seed,
                        with_free_scores) -> None:
    """--validate with offline modes: each mode's preference for clean text, per corruption and rate."""
    import pandas as pd
    from rich.console import Console

    from corpora.paths import cache_dir
    from evalsuite.judge.offline import offline_scorer
    from evalsuite.judge.validate import method_verdicts, offline_pairs, preference_table

    variants = context["variants"]
    longest = max(len(v.beginning) for v in variants) + 2 * max_chars + 1200
    scores, pairs, info = [], [], {}
    if modes:
        with offline_scorer(judge_gguf, use_packaged=local_judge, max_chars=max_chars, cache=cache,
                            max_prompt_chars=longest, progress=progress) as scorer:
            console.print(f"offline judge {scorer.model_id}: modes {', '.join(modes)} on {context['n_stories']} "
                          f"stories of {context['corpus']} x {len(variants) // context['n_stories']} variants")
            for mode in modes:
                frame, pair = offline_pairs(variants, scorer, mode, context["match"], progress=progress)
                scores.append(frame)
                pairs.append(pair)
            info = {"offline_judge": {**scorer.info, "model_id": scorer.model_id, **scorer.config.public_dict(),
                                      "n_computed": scorer.n_computed, "n_cached": scorer.n_cached}}
    if with_free_scores:
        free_frame, free_pair = _free_validation(context, progress)
        scores.append(free_frame)
        pairs.append(free_pair)
    all_pairs = pd.concat(pairs, ignore_index=True)
    table = preference_table(all_pairs, seed=seed)
    verdicts = method_verdicts(table)
    cache_path = cache or (cache_dir() / "judge_cache.sqlite")
    _write_validity(out, context, table, verdicts, all_pairs, pd.concat(scores, ignore_index=True), cache_path, info)
    wide = Console()
    if not wide.is_terminal:  # a log file: do not squeeze ten columns into 80 characters
        wide = Console(width=200)
    wide.print(_validity_table(table))
    for row in verdicts.itertuples():
        verdict = "PASSES" if row.passes else "FAILS"
        console.print(f"{row.method}: {verdict} (worst at rate 1.0: {row.worst_corruption}, clean preferred "
                      f"in {row.worst_share:.0%} of {row.n_pairs_min} pairs; goal >= 90% for each corruption)")
    console.print(f"wrote {out}/validity.csv, validity_verdicts.csv, validity_pairs.csv, validity_scores.csv, "
                  f"validity_meta.json")


def _story_frame(items):
    """One row per story (repeat 0) of judge items: the fields that identify it, beginning, continuation."""
    import pandas as pd

    keep = ("checkpoint_id", "checkpoint", "story", "prompt_id", "model_family", "val_loss", "val_bpc", "tokens_seen")
    rows = [{**{k: it.meta.get(k) for k in keep}, "prompt": it.prompt, "completion": it.completion}
            for it in items if it.repeat == 0]
    return pd.DataFrame(rows)


def _free_story_scores(stories, progress):
    from evalsuite.judge.free_scores import free_scores_table

    scores = free_scores_table(list(stories["prompt"]), list(stories["completion"]), progress=progress)
    return stories.drop(columns=["prompt", "completion"]).reset_index(drop=True).join(scores)


FREE_COLUMNS = {"mean": "mean over stories of the score", "ci_low": "bootstrap 95% CI over stories, low end",
                "ci_high": "bootstrap 95% CI over stories, high end", "n_stories": "stories with the score",
                "lower_is_better": "direction of the score"}


def _free_columns():
    from evalsuite.judge.free_scores import FREE_SCORES
    from evalsuite.results import column

    stories = {name: column(definition, "evalsuite.judge.free_scores.free_scores_table")
               for name, (definition, _) in FREE_SCORES.items()}
    summary = {c: column(d, "evalsuite.stats.bootstrap_ci" if c != "lower_is_better"
                         else "evalsuite.judge.free_scores.FREE_SCORES") for c, d in FREE_COLUMNS.items()}
    return {"free_story_scores.csv": stories, "free_scores.csv": summary}


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


def _offline_scoring(items, context, mode, judge_gguf, local_judge, max_chars, cache, out, console, progress,
                     n_bootstrap, seed) -> None:
    """Samples scored by an offline mode of the local judge (or judge-free scores only, mode 'free')."""
    import pandas as pd

    from evalsuite.judge.free_scores import free_scores_summary
    from evalsuite.judge.offline import offline_scorer, score_stories
    from evalsuite.results import build_meta, column, write_meta, write_table
    from evalsuite.stats import bootstrap_ci

    stories = _free_story_scores(_story_frame(items), progress)
    stories_text = _story_frame(items)
    info: dict = {}
    judge_rows = []
    if mode != "free":
        longest = int(stories_text["prompt"].str.len().max()) + max_chars + 1200
        with offline_scorer(judge_gguf, use_packaged=local_judge, max_chars=max_chars, cache=cache,
                            max_prompt_chars=longest, progress=progress) as scorer:
            judged = score_stories(scorer, mode, list(stories_text["prompt"]), list(stories_text["completion"]),
                                   progress=progress)
            info = {"offline_judge": {**scorer.info, "model_id": scorer.model_id, "mode": mode,
                                      **scorer.config.public_dict(), "n_computed": scorer.n_computed,
                                      "n_cached": scorer.n_cached}}
        stories = stories.join(judged)
        facts = [c for c in ("checkpoint", "model_family", "val_loss", "val_bpc", "tokens_seen") if c in stories]
        for ckpt, part in stories.groupby("checkpoint_id", sort=True):
            for col in judged.columns:
                values = part[col].to_numpy(dtype=float)
                ci = bootstrap_ci(values, n_boot=n_bootstrap, seed=seed)
                judge_rows.append({"checkpoint_id": ckpt, "score": col, "mean": ci.estimate, "ci_low": ci.ci_low,
                                   "ci_high": ci.ci_high, "sd": float(part[col].std(ddof=1)), "n_stories": ci.n,
                                   "n_judgments_failed": int(len(values) - ci.n),
                                   **{f: part[f].iloc[0] for f in facts}})
    free = free_scores_summary(stories, ["checkpoint_id"], n_boot=n_bootstrap, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    write_table(stories, out / "free_story_scores.csv")
    write_table(free, out / "free_scores.csv")
    columns = _free_columns()
    outputs = ["free_story_scores.csv", "free_scores.csv"]
    if judge_rows:
        summary = pd.DataFrame(judge_rows)
        # the same summary.csv shape as the rubric mode, so figures and report read it unchanged
        write_table(summary, out / "summary.csv", parquet=True)
        outputs += ["summary.csv", "summary.parquet"]
        columns["summary.csv"] = {
            "mean": column(f"mean over stories of the local judge's {mode} score", "evalsuite.judge.offline.score_stories"),
            "ci_low": column("bootstrap 95% CI over stories, low end", "evalsuite.stats.bootstrap_ci"),
            "ci_high": column("bootstrap 95% CI over stories, high end", "evalsuite.stats.bootstrap_ci"),
            "sd": column("standard deviation over stories (ddof 1)", "pandas.Series.std"),
            "n_stories": column("stories with the score", "evalsuite.stats.bootstrap_ci"),
            "n_judgments_failed": column("stories without a score (empty continuation)",
                                         "evalsuite.judge.offline.score_stories")}
        _print_summary(summary, f"local judge, mode {mode}: mean over stories [95% bootstrap CI]")
    _print_summary(free, "judge-free scores: mean over stories [95% bootstrap CI]")
    if mode == "loglik":
        console.print("[yellow]judge_bpc = bits per character of the story under the local judge model (lower = "
                      "more expected text). It separates clean from corrupted stories, but degenerate repetition "
                      "is also very expected: read it beside repeated_3gram_share[/yellow]")
    meta = build_meta("gpt-eval", config={"mode": mode, "n_bootstrap": n_bootstrap}, inputs=context["samples_files"],
                      seeds={"bootstrap": seed}, columns=columns, outputs=outputs,
                      extra={"generated": context.get("generated"), **info})
    write_meta(out / "meta.json", meta)
    console.print(f"wrote {out}/ ({', '.join(outputs)}, meta.json)")


def _free_validation(context, progress):
    """Judge-free scores of every validation variant, and their clean-vs-corrupted pairs."""
    from evalsuite.judge.free_scores import free_score_pairs, free_scores_table

    variants = context["variants"]
    frame = free_scores_table([v.beginning for v in variants], [v.continuation for v in variants], progress=progress)
    for key in ("story_id", "corruption", "rate"):
        frame[key] = [getattr(v, key) for v in variants]
    return frame, free_score_pairs(frame)


VALIDITY_COLUMNS = {
    "method": "offline:<mode> (the local judge's probabilities) or free:<score> (judge-free score)",
    "score": "the score compared (judge_bpc, p_yes_<dim>, pref_clean_<dim>, or a judge-free score)",
    "corruption": "the corruption applied to the continuation (evalsuite.judge.validate)",
    "rate": "the asked corruption rate (share of candidates changed)",
    "n_pairs": "story pairs (clean, corrupted) with both scores",
    "clean_preferred": "pairs where the clean text scored better",
    "ties": "pairs with equal scores",
    "corrupted_preferred": "pairs where the corrupted text scored better",
    "share_clean_preferred": "clean_preferred / n_pairs",
    "share_ci_low": "Wilson 95% CI of share_clean_preferred, low end",
    "share_ci_high": "Wilson 95% CI of share_clean_preferred, high end",
    "sign_test_p": "one-sided sign test (binomial, ties dropped) that clean is preferred more than half the time",
    "mean_diff": "mean over stories of the difference oriented so that > 0 favours clean",
    "diff_ci_low": "bootstrap 95% CI of mean_diff over stories, low end",
    "diff_ci_high": "bootstrap 95% CI of mean_diff over stories, high end",
    "d_z": "mean_diff / sd of the differences (paired standardized effect)",
    "meets_goal": "rate 1.0 only: share_clean_preferred >= 0.9",
    "sign_test_p_adj": "sign_test_p after Benjamini-Hochberg adjustment over all rows of this table",
    "separates": "sign_test_p_adj < 0.05 and the CI of mean_diff above 0: the score tells clean from corrupted",
}
_COMPUTED_BY = {"sign_test_p_adj": "evalsuite.stats.adjust_pvalues", "share_ci_low": "evalsuite.stats.wilson_ci", "share_ci_high": "evalsuite.stats.wilson_ci",
                "diff_ci_low": "evalsuite.stats.bootstrap_ci", "diff_ci_high": "evalsuite.stats.bootstrap_ci",
                "mean_diff": "evalsuite.stats.bootstrap_ci"}


def _write_validity(out, context, table, verdicts, pairs, scores, cache_path, extra) -> None:
    from evalsuite.results import build_meta, column, write_meta, write_table

    out.mkdir(parents=True, exist_ok=True)
    write_table(table, out / "validity.csv")
    write_table(verdicts, out / "validity_verdicts.csv")
    write_table(pairs, out / "validity_pairs.csv")
    write_table(scores, out / "validity_scores.csv")
    columns = {"validity.csv": {c: column(d, _COMPUTED_BY.get(c, "evalsuite.judge.validate.preference_table"))
                                for c, d in VALIDITY_COLUMNS.items()},
               "validity_verdicts.csv": {
                   "passes": column("every corruption at rate 1.0 has share_clean_preferred >= 0.9",
                                    "evalsuite.judge.validate.method_verdicts"),
                   "beats_chance": column("every corruption at rate 1.0 has sign_test_p < 0.05",
                                          "evalsuite.judge.validate.method_verdicts"),
                   "worst_share": column("lowest share_clean_preferred at rate 1.0",
                                         "evalsuite.judge.validate.method_verdicts")}}
    meta = build_meta(
        "gpt-eval",
        config={"mode": "validate", "rates": context["rates"], "match": context["match"],
                "n_stories": context["n_stories"], "n_corpus_stories": context["n_corpus_stories"]},
        inputs=[context["corpus"]], seeds={"sample_and_corruptions": context["sample_seed"]}, columns=columns,
        outputs=["validity.csv", "validity_verdicts.csv", "validity_pairs.csv", "validity_scores.csv"],
        extra={"cache": str(cache_path), **extra},
    )
    write_meta(out / "validity_meta.json", meta)


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


def _report_scores(result, rub, settings, context, out, console, n_bootstrap, seed, repeats, cache_path,
                   judge_info=None) -> None:
    from rich.console import Console
    from rich.table import Table

    from evalsuite.judge.evaluate import gpt_eval_meta, run_meta, write_judgments_jsonl, write_tables
    from evalsuite.results import write_meta

    run, tables = result.run, result.tables
    out.mkdir(parents=True, exist_ok=True)
    write_judgments_jsonl(out / "judgments.jsonl", run.results)
    frames = {"judgments": tables.judgments.drop(columns=["prompt", "completion"], errors="ignore"),
              "story_scores": tables.stories, "summary": tables.summary, "categories": tables.categories}
    if not tables.reliability.empty:
        frames["reliability"] = tables.reliability
    free = result.free_summary
    if result.free_stories is not None:  # judge-free scores beside the rubric, same stories
        frames["free_story_scores"] = result.free_stories
    if free is not None:
        frames["free_scores"] = free
    write_tables(out, frames)
    legacy = run_meta(run, rub, settings.public_dict(), {
        "repeats": repeats, "bootstrap": {"n_resamples": n_bootstrap, "seed": seed},
        "inputs": context, "cache": str(cache_path), **({"embedded_judge": judge_info} if judge_info else {}),
    })
    meta = gpt_eval_meta(legacy, inputs=context["samples_files"],
                         config={"rubric": rub.identity(), "judge": settings.public_dict(), "repeats": repeats,
                                 "n_bootstrap": n_bootstrap},
                         seeds={"bootstrap": seed, "judge": settings.seed if settings.seed is not None else -1},
                         outputs=[f"{name}.{ext}" for name in frames for ext in ("csv", "parquet")] + ["judgments.jsonl"],
                         extra_columns=_free_columns() if free is not None else None)
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
    from evalsuite.judge.evaluate import failed_checkpoints

    _fail_if_a_checkpoint_failed(failed_checkpoints(run.results), out)

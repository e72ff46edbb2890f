"""CLI: `evalsuite generate CKPT...` writes samples.jsonl (+ meta.json) from a prompt set."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `generate` to the root app."""
    app.command("generate")(generate)


def generate(
    checkpoints: list[Path] = typer.Argument(..., help="Checkpoint dirs, run dirs (uses best/), or .spinnet files."),
    prompts: str = typer.Option("tinystories", help="Built-in prompt set name, or a .jsonl/.txt file of story beginnings."),
    out: Path = typer.Option(Path("results/generate/samples.jsonl"), "--out", "-o", help="samples.jsonl to write (meta.json beside it)."),
    temperature: float = typer.Option(0.8, help="Sampling temperature; 0 = greedy."),
    top_k: int = typer.Option(0, help="Top-k filtering; 0 = off."),
    top_p: float = typer.Option(1.0, help="Nucleus (top-p) filtering; 1.0 = off."),
    max_new_tokens: int = typer.Option(300, help="Most tokens generated per story (stops earlier at <|endoftext|>)."),
    seed: int = typer.Option(1337, help="Seed; each prompt's generator is seeded from (seed, prompt id)."),
    batch_size: int = typer.Option(16, help="Most sequences per forward pass."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
    limit: int = typer.Option(0, help="Use only the first N prompts (0 = all)."),
) -> None:
    """Generate one story per prompt for each checkpoint; same seed, same text."""
    from rich.console import Console
    from rich.markup import escape

    from corpora.errors import UserError
    from evalsuite.generate import SamplingConfig, iter_samples, load_prompt_set
    from evalsuite.results import build_meta, write_meta
    from evalsuite.samples import SamplesWriter, sample_columns

    console = Console(stderr=True)
    if limit < 0:  # a negative slice would silently drop the LAST prompts instead
        raise UserError(f"--limit must be 0 (all prompts) or a positive count, not {limit}")
    prompt_set = load_prompt_set(prompts)
    if limit:
        prompt_set.prompts = prompt_set.prompts[:limit]
    sampling = SamplingConfig(temperature=temperature, top_k=top_k or None, top_p=top_p,
                              max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size)
    per_checkpoint = []
    with SamplesWriter(out) as writer:  # the one samples.jsonl writer (atomic)
        for ckpt in checkpoints:
            console.print(f"generating {len(prompt_set.prompts)} stories from {escape(str(ckpt))} ...")
            n_eot = 0
            ckpt_id = None
            for row in iter_samples(ckpt, prompt_set, sampling, device=device):
                writer.write(row)
                n_eot += row["finish_reason"] == "eot"
                ckpt_id = row["checkpoint_id"]
            writer.flush()
            per_checkpoint.append({"checkpoint": str(ckpt), "checkpoint_id": ckpt_id,
                                   "stories": len(prompt_set.prompts), "ended_at_eot": n_eot})
    rows = writer.n_written
    config = {"prompts": prompts, "limit": limit, "device": device,
              "sampling": {"temperature": temperature, "top_k": top_k or None, "top_p": top_p,
                           "max_new_tokens": max_new_tokens, "seed": seed, "batch_size": batch_size}}
    inputs = [*checkpoints, *([prompt_set.path] if prompt_set.path else [])]
    meta = build_meta(
        "generate", config=config, inputs=inputs, seeds={"seed": seed},
        columns={out.name: sample_columns()}, outputs=[out.name],
        extra={"sampling": config["sampling"], "checkpoints": per_checkpoint,
               "prompt_set": {"name": prompt_set.name, "path": prompt_set.path, "n": len(prompt_set.prompts),
                              **prompt_set.meta},
               "samples": str(out)},
    )
    write_meta(out.parent, meta)
    for entry in per_checkpoint:
        console.print(f"{escape(str(entry['checkpoint_id']))}: {entry['stories']} stories, {entry['ended_at_eot']} ended at <|endoftext|>")
    console.print(f"wrote {rows} samples to {escape(str(out))}")

"""Training throughput of SpinNet vs the baseline, measured in one run; and a real training mode.

Throughput (default): for each preset (default baseline-28m and spinnet-28m) at the SAME batch size
and context, build the model and its AdamW exactly as trainers.train does, run `--warmup` steps
(which also absorb torch.compile), then time `--steps` steps between two device synchronisations.
A step = forward under bf16 autocast (CUDA; fp32 on CPU), fp32 cross-entropy, backward, grad
clipping, AdamW. Batches are random token ids already on the device: data loading is excluded.

    tokens/s   = batch_size * block_size * steps / elapsed
    MFU        = flops_per_token * tokens/s / peak
    flops_per_token = Transformer.estimate_flops_per_token(block_size)
                    = 6 * N_matmul + 12 * n_layer * d_model * block_size   (PaLM / nanoGPT)
    N_matmul counts the weights the GEMMs multiply (SpinNet: the full assembled block matrices,
    n times its parameters; plus the tied head), so both families are charged the same dense FLOPs.
    peak = the bf16 dense tensor-core peak of the device named by torch.cuda.get_device_name
    (H100 SXM 989 TFLOP/s, H100 PCIe 756, H100 NVL 835, H200 989, H200 NVL 835, A100 312), or
    --peak-tflops. Without a known peak (e.g. on a CPU) MFU is not reported.

The table, a CSV and a JSON (rows + metadata: device, peak used, formula, versions, settings) go to
--out, else $OUT, else results/benchmarks/.

Training (--train): trains each preset on a tokenized dataset (a folder with train.bin/val.bin and
tokenizer/, as `--prepare` or `evalsuite train` write) for a token budget, writing runs (checkpoints,
metrics_stream.jsonl) under <out>/train/<preset>/, the loss curves of all presets by tokens seen
(loss_curves.csv) and a summary. --time-limit-s stops cleanly at a checkpoint; --resume continues.

    python benchmarks/train_throughput.py                                   # GPU throughput table
    python benchmarks/train_throughput.py --presets baseline-tiny spinnet-tiny --device cpu \
        --batch-size 4 --block-size 32 --warmup 1 --steps 2                 # CPU smoke test
    python benchmarks/train_throughput.py --prepare CORPUS.txt --out data_out   # tokenize once
    python benchmarks/train_throughput.py --train --data data_out/data --tokens 50e6 --out runs_out
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from trainers.config import load_config  # noqa: E402
from trainers.model import build_model  # noqa: E402
from trainers.train import configure_optimizer, read_metrics, resolve_vocab, token_losses, train  # noqa: E402

# bf16 dense (no sparsity) tensor-core peaks, FLOP/s, from the vendors' datasheets.
PEAKS = [
    ("H100 PCIe", ("H100", "PCIE"), 756e12),
    ("H100 NVL", ("H100", "NVL"), 835e12),
    ("H100 SXM", ("H100",), 989e12),
    ("H200 NVL", ("H200", "NVL"), 835e12),
    ("H200 SXM", ("H200",), 989e12),
    ("A100", ("A100",), 312e12),
]
FORMULA = (
    "MFU = flops_per_token * tokens_per_s / peak_flops; flops_per_token = 6 * N_matmul + "
    "12 * n_layer * d_model * block_size (PaLM/nanoGPT), N_matmul = weights multiplied by GEMMs "
    "(SpinNet block matrices at their dense size, tied head included)"
)
DEFAULT_THRESHOLDS = "[4.0,3.5,3.0,2.5,2.0,1.75,1.5]"


def device_peak(name: str) -> tuple[str | None, float | None]:
    upper = name.upper()
    for label, keys, peak in PEAKS:
        if all(k in upper for k in keys):
            return label, peak
    return None, None


def out_dir(arg: str | None) -> Path:
    path = Path(arg or os.environ.get("OUT") or REPO / "results" / "benchmarks")
    path.mkdir(parents=True, exist_ok=True)
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


# ----------------------------------------------------------------------------------------------
# throughput


def measure(preset: str, args: argparse.Namespace, device: torch.device, compile_model: bool) -> dict[str, Any]:
    cfg = load_config(preset, [f"train.batch_size={args.batch_size}", f"train.block_size={args.block_size}",
                               "train.grad_accum=1", *args.set])
    cfg = resolve_vocab(cfg, args.vocab_size) if cfg.model.vocab_size is None else cfg
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    optimizer = configure_optimizer(model, cfg.train, device.type)
    forward = torch.compile(model) if compile_model else model
    vocab, b, t = cfg.model.vocab_size, cfg.train.batch_size, cfg.train.block_size
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, vocab, (b, t + 1), generator=gen).to(device)
    x, y = batch[:, :-1], batch[:, 1:]

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = forward(x).logits
        token_losses(logits, y).mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    compile_start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync(device)
    warmup_s = time.perf_counter() - compile_start
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    elapsed = time.perf_counter() - start
    tokens_per_s = b * t * args.steps / elapsed
    flops_per_token = model.estimate_flops_per_token(t)
    label, peak = device_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else (None, None)
    if args.peak_tflops:
        label, peak = f"given {args.peak_tflops} TFLOP/s", args.peak_tflops * 1e12
    row = {
        "preset": preset, "family": cfg.model.family, "compile": compile_model, "device": device_name(device),
        "dtype": str(dtype).replace("torch.", ""), "batch_size": b, "block_size": t,
        "n_params": sum(p.numel() for p in model.parameters()),
        "flops_per_token": flops_per_token, "warmup_steps": args.warmup, "timed_steps": args.steps,
        "warmup_s": warmup_s, "step_time_ms": 1000 * elapsed / args.steps, "tokens_per_s": tokens_per_s,
        "achieved_tflops": flops_per_token * tokens_per_s / 1e12, "peak_label": label,
        "peak_tflops": peak / 1e12 if peak else None,
        "mfu": flops_per_token * tokens_per_s / peak if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    return row


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| preset | compile | batch x ctx | params | step ms | tokens/s | TFLOP/s | MFU | "
            "step time vs baseline | peak mem GiB |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {'on' if r['compile'] else 'off'} | {r['batch_size']} x {r['block_size']} | "
            f"{r['n_params'] / 1e6:.2f}M | {r['step_time_ms']:.1f} | {r['tokens_per_s']:,.0f} | "
            f"{r['achieved_tflops']:.1f} | {fmt(None if r['mfu'] is None else 100 * r['mfu'], '.1f')}{'' if r['mfu'] is None else '%'} | "
            f"{fmt(r.get('step_time_ratio_vs_baseline'), '.3f')} | {fmt(r['peak_memory_gib'], '.1f')} |"
        )
    return "\n".join(lines)


def run_throughput(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    modes = {"off": [False], "on": [True], "both": [False, True]}[
        args.compile if args.compile != "auto" else ("both" if device.type == "cuda" else "off")]
    rows = []
    for compile_model in modes:
        for preset in args.presets:
            rows.append(measure(preset, args, device, compile_model))
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the previous model and optimizer are gone with measure()
            print(f"measured {preset} compile={compile_model}: {rows[-1]['step_time_ms']:.1f} ms/step", flush=True)
    for r in rows:
        base = [b for b in rows if b["family"] == "baseline" and b["compile"] == r["compile"]]
        r["step_time_ratio_vs_baseline"] = r["step_time_ms"] / base[0]["step_time_ms"] if base else None
    table = markdown(rows)
    peak_line = next((f"peak used: {r['peak_label']} = {r['peak_tflops']:.0f} TFLOP/s bf16 dense"
                      for r in rows if r["peak_tflops"]), "peak: unknown for this device (MFU not reported)")
    print()
    print(f"device: {rows[0]['device']}; torch {torch.__version__}; dtype {rows[0]['dtype']}")
    print(table)
    print(peak_line)
    print(FORMULA)
    out = out_dir(args.out)
    with open(out / "train_throughput.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = {
        "device": rows[0]["device"], "peak": peak_line, "formula": FORMULA, "torch": torch.__version__,
        "cuda": torch.version.cuda, "data": "random token ids on the device (data loading excluded)",
        "settings": {k: v for k, v in vars(args).items()}, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "rows": rows,
    }
    (out / "train_throughput.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    (out / "train_throughput.md").write_text(
        f"device: {rows[0]['device']}; torch {torch.__version__}\n\n{table}\n\n{peak_line}\n\n{FORMULA}\n")
    print(f"wrote {out / 'train_throughput.csv'}, .json, .md")
    return 0


# ----------------------------------------------------------------------------------------------
# real training


def run_prepare(args: argparse.Namespace) -> int:
    from trainers.data import prepare_data

    out = out_dir(args.out) / "data"
    data = prepare_data(args.prepare, args.tokenizer, out, val_fraction=args.val_fraction, seed=args.seed,
                        progress=True)
    print(json.dumps({"data_dir": str(out), **data.summary()}, indent=2))
    return 0


def run_training(args: argparse.Namespace) -> int:
    if not args.data:
        print("error: --train needs --data (a tokenized folder or a corpus)", file=sys.stderr)
        return 2
    out = out_dir(args.out)
    started = time.perf_counter()
    summary, curves = [], []
    user_keys = {s.split("=", 1)[0].strip() for s in args.set}
    for preset in args.presets:
        base = [f"train.data={args.data}", f"train.out_dir={out / 'train' / preset}", f"train.device={args.device}"]
        if "train.snapshot_val_losses" not in user_keys:
            base.append(f"train.snapshot_val_losses={DEFAULT_THRESHOLDS}")
        probe = load_config(preset, base + args.set)
        per_step = probe.train.batch_size * probe.train.block_size * probe.train.grad_accum
        max_iters = max(1, math.ceil(float(args.tokens) / per_step))
        extra = [f"train.max_iters={max_iters}"]
        if "train.warmup_iters" not in user_keys and probe.train.warmup_iters >= max_iters:
            extra.append(f"train.warmup_iters={max(1, max_iters // 10)}")
        if "train.eval_interval" not in user_keys and probe.train.eval_interval > max_iters:
            extra.append(f"train.eval_interval={max(1, max_iters // 4)}")
        cfg = load_config(preset, base + extra + args.set)
        remaining = None
        if args.time_limit_s is not None:
            remaining = args.time_limit_s - (time.perf_counter() - started)
            if remaining <= 0:
                summary.append({"preset": preset, "status": "not started (time limit)"})
                continue
        run_dir = Path(cfg.train.out_dir)
        resume = args.resume and (run_dir / "latest").exists()
        result = train(cfg, resume=resume, progress=not args.no_progress, time_limit_s=remaining)
        records = read_metrics(run_dir)
        for r in records:
            curves.append({"preset": preset, "family": cfg.model.family, "step": r["step"],
                           "tokens_seen": r["tokens_seen"], "train_loss": r["train_loss"], "val_loss": r["val_loss"],
                           "val_bpc": r["val_bpc"], "lr": r["lr"], "tokens_per_s": r["tokens_per_s"]})
        speeds = [r["tokens_per_s"] for r in records if r["tokens_per_s"]]
        summary.append({
            "preset": preset, "status": "stopped (time limit): rerun with --resume" if result.stopped_early else "done",
            "steps": result.steps, "max_iters": max_iters, "tokens_seen": result.tokens_seen,
            "val_loss": result.val_loss, "val_bpc": result.val_bpc, "best_val_loss": result.best_val_loss,
            "best_val_bpc": result.best_val_bpc, "median_tokens_per_s": sorted(speeds)[len(speeds) // 2] if speeds else None,
            "snapshots": sorted(p.name for p in run_dir.glob("step_*")), "run_dir": str(run_dir),
            "train_tokens": result.info.train_tokens, "val_tokens": result.info.val_tokens,
            "n_params": result.info.n_params, "device": result.info.device,
        })
    if curves:
        with open(out / "loss_curves.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(curves[0]))
            writer.writeheader()
            writer.writerows(curves)
    (out / "train_summary.json").write_text(json.dumps({
        "data": args.data, "token_budget": float(args.tokens), "settings": vars(args), "runs": summary,
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }, indent=2, default=str) + "\n")
    print("| preset | status | steps | tokens seen | val loss | val bpc | best val loss | tokens/s (median) |")
    print("|---|---|---|---|---|---|---|---|")
    for s in summary:
        print(f"| {s['preset']} | {s['status']} | {s.get('steps', '')} | {s.get('tokens_seen', 0):,} | "
              f"{fmt(s.get('val_loss'), '.4f')} | {fmt(s.get('val_bpc'), '.4f')} | {fmt(s.get('best_val_loss'), '.4f')} | "
              f"{fmt(s.get('median_tokens_per_s'), ',.0f')} |")
    print(f"wrote {out / 'loss_curves.csv'} and {out / 'train_summary.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["baseline-28m", "spinnet-28m"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps (include compilation)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--compile", choices=["auto", "on", "off", "both"], default="auto",
                        help="auto: both on CUDA, off on CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--vocab-size", type=int, default=50257, help="for presets whose vocab comes from data")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the device's bf16 dense peak")
    parser.add_argument("--set", action="append", default=[], help="config override section.key=value")
    parser.add_argument("--out", default=None, help="output folder (default $OUT or results/benchmarks)")
    parser.add_argument("--train", action="store_true", help="real training of each preset (see --data, --tokens)")
    parser.add_argument("--data", default=None, help="--train: tokenized folder/.bin or a corpus")
    parser.add_argument("--tokens", type=float, default=20e6, help="--train: token budget per preset")
    parser.add_argument("--time-limit-s", type=float, default=None, help="--train: stop at a checkpoint after this")
    parser.add_argument("--resume", action="store_true", help="--train: continue runs found under --out")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--prepare", default=None, help="tokenize this corpus into <out>/data and exit")
    parser.add_argument("--tokenizer", default="gpt2", help="--prepare: tokenizer spec")
    parser.add_argument("--val-fraction", type=float, default=0.01, help="--prepare: validation share of documents")
    parser.add_argument("--seed", type=int, default=1337, help="--prepare: split seed")
    args = parser.parse_args(argv)
    from corpora.errors import UserError

    try:
        if args.prepare:
            return run_prepare(args)
        if args.train:
            return run_training(args)
        return run_throughput(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

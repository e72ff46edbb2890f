"""Aggregate training throughput of N small runs at once on one GPU (trainers.multirun), N = 1, 2, 4, 8.

Each N launches N real runs (trainers.train.train in N processes, each with its own CUDA context,
run directory, checkpoints and metrics) on a tokenized folder (--data: train.bin, val.bin, tokenizer/,
e.g. a 10K BPE), all with the same shape and step count, different seeds. A config is either one of
the benchmark-local SMALL_CONFIGS (32 x 512, compiled, unless --batch-size/--block-size/--compile say
otherwise) or a training preset (e.g. the study's spinnet-3m, baseline-3m-matched), which keeps its own
batch size, context and compile setting unless those flags are given. --mps on/both: the N runs share
the GPU through a CUDA MPS server (trainers.multirun's mps); every run must have been served by it,
or the benchmark stops with an error. Throughput per run is read from its own metrics_stream.jsonl (tokens_per_s of
each log interval, the trainer's own measure); the first interval (compilation) is left out and
the median of the rest is the run's steady rate.

    aggregate tokens/s (steady)  = sum over the N runs of their steady rate
    aggregate tokens/s (wall)    = all tokens trained / (last run's end - first run's train start),
                                   compilation, evaluation and checkpoints included
    speed-up = aggregate (steady) over the N = 1 aggregate of the same config without MPS
               (one plain run: the reference), measured in the same call

--stack: each N > 1 trains as one process over N models (trainers.stack: one vmapped stack, each run with
its own run directory, metrics and checkpoints) instead of N processes; the reference stays one plain run.

The small configs (SMALL_CONFIGS) are local to this benchmark, sized like the study's small runs
(1M-8M non-embedding parameters); the vocabulary comes from the tokenizer in --data.

    python benchmarks/gpu_multirun.py --data devcarry/ts10k/data --ns 1 2 4 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from corpora.errors import UserError  # noqa: E402
from trainers.metrics import read_metrics  # noqa: E402
from trainers.multirun import launch, plan_runs  # noqa: E402

SMALL_CONFIGS = {
    # 4 x 12 x 256^2 = 3.1M non-embedding weights in the blocks
    "small-baseline": {"family": "baseline", "n_layer": 4, "n_head": 4, "d_model": 256, "max_seq_len": 512},
    # octonion ternary linears: 8 x 12 x 512^2 / 8 = 3.1M non-embedding weights
    "small-spinnet": {"family": "spinnet", "n_layer": 8, "n_head": 8, "d_model": 512, "max_seq_len": 512},
}


def write_config(name: str, directory: Path) -> str:
    """A benchmark-local config as a YAML file; a preset name is returned as it is."""
    import yaml

    if name not in SMALL_CONFIGS:
        return name
    model = {"vocab_size": None, "mlp": "gelu", "mlp_ratio": 4.0, "dropout": 0.0, **SMALL_CONFIGS[name]}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"model": model, "train": {"tokenizer": "gpt2"}}))
    return str(path)


def steady_rate(run_dir: Path) -> float | None:
    rates = [r["tokens_per_s"] for r in read_metrics(run_dir) if r.get("tokens_per_s")]
    return statistics.median(rates[1:]) if len(rates) > 1 else None


def shape_overrides(name: str, args: argparse.Namespace) -> list[str]:
    """Batch size, context and compile: given flags for every config; otherwise the old defaults
    (32 x 512, compiled) for SMALL_CONFIGS and the preset's own settings for a preset."""
    local = name in SMALL_CONFIGS
    batch = args.batch_size if args.batch_size is not None else (32 if local else None)
    block = args.block_size if args.block_size is not None else (512 if local else None)
    compile_ = args.compile if args.compile is not None else (True if local else None)
    out = [f"train.batch_size={batch}"] if batch is not None else []
    out += [f"train.block_size={block}"] if block is not None else []
    out += [f"train.compile={str(compile_).lower()}"] if compile_ is not None else []
    if args.compile_mode != "default":
        out.append(f"train.compile_mode={args.compile_mode}")
    return out


def measure(config: str, n: int, mps: bool, args: argparse.Namespace, root: Path, stack: bool = False,
            ) -> dict[str, Any]:
    name = Path(config).stem if config.endswith(".yaml") else config
    overrides = [f"train.data={args.data}", f"train.max_iters={args.steps}", f"train.log_interval={args.log_interval}",
                 f"train.eval_interval={args.steps}", "train.eval_iters=2", "train.warmup_iters=10",
                 f"train.device={args.device}", *shape_overrides(name, args), *args.set]
    # the tokenizer of the tokenized folder, so that its identity check passes
    overrides.insert(0, f"train.tokenizer={Path(args.data) / 'tokenizer'}")
    layout = "stack" if stack else "mps" if mps else "plain"
    specs = plan_runs([config], overrides, list(range(1, n + 1)), root / f"n{n}-{layout}")
    started = time.time()
    outcomes = launch(specs, mps=mps, stack=n if stack else 1)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} of {n} runs failed; first log tail:\n{failed[0].log_tail}")
    if mps and not all(o.mps_server_seen for o in outcomes):
        raise RuntimeError("--mps: an MPS server was not seen serving every run; the row would not be what it says")
    train_cfg = specs[0].config.train
    rates = [steady_rate(o.run_dir) for o in outcomes]
    tokens = sum(o.result["tokens_seen"] for o in outcomes)
    t0 = min(o.result["train_start"] for o in outcomes)
    t1 = max(o.result["end"] for o in outcomes)
    return {
        "config": name, "n_runs": n, "mps": mps, "stacked": stack, "steps_per_run": args.steps,
        "compile_mode": train_cfg.compile_mode,
        "batch_size": train_cfg.batch_size, "block_size": train_cfg.block_size, "compile": train_cfg.compile,
        "n_params_non_embedding": outcomes[0].result["n_params_non_embedding"],
        "per_run_steady_tokens_per_s": rates, "aggregate_steady_tokens_per_s": sum(r or 0.0 for r in rates),
        "aggregate_wall_tokens_per_s": tokens / (t1 - t0), "launch_wall_s": time.time() - started,
        "final_val_loss": [o.result["val_loss"] for o in outcomes],
    }


def _compile_label(row: dict[str, Any]) -> str:
    if not row["compile"]:
        return "off"
    mode = row.get("compile_mode", "default")
    return "on" if mode == "default" else f"on ({mode})"


def _layout(row: dict[str, Any]) -> str:
    if row.get("stacked"):
        return "one process, stacked"
    if row["n_runs"] == 1:
        return "one run"
    return f"{row['n_runs']} processes" + (", MPS" if row["mps"] else "")


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| config | non-emb params | N runs | layout | batch x ctx | compile | per-run tokens/s (median) | "
             "aggregate tokens/s (steady) | speed-up vs one plain run | aggregate tokens/s (wall, incl. compile/eval) "
             "| launch wall s |",
             "|" + "---|" * 11]
    for r in rows:
        per = statistics.median([x for x in r["per_run_steady_tokens_per_s"] if x])
        lines.append(f"| {r['config']} | {r['n_params_non_embedding'] / 1e6:.2f}M | {r['n_runs']} | "
                     f"{_layout(r)} | {r['batch_size']} x {r['block_size']} | "
                     f"{_compile_label(r)} | {per:,.0f} | {r['aggregate_steady_tokens_per_s']:,.0f} | "
                     f"{r['speedup_vs_1']:.2f}x | {r['aggregate_wall_tokens_per_s']:,.0f} | {r['launch_wall_s']:.0f} |")
    return "\n".join(lines)


def load_bench() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_throughput", REPO / "benchmarks" / "train_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(bench)
    return bench


def write_outputs(rows: list[dict[str, Any]], args: argparse.Namespace, final: bool) -> None:
    """Tables of the rows so far (after every N: a call cut short keeps what it measured)."""
    import torch

    bench = load_bench()
    for r in rows:
        ones = [b for b in rows if b["config"] == r["config"] and b["n_runs"] == 1 and not b["mps"]
                and not b.get("stacked")]
        r["speedup_vs_1"] = r["aggregate_steady_tokens_per_s"] / ones[0]["aggregate_steady_tokens_per_s"] if ones else float("nan")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    command = "python benchmarks/gpu_multirun.py " + " ".join(args.argv)
    header = (f"device: {device}; torch {torch.__version__} (CUDA {torch.version.cuda}); trainers.multirun: one "
              f"process per run, or one process over N stacked models (layout 'stacked', trainers.stack); bf16 "
              f"autocast on CUDA; real data from --data; "
              f"{args.steps} steps per run, log every {args.log_interval}")
    text = f"`{command}`\n\n{header}\n\n{markdown(rows)}\n"
    if final:
        print(text)
    out = bench.out_dir(args.out)
    (out / "gpu_multirun.md").write_text(text)
    (out / "gpu_multirun.json").write_text(json.dumps({
        "command": command, "device": device, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "configs": {k: SMALL_CONFIGS.get(k, f"preset {k}") for k in args.configs}, "settings": vars(args),
        "rows": rows}, indent=2) + "\n")


def mps_settings(n: int, mps: str) -> list[bool]:
    """The MPS settings measured for N runs: N = 1 always runs plain (one run alone has nothing to share
    the GPU with, and it is every row's reference); N > 1 as --mps says."""
    if n == 1:
        return [False]
    return {"off": [False], "on": [True], "both": [False, True]}[mps]


def layouts(n: int, mps: str, stack: bool) -> list[tuple[bool, bool]]:
    """(mps, stacked) of each row measured for N runs: N = 1 one plain run (the reference); N > 1 one stacked
    process with --stack, else N processes as --mps says."""
    if stack and n > 1:
        return [(False, True)]
    return [(m, False) for m in mps_settings(n, mps)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="tokenized folder (train.bin, val.bin, tokenizer/)")
    parser.add_argument("--configs", nargs="+", default=["small-baseline", "small-spinnet"],
                        help=f"{', '.join(SMALL_CONFIGS)} or training presets (e.g. spinnet-3m)")
    parser.add_argument("--ns", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 (local configs), the preset's")
    parser.add_argument("--block-size", type=int, default=None, help="default: 512 (local configs), the preset's")
    parser.add_argument("--log-interval", type=int, default=50)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="default: on (local configs), the preset's")
    parser.add_argument("--mps", choices=["off", "on", "both"], default="off",
                        help="run the N runs through a CUDA MPS server (on), or measure each N both ways; N = 1 "
                        "always runs plain (the reference)")
    parser.add_argument("--stack", action="store_true", help="N > 1: one process over N models (trainers.stack) "
                        "instead of N processes; the N = 1 reference stays one plain run (refused with --mps on/both)")
    parser.add_argument("--device", default="cuda", help="train.device of every run (cpu for a smoke test)")
    parser.add_argument("--compile-mode", default="default", help="train.compile_mode of every run (needs --compile)")
    parser.add_argument("--set", action="append", default=[], help="override for every run: section.key=value")
    parser.add_argument("--out", default=None, help="output folder (default $OUT or results/benchmarks)")
    parser.add_argument("--work", default=None, help="where the runs go (default a temporary folder)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    rows: list[dict[str, Any]] = []
    if args.stack and args.mps != "off":
        print("error: --stack trains N models in one process: MPS has nothing to share (leave --mps off)",
              file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(args.work) if args.work else Path(tmp)
            for name in args.configs:
                config = write_config(name, root)
                for n in args.ns:
                    for mps, stacked in layouts(n, args.mps, args.stack):
                        row = measure(config, n, mps, args, root / name, stacked)
                        rows.append(row)
                        write_outputs(rows, args, final=False)
                        print(f"{name} N={n} {_layout(row)}: aggregate {row['aggregate_steady_tokens_per_s']:,.0f} tokens/s "
                              f"(per run {row['per_run_steady_tokens_per_s']})", flush=True)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_outputs(rows, args, final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

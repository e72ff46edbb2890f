"""Training throughput of SpinNet vs the baseline, measured in one run; and a real training mode.

Throughput (default): for each preset (default baseline-28m and spinnet-28m), batch size and
variant (--variants: a lever setting, see VARIANTS: eager, compiled, CE inside the compiled graph,
chunked CE, foreach vs fused AdamW, max-autotune, CUDA graphs) at the SAME context, build the model
and its AdamW as trainers.train does, run `--warmup` steps (which also absorb torch.compile), then
time `--steps` steps, each between two device events; the step time is their median.
--repeats R (R > 1) interleaves: every case is built and warmed up first, then R rounds time each case
in turn, and each row reports the pooled median and the ratio to its baseline within each round (min-max),
so that a machine's slow spell cannot favour one case (small steps moved ~10% between calls).
A step = forward under bf16 autocast (CUDA; fp32 on CPU), fp32 cross-entropy, backward, grad
clipping, AdamW. Batches are random token ids already on the device: data loading is excluded.
Every flag either takes effect in the chosen mode or is refused (MODE_FLAGS); --vocab-size sets
model.vocab_size of the built model (the row's vocab_size column is read back from the model).

    tokens/s   = batch_size * block_size / (median step time)
    MFU        = flops_per_token * tokens/s / peak
    flops_per_token = Transformer.estimate_flops_per_token(block_size)
                    = 6 * N_matmul + 12 * n_layer * d_model * block_size   (PaLM / nanoGPT)
    N_matmul counts the weights the GEMMs multiply (SpinNet: the full assembled block matrices,
    n times its parameters; plus the tied head), so both families are charged the same dense FLOPs.
    MFU (matmul peak) = the same over a bf16 8192^3 matrix product timed in the same run.
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

from corpora.errors import UserError  # noqa: E402
from trainers.config import load_config  # noqa: E402
from trainers.model import build_model  # noqa: E402
from trainers.stack import ModelStack  # noqa: E402
from trainers.train import configure_optimizer, read_metrics, token_losses, train  # noqa: E402

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

# Each variant is one lever setting, measured on the same model, batch and optimizer:
#   compile: None (eager) or a torch.compile mode; loss: where the cross-entropy runs --
#   "outside" (eager fp32 CE after the compiled model, as trainers.train did before issue 17),
#   "separate" (model and CE compiled as two graphs, as trainers.train does with train.compile),
#   "inside" (model and CE compiled as one graph), "chunked" (trainers.fused.chunked_head_losses, compiled with the model);
#   adam: "fused" (one multi-tensor kernel, trainers.train's choice on CUDA) or "foreach";
#   fold_mixer: False runs SpinNet's octonion head mixer as the einsum over (B, H, T, hd), as before (the
#   model's default merges it into the output projection's weight, Attention.proj_weight_with_mixer).
VARIANTS: dict[str, dict[str, Any]] = {
    "eager": {"compile": None, "loss": "outside", "adam": "fused"},
    "compile": {"compile": "default", "loss": "outside", "adam": "fused"},
    "compile-foreach-adam": {"compile": "default", "loss": "outside", "adam": "foreach"},
    "compile-sep-loss": {"compile": "default", "loss": "separate", "adam": "fused"},
    "compile-loss": {"compile": "default", "loss": "inside", "adam": "fused"},
    "compile-loss-cdt": {"compile": "default", "loss": "inside", "adam": "fused",
                         "inductor": {"coordinate_descent_tuning": True}},
    "compile-chunked-ce": {"compile": "default", "loss": "chunked", "adam": "fused"},
    "compile-loss-einsum-mixer": {"compile": "default", "loss": "inside", "adam": "fused", "fold_mixer": False},
    "autotune-loss": {"compile": "max-autotune-no-cudagraphs", "loss": "inside", "adam": "fused"},
    "cudagraphs-loss": {"compile": "reduce-overhead", "loss": "inside", "adam": "fused"},
    "autotune-cudagraphs-loss": {"compile": "max-autotune", "loss": "inside", "adam": "fused"},
    # inductor knobs on top: coordinate-descent tuning of the fused elementwise/reduction kernels' launch
    # configs (a quarter of the 28M step is such memory-bound kernels), and combo kernels, which fuse
    # independent small kernels horizontally (SpinNet's per-matrix ternarise + block assembly at 1m)
    "autotune-loss-cdt": {"compile": "max-autotune-no-cudagraphs", "loss": "inside", "adam": "fused",
                          "inductor": {"coordinate_descent_tuning": True}},
    "cudagraphs-loss-cdt": {"compile": "reduce-overhead", "loss": "inside", "adam": "fused",
                            "inductor": {"coordinate_descent_tuning": True}},
    "cudagraphs-loss-combo": {"compile": "reduce-overhead", "loss": "inside", "adam": "fused",
                              "inductor": {"combo_kernels": True}},
    # a bf16 residual stream (model.residual_dtype=autocast, Megatron-LM's default): the norms and residual
    # adds move half the bytes; "set" = config overrides of the built model (the row reads them back)
    "compile-loss-cdt-bf16res": {"compile": "default", "loss": "inside", "adam": "fused",
                                 "inductor": {"coordinate_descent_tuning": True},
                                 "set": ["model.residual_dtype=autocast"]},
    "compile-loss-bf16res": {"compile": "default", "loss": "inside", "adam": "fused",
                             "set": ["model.residual_dtype=autocast"]},
    "autotune-loss-bf16res": {"compile": "max-autotune-no-cudagraphs", "loss": "inside", "adam": "fused",
                              "set": ["model.residual_dtype=autocast"]},
    # max-autotune's tuning of the fused pointwise/reduction kernels without its GEMM autotuning (cuBLAS won every
    # GEMM it tuned, sections 2 and 5 of results/.../issue17; the GEMM tuning is what made compiling take minutes)
    "tuned-loss-bf16res": {"compile": "default", "loss": "inside", "adam": "fused",
                           "inductor": {"max_autotune_pointwise": True, "coordinate_descent_tuning": True},
                           "set": ["model.residual_dtype=autocast"]},
    # SpinNet only (skipped for baseline presets): each block linear ternarises and assembles its own weight, as
    # before the batched quantisation (Transformer.batch_quantize); its ratio is taken against the baseline's
    # row of `baseline_variant` (the setting does not touch a baseline)
    "cudagraphs-loss-perlayer-quant": {"compile": "reduce-overhead", "loss": "inside", "adam": "fused",
                                       "batch_quantize": False, "spinnet_only": True,
                                       "baseline_variant": "cudagraphs-loss"},
    "eager-perlayer-quant": {"compile": None, "loss": "outside", "adam": "fused",
                             "batch_quantize": False, "spinnet_only": True, "baseline_variant": "eager"},
    "compile-loss-perlayer-quant": {"compile": "default", "loss": "inside", "adam": "fused",
                                    "batch_quantize": False, "spinnet_only": True, "baseline_variant": "compile-loss"},
    # N models of the preset (seeds 0..N-1) trained as one vmapped stack (trainers.stack.ModelStack), each with its
    # own optimizer and clipping; tokens/s counts all N models' tokens and is compared with one model's row of
    # `stack_reference` (the same step unstacked) in the "vs one model" column. Compiled, the stack leaves cuDNN
    # attention out (inductor failed on it under vmap on torch 2.11, results/.../run6-h100-stack)
    "eager-stack4": {"compile": None, "loss": "inside", "adam": "fused", "stack": 4, "stack_reference": "eager"},
    "eager-stack8": {"compile": None, "loss": "inside", "adam": "fused", "stack": 8, "stack_reference": "eager"},
    "eager-stack16": {"compile": None, "loss": "inside", "adam": "fused", "stack": 16, "stack_reference": "eager"},
    # the stack's forward + loss compiled as one graph (ModelStack.compile_mode; cuDNN attention left out)
    "compile-loss-stack8": {"compile": "default", "loss": "inside", "adam": "fused", "stack": 8,
                            "stack_reference": "compile-loss"},
}


def make_optimizer(model: torch.nn.Module, cfg: Any, device: torch.device, adam: str) -> torch.optim.Optimizer:
    if adam == "fused" or device.type != "cuda":
        return configure_optimizer(model, cfg.train, device.type)  # exactly what trainers.train builds
    groups = configure_optimizer(model, cfg.train, "cpu").param_groups  # same groups, no fused flag
    return torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]} for g in groups],
                             lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2), foreach=True)


def loss_function(model: torch.nn.Module, variant: dict[str, Any], chunk_tokens: int) -> Any:
    """(x, y) -> mean cross-entropy, built as the variant says (compiled or not, CE inside or not)."""
    from trainers.fused import chunked_head_losses

    mode = variant["compile"]

    def compiled(fn: Any) -> Any:
        return fn if mode is None else torch.compile(fn, mode=None if mode == "default" else mode)

    if variant["loss"] == "outside":
        forward = compiled(model)
        return lambda x, y: token_losses(forward(x).logits, y).mean()
    if variant["loss"] == "separate":
        forward, losses = compiled(model), compiled(token_losses)
        return lambda x, y: losses(forward(x).logits, y).mean()
    if variant["loss"] == "inside":
        return compiled(lambda x, y: token_losses(model(x).logits, y).mean())
    return compiled(lambda x, y: chunked_head_losses(model.final_hidden(x), model.embedding_weight(), y, chunk_tokens).mean())


def stacked_loss(stack: ModelStack) -> Any:
    """(x, y) of shape (N, B, T) -> the sum of the N models' mean cross-entropies (compiled if the stack is)."""
    return lambda x, y: stack.losses(x, y).sum()


def measure_matmul_peak(device: torch.device, n: int = 8192, reps: int = 20) -> float | None:
    """bf16 n^3 matrix product rate (FLOP/s, median of `reps` event-timed products on random data)."""
    if device.type != "cuda":
        return None
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return 2 * n**3 / sorted(times)[len(times) // 2]


def build_case(preset: str, batch_size: int, args: argparse.Namespace, variant_set: list[str] = ()) -> Any:
    overrides = [f"train.batch_size={batch_size}", f"train.block_size={args.block_size}", "train.grad_accum=1"]
    if args.vocab_size is not None:
        overrides.append(f"model.vocab_size={args.vocab_size}")
    clash = {o.split("=", 1)[0] for o in variant_set} & {o.split("=", 1)[0] for o in args.set}
    if clash:
        raise UserError(f"--set {', '.join(sorted(clash))} clashes with a variant's own setting: leave it out")
    cfg = load_config(preset, overrides + list(variant_set) + args.set)
    if cfg.model.vocab_size is None:
        raise UserError(f"{preset} takes its vocabulary from the tokenizer: pass --vocab-size")
    return cfg


def variant_model(cfg: Any, variant: dict[str, Any], device: torch.device, seed: int = 0) -> torch.nn.Module:
    """The model of a case (seed 0; a stack's N models seeds 0..N-1) with the variant's model switches applied
    (fold_mixer, batch_quantize)."""
    torch.manual_seed(seed)
    model = build_model(cfg.model).to(device)
    if "fold_mixer" in variant:
        for block in model.blocks:
            block.attn.fold_mixer = variant["fold_mixer"]
    if "batch_quantize" in variant:
        model.batch_quantize = variant["batch_quantize"]
    return model


def timed_steps(step: Any, n: int, device: torch.device) -> list[float]:
    """Seconds per step: device events around each step on CUDA, host clock on the CPU."""
    times = []
    for _ in range(n):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return times


def measure(preset: str, batch_size: int, variant_name: str, args: argparse.Namespace,
            device: torch.device, matmul_peak: float | None) -> dict[str, Any]:
    case = prepare(preset, batch_size, variant_name, args, device)
    return case_row(case, timed_steps(case["step"], args.steps, device), args, matmul_peak)


def prepare(preset: str, batch_size: int, variant_name: str, args: argparse.Namespace,
            device: torch.device) -> dict[str, Any]:
    """Build the case (model, optimizer, step) and run its warm-up steps (which compile it)."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(VARIANTS[variant_name].get("inductor", {})):  # compilation happens inside
        return _prepare(preset, batch_size, variant_name, args, device)


def _prepare(preset: str, batch_size: int, variant_name: str, args: argparse.Namespace,
             device: torch.device) -> dict[str, Any]:
    variant = VARIANTS[variant_name]
    cfg = build_case(preset, batch_size, args, variant.get("set", []))
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    n_stack = variant.get("stack", 1)
    models = [variant_model(cfg, variant, device, seed) for seed in range(n_stack)]
    # re-binds the parameters: before the optimizers
    stack = ModelStack(models, compile_mode=variant["compile"]) if "stack" in variant else None
    optimizers = [make_optimizer(m, cfg, device, variant["adam"]) for m in models]
    loss_fn = loss_function(models[0], variant, args.chunk_tokens) if stack is None else stacked_loss(stack)
    cudagraphs = variant["compile"] in ("reduce-overhead", "max-autotune")
    vocab, b, t = cfg.model.vocab_size, cfg.train.batch_size, cfg.train.block_size
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, vocab, (n_stack, b, t + 1), generator=gen).to(device)
    x, y = (batch[..., :-1], batch[..., 1:]) if stack is not None else (batch[0, :, :-1], batch[0, :, 1:])

    def step() -> None:
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_fn(x, y)
        loss.backward()
        if stack is not None:
            stack.scatter_grads()
        for model, optimizer in zip(models, optimizers, strict=True):  # each model clipped and stepped as alone
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    before = 0
    if device.type == "cuda":
        before = torch.cuda.memory_allocated(device)  # the cases kept alive by --repeats
        torch.cuda.reset_peak_memory_stats(device)
    compile_start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync(device)
    peak = (torch.cuda.max_memory_allocated(device) - before) / 2**30 if device.type == "cuda" else None
    return {"preset": preset, "variant_name": variant_name, "cfg": cfg, "model": models[0], "step": step,
            "n_models": n_stack,
            "device": device, "dtype": dtype, "warmup_s": time.perf_counter() - compile_start, "peak_gib": peak}


def case_row(case: dict[str, Any], times: list[float], args: argparse.Namespace,
             matmul_peak: float | None, round_times: list[list[float]] | None = None) -> dict[str, Any]:
    """The table row of a prepared case from its timed steps (all rounds pooled with --repeats)."""
    preset, variant_name, cfg, model = case["preset"], case["variant_name"], case["cfg"], case["model"]
    device, dtype, variant = case["device"], case["dtype"], VARIANTS[case["variant_name"]]
    b, t, n_models = cfg.train.batch_size, cfg.train.block_size, case["n_models"]
    step_s = sorted(times)[len(times) // 2]
    tokens_per_s = n_models * b * t / step_s  # a stack: all its models' tokens
    flops_per_token = model.estimate_flops_per_token(t)
    label, peak = device_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else (None, None)
    if args.peak_tflops:
        label, peak = f"given {args.peak_tflops} TFLOP/s", args.peak_tflops * 1e12
    achieved = flops_per_token * tokens_per_s
    return {
        "preset": preset, "family": cfg.model.family, "variant": variant_name,
        "compile": variant["compile"] is not None, "compile_mode": variant["compile"], "loss": variant["loss"],
        "adam": variant["adam"] if device.type == "cuda" else "foreach/for-loop (CPU)",
        "device": device_name(device), "dtype": str(dtype).replace("torch.", ""), "batch_size": b, "block_size": t,
        "models_stacked": n_models,
        "vocab_size": model.wte.weight.shape[0], "n_params": sum(p.numel() for p in model.parameters()),
        "d_model": cfg.model.d_model, "n_layer": cfg.model.n_layer,
        "mixer": ("none" if model.blocks[0].attn.mixer is None else
                  "folded into proj" if model.blocks[0].attn.proj_weight_with_mixer() is not None
                  and model.blocks[0].attn.fold_mixer else "einsum"),
        "residual_dtype": cfg.model.residual_dtype,
        "quantisation": ("n/a" if cfg.model.family != "spinnet" else
                         "batched" if model.batched_block_weights() is not None else "per layer"),
        "n_params_non_embedding": model.num_parameters(exclude_embeddings=True),
        "flops_per_token": flops_per_token, "warmup_steps": args.warmup, "timed_steps": len(times),
        "rounds": len(round_times) if round_times else 1,
        "round_step_ms": [1000 * sorted(r)[len(r) // 2] for r in round_times] if round_times else None,
        "warmup_s": case["warmup_s"], "step_time_ms": 1000 * step_s,
        "step_time_ms_min": 1000 * min(times), "step_time_ms_max": 1000 * max(times),
        "tokens_per_s": tokens_per_s, "achieved_tflops": achieved / 1e12, "peak_label": label,
        "peak_tflops": peak / 1e12 if peak else None, "mfu": achieved / peak if peak else None,
        "matmul_peak_tflops": matmul_peak / 1e12 if matmul_peak else None,
        "mfu_vs_matmul": achieved / matmul_peak if matmul_peak else None,
        "peak_memory_gib": case["peak_gib"],
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _spread(values: list[float] | None) -> str:
    return f" {min(values):.3f}-{max(values):.3f} |" if values else " n/a |"


def markdown(rows: list[dict[str, Any]]) -> str:
    rounds = any(r["rounds"] > 1 for r in rows)
    stacks = any(r["models_stacked"] > 1 for r in rows)
    head = ("| preset | compile | batch x ctx | variant | vocab | params | d x layers | step ms | tokens/s | TFLOP/s | "
            "MFU (datasheet) | MFU (matmul peak) | step time vs same-shape baseline |"
            + (" per round (min-max) |" if rounds else "")
            + (" models | tokens/s vs one model |" + (" per round (min-max) |" if rounds else "") if stacks else "")
            + " peak mem GiB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        per_round = _spread(r.get("round_ratios_vs_baseline")) if rounds else ""
        stacked = ""
        if stacks:
            stacked = f" {r['models_stacked']} | {fmt(r.get('tokens_per_s_vs_one_model'), '.2f')} |"
            stacked += _spread(r.get("round_ratios_vs_one_model")) if rounds else ""
        lines.append(
            f"| {r['preset']} | {'on' if r['compile'] else 'off'} | {r['batch_size']} x {r['block_size']} | "
            f"{r['variant']} | {r['vocab_size']} | {r['n_params'] / 1e6:.2f}M | {r['d_model']} x {r['n_layer']} | "
            f"{r['step_time_ms']:.2f} | "
            f"{r['tokens_per_s']:,.0f} | {r['achieved_tflops']:.1f} | {pct(r['mfu'])} | {pct(r['mfu_vs_matmul'])} | "
            f"{fmt(r.get('step_time_ratio_vs_baseline'), '.3f')} |{per_round}{stacked} {fmt(r['peak_memory_gib'], '.1f')} |"
        )
    return "\n".join(lines)


def write_outputs(rows: list[dict[str, Any]], args: argparse.Namespace, variants: list[str],
                  matmul_peak: float | None, final: bool) -> None:
    """Table, CSV and JSON of the rows so far (written after every row: a run cut short keeps them)."""
    for r in rows:
        # the baseline of the same shape (d_model, n_layer), variant, batch and context: spinnet-3m is
        # compared with baseline-3m-shape, spinnet-28m with baseline-28m
        wanted = VARIANTS[r["variant"]].get("baseline_variant", r["variant"])
        base = [b for b in rows if b["family"] == "baseline" and b["variant"] == wanted
                and b["batch_size"] == r["batch_size"] and b["block_size"] == r["block_size"]
                and (b["d_model"], b["n_layer"]) == (r["d_model"], r["n_layer"])]
        r["step_time_ratio_vs_baseline"] = r["step_time_ms"] / base[0]["step_time_ms"] if base else None
        # --repeats: the same ratio within each round (the cases ran interleaved), to show its spread
        r["round_ratios_vs_baseline"] = ([a / b for a, b in zip(r["round_step_ms"], base[0]["round_step_ms"], strict=True)]
                                         if base and r["round_step_ms"] else None)
        # a stack: its aggregate tokens/s over one model's, the same preset and shape unstacked (`stack_reference`)
        reference = VARIANTS[r["variant"]].get("stack_reference")
        one = [o for o in rows if o["variant"] == reference and o["preset"] == r["preset"]
               and o["batch_size"] == r["batch_size"] and o["block_size"] == r["block_size"]]
        r["tokens_per_s_vs_one_model"] = r["tokens_per_s"] / one[0]["tokens_per_s"] if one else None
        r["round_ratios_vs_one_model"] = ([r["models_stacked"] * b / a for a, b in
                                           zip(r["round_step_ms"], one[0]["round_step_ms"], strict=True)]
                                          if one and r["round_step_ms"] else None)
    table = markdown(rows)
    peak_line = next((f"peak used: {r['peak_label']} = {r['peak_tflops']:.0f} TFLOP/s bf16 dense"
                      for r in rows if r["peak_tflops"]), "peak: unknown for this device (MFU not reported)")
    if matmul_peak:
        peak_line += (f"; bf16 8192^3 matmul measured in this run: {matmul_peak / 1e12:.0f} TFLOP/s "
                      "(median of 20, random data) = the 'matmul peak' column's denominator")
    timing = (f"median of {args.steps} event-timed steps after {args.warmup} warm-up steps" if args.repeats == 1 else
              f"median of {args.repeats} rounds x {args.steps} event-timed steps; every case was built and warmed up "
              f"({args.warmup} steps) first, then the rounds ran the cases in turn (interleaved, {ROUND_WARMUP} "
              "untimed steps before each case's turn); 'per round' = the ratio within each round, min-max")
    header = (f"device: {rows[0]['device']}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
              f"dtype {rows[0]['dtype']}; step time = {timing}; random token ids on the device (data loading excluded)")
    command = "python benchmarks/train_throughput.py " + " ".join(args.argv)
    out = out_dir(args.out)
    with open(out / "train_throughput.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = {
        "command": command, "device": rows[0]["device"], "peak": peak_line, "formula": FORMULA,
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "data": "random token ids on the device (data loading excluded)",
        "variants": {name: VARIANTS[name] for name in variants},
        "settings": applied_settings(args, "throughput"), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "rows": rows,
    }
    (out / "train_throughput.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    (out / "train_throughput.md").write_text(
        f"`{command}`\n\n{header}\n\n{table}\n\n{peak_line}\n\n{FORMULA}\n\n"
        + "\n".join(f"- {name}: {VARIANTS[name]}" for name in variants) + "\n")
    if not final:
        return
    print()
    print(header)
    print(table)
    print(peak_line)


def default_variants(device: torch.device) -> list[str]:
    return ["eager", "compile"] if device.type == "cuda" else ["eager"]


def run_throughput(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    variants = args.variants or default_variants(device)
    for name in variants:
        if name not in VARIANTS:
            raise UserError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        if device.type != "cuda" and VARIANTS[name]["compile"] not in (None, "default"):
            raise UserError(f"variant {name} needs CUDA (compile mode {VARIANTS[name]['compile']})")
        if device.type != "cuda" and "model.residual_dtype=autocast" in VARIANTS[name].get("set", []):
            raise UserError(f"variant {name} needs CUDA (a bf16 residual stream needs the bf16 autocast, "
                            "which this benchmark runs on CUDA only)")
    matmul_peak = measure_matmul_peak(device)
    if args.repeats > 1:
        return run_interleaved(args, variants, device, matmul_peak)
    rows = []
    for batch_size in args.batch_size:
        for name in variants:
            for preset in applicable(args.presets, name):
                rows.append(measure(preset, batch_size, name, args, device, matmul_peak))
                torch._dynamo.reset()  # each case compiles its own model; keep the caches from piling up
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                write_outputs(rows, args, variants, matmul_peak, final=False)
                print(f"measured {preset} {name} b={batch_size}: {rows[-1]['step_time_ms']:.1f} ms/step, "
                      f"{rows[-1]['tokens_per_s']:,.0f} tokens/s, MFU {pct(rows[-1]['mfu'])}", flush=True)
    write_outputs(rows, args, variants, matmul_peak, final=True)
    print(f"wrote {out_dir(args.out) / 'train_throughput.csv'}, .json, .md")
    return 0


def applicable(presets: list[str], variant: str) -> list[str]:
    """The presets a variant is measured on: a SpinNet-only setting is not run (nor recorded) on a baseline."""
    if not VARIANTS[variant].get("spinnet_only"):
        return presets
    return [p for p in presets if load_config(p).model.family == "spinnet"]


ROUND_WARMUP = 3  # untimed steps before each case's turn in a round (a switch of compiled graphs settles)


def run_interleaved(args: argparse.Namespace, variants: list[str], device: torch.device,
                    matmul_peak: float | None) -> int:
    """--repeats R: build and warm up every case first, then R rounds that time each case in turn, so
    that a slow spell of the machine lands on every case alike (a 6 ms step moved ~10% between calls)."""
    import torch._dynamo.config as dynamo_config

    keys = [(b, name, preset) for b in args.batch_size for name in variants for preset in applicable(args.presets, name)]
    # every live case keeps its compiled code: room for all of them in dynamo's per-function cache
    dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, 2 * len(keys))
    cases = []
    for b, name, preset in keys:
        cases.append(prepare(preset, b, name, args, device))
        print(f"prepared {preset} {name} b={b} ({cases[-1]['warmup_s']:.0f} s warm-up)", flush=True)
    round_times: list[list[list[float]]] = [[] for _ in cases]
    rows: list[dict[str, Any]] = []
    for r in range(args.repeats):
        for case, times in zip(cases, round_times, strict=True):
            for _ in range(ROUND_WARMUP):
                case["step"]()
            times.append(timed_steps(case["step"], args.steps, device))
        rows = [case_row(case, [t for rt in times for t in rt], args, matmul_peak, round_times=times)
                for case, times in zip(cases, round_times, strict=True)]
        write_outputs(rows, args, variants, matmul_peak, final=False)
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(
            f"{c['preset']} {c['variant_name']} {row['round_step_ms'][-1]:.2f} ms" for c, row in zip(cases, rows, strict=True)),
            flush=True)
    write_outputs(rows, args, variants, matmul_peak, final=True)
    print(f"wrote {out_dir(args.out) / 'train_throughput.csv'}, .json, .md")
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
        base += train_overrides(args)
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
        "data": args.data, "token_budget": float(args.tokens), "settings": applied_settings(args, "train"),
        "runs": summary,
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


def train_overrides(args: argparse.Namespace) -> list[str]:
    """--batch-size / --block-size / --vocab-size as config overrides for --train (they take effect there)."""
    extra = []
    if args.given_batch_size:
        if len(args.batch_size) != 1:
            raise UserError("--train takes one --batch-size (several are for the throughput table)")
        extra.append(f"train.batch_size={args.batch_size[0]}")
    if args.given_block_size:
        extra.append(f"train.block_size={args.block_size}")
    if args.vocab_size is not None:
        extra.append(f"model.vocab_size={args.vocab_size}")
    return extra


# Which flags each mode uses. A flag given in a mode that does not use it is refused (nothing is
# recorded that did not take effect); the JSON records exactly the settings of its mode.
MODE_FLAGS = {
    "throughput": {"presets", "batch_size", "block_size", "warmup", "steps", "variants", "device", "vocab_size",
                   "peak_tflops", "chunk_tokens", "set", "out", "repeats"},
    "train": {"presets", "batch_size", "block_size", "device", "vocab_size", "set", "out", "train", "data",
              "tokens", "time_limit_s", "resume", "no_progress"},
    "prepare": {"prepare", "tokenizer", "val_fraction", "seed", "out"},
}
DEFAULTS: dict[str, Any] = {
    "presets": ["baseline-28m", "spinnet-28m"], "batch_size": [32], "block_size": 512, "warmup": 10, "steps": 30,
    "repeats": 1,
    "variants": [], "device": "auto", "chunk_tokens": 8192, "set": [], "tokens": 20e6, "tokenizer": "gpt2",
    "val_fraction": 0.01, "seed": 1337, "train": False, "resume": False, "no_progress": False,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--presets", nargs="+", default=None, help="default baseline-28m spinnet-28m")
    add("--batch-size", type=int, nargs="+", default=None, help="throughput: one or more (default 32); --train: one")
    add("--block-size", type=int, default=None, help="default 512 (throughput); --train: the preset's unless given")
    add("--warmup", type=int, default=None, help="untimed steps, include compilation (default 10)")
    add("--steps", type=int, default=None, help="timed steps (default 30; per round with --repeats)")
    add("--repeats", type=int, default=None, help="rounds of timed steps, every case in turn each round "
        "(interleaved: all cases stay built; default 1 = one case after another)")
    add("--variants", nargs="+", default=None, help=f"levers to measure: {', '.join(VARIANTS)} (default eager "
        "compile on CUDA, eager on CPU)")
    add("--chunk-tokens", type=int, default=None, help="tokens per chunk of the compile-chunked-ce variant (8192)")
    add("--device", default=None)
    add("--vocab-size", type=int, default=None, help="sets model.vocab_size (needed where the preset leaves it null)")
    add("--peak-tflops", type=float, default=None, help="override the device's bf16 dense peak")
    add("--set", action="append", default=None, help="config override section.key=value")
    add("--out", default=None, help="output folder (default $OUT or results/benchmarks)")
    add("--train", action="store_true", default=None, help="real training of each preset (see --data, --tokens)")
    add("--data", default=None, help="--train: tokenized folder/.bin or a corpus")
    add("--tokens", type=float, default=None, help="--train: token budget per preset (20e6)")
    add("--time-limit-s", type=float, default=None, help="--train: stop at a checkpoint after this")
    add("--resume", action="store_true", default=None, help="--train: continue runs found under --out")
    add("--no-progress", action="store_true", default=None)
    add("--prepare", default=None, help="tokenize this corpus into <out>/data and exit")
    add("--tokenizer", default=None, help="--prepare: tokenizer spec (gpt2)")
    add("--val-fraction", type=float, default=None, help="--prepare: validation share of documents (0.01)")
    add("--seed", type=int, default=None, help="--prepare: split seed (1337)")
    args = parser.parse_args(argv)
    mode = "prepare" if args.prepare else "train" if args.train else "throughput"
    given = {k for k, v in vars(args).items() if v is not None}
    refused = sorted(given - MODE_FLAGS[mode])
    if refused:
        flags = ", ".join("--" + k.replace("_", "-") for k in refused)
        raise UserError(f"{flags} has no effect in {mode} mode: leave it out")
    if args.repeats is not None and args.repeats < 1:
        raise UserError("--repeats must be >= 1")
    if mode == "throughput" and args.chunk_tokens is not None and "compile-chunked-ce" not in (args.variants or []):
        raise UserError("--chunk-tokens applies only to the compile-chunked-ce variant: add it to --variants")
    args.mode, args.argv = mode, list(sys.argv[1:] if argv is None else argv)
    args.given_batch_size, args.given_block_size = args.batch_size is not None, args.block_size is not None
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def applied_settings(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """The settings of `mode`, each as it took effect (--train: batch/block size only when given)."""
    out = {k: getattr(args, k) for k in sorted(MODE_FLAGS[mode])}
    if mode == "train":
        out["batch_size"] = args.batch_size[0] if args.given_batch_size else "preset's"
        out["block_size"] = args.block_size if args.given_block_size else "preset's"
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if args.mode == "prepare":
            return run_prepare(args)
        if args.mode == "train":
            return run_training(args)
        return run_throughput(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

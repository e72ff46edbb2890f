"""Where the training step's GPU time goes: torch profiler kernels, bucketed, per preset.

For each preset, the step of benchmarks/train_throughput.py (same model, optimizer, variant, random
token ids on the device) runs `--warmup` steps, then `--steps` steps under torch.profiler with CUDA
activity. Every kernel's duration is summed into one bucket by its name (BUCKETS, first match
wins; inductor names its fused kernels after the aten ops they hold, e.g.
triton_red_fused__log_softmax_..., so compiled kernels are bucketed too):

    GEMM (cuBLAS / CUTLASS / inductor mm templates), attention (flash / efficient SDPA),
    LM-head cross-entropy (softmax, log-softmax, nll), ternary quantise + block assembly (SpinNet's
    abs-mean / round / clamp and the gather of the block matrix, and their backward scatter),
    norms / RoPE / GELU / residual (the other fused elementwise and reduction kernels),
    optimizer (fused AdamW), grad clipping (foreach norms and scaling), copies / casts / fills.

GEMM time includes the LM head's GEMMs; the head's share is given by a separate row that times its
three bf16 GEMMs (forward, grad of hidden, grad of head) alone at the same shape. "idle" = event-timed
step time minus the summed kernel time (launch gaps, host work).

    python benchmarks/gpu_profile.py --batch-size 128 --vocab-size 10000 --variant compile
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from corpora.errors import UserError  # noqa: E402

BUCKETS: list[tuple[str, str]] = [
    ("optimizer (AdamW)", r"adam"),
    ("grad clipping (norms, scale)", r"multi_tensor_apply|foreach|lpnorm|norm_kernel"),
    ("attention (SDPA)", r"flash|fmha|attention|sdpa|cudnn"),
    ("LM-head cross-entropy", r"softmax|nll_loss|cross_entropy|logsumexp"),
    ("embedding (lookup + backward)", r"embedding"),
    ("ternary quantise + block assembly", r"(?:^|[_\W])(?:round|sign|abs)(?:[_\W]|$)|index_select|index_add|index_put|scatter|gather"),
    ("GEMM", r"gemm|cutlass|xmma|nvjet|sm90_|cublas|triton_tem_fused_mm|_mm_|splitk|matmul"),
    ("norms / RoPE / GELU / residual", r"rsqrt|rms|gelu|erf|tanh|mul|add|cat|neg|sin|cos|pow|mean|sum|div"),
    ("copies / casts / fills", r"copy|fill|memset|memcpy|convert|cast"),
]


def load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("train_throughput", REPO / "benchmarks" / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def bucket_of(kernel_name: str) -> str:
    low = kernel_name.lower()
    for label, pattern in BUCKETS:
        if re.search(pattern, low):
            return label
    return "other"


def head_gemm_ms(n_tokens: int, d_model: int, vocab: int, device: torch.device, reps: int = 20) -> float:
    """Median ms of the tied head's three bf16 GEMMs (forward, grad hidden, grad weight) alone."""
    gen = torch.Generator(device=device).manual_seed(0)
    h = torch.randn(n_tokens, d_model, device=device, dtype=torch.bfloat16, generator=gen)
    w = torch.randn(vocab, d_model, device=device, dtype=torch.bfloat16, generator=gen)
    g = torch.randn(n_tokens, vocab, device=device, dtype=torch.bfloat16, generator=gen)

    def gemms() -> None:
        h @ w.t()
        g @ w
        g.t() @ h

    for _ in range(3):
        gemms()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        gemms()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[reps // 2]


def profile_preset(bench: Any, preset: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    import torch._inductor.config as inductor_config

    with inductor_config.patch(bench.VARIANTS[args.variant].get("inductor", {})):
        return _profile_preset(bench, preset, args, device)


def _profile_preset(bench: Any, preset: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    bargs = argparse.Namespace(block_size=args.block_size, vocab_size=args.vocab_size, set=args.set,
                               chunk_tokens=args.chunk_tokens)
    variant = bench.VARIANTS[args.variant]
    cfg = bench.build_case(preset, args.batch_size, bargs, variant.get("set", []))
    model = bench.variant_model(cfg, variant, device)  # the variant's switches, as the throughput table
    optimizer = bench.make_optimizer(model, cfg, device, variant["adam"])
    loss_fn = bench.loss_function(model, variant, args.chunk_tokens)
    b, t, vocab = cfg.train.batch_size, cfg.train.block_size, cfg.model.vocab_size
    batch = torch.randint(0, vocab, (b, t + 1), generator=torch.Generator().manual_seed(0)).to(device)
    x, y = batch[:, :-1], batch[:, 1:]
    cudagraphs = variant["compile"] in ("reduce-overhead", "max-autotune")

    def step() -> None:
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(args.steps):
            step()
        end.record()
        end.synchronize()
    step_ms = start.elapsed_time(end) / args.steps
    per_bucket: dict[str, float] = {}
    per_kernel: dict[str, float] = {}
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        ms = event.time_range.elapsed_us() / 1000 / args.steps
        per_bucket[bucket_of(event.name)] = per_bucket.get(bucket_of(event.name), 0.0) + ms
        per_kernel[event.name] = per_kernel.get(event.name, 0.0) + ms
    kernel_ms = sum(per_bucket.values())
    head_ms = head_gemm_ms(b * t, cfg.model.d_model, vocab, device)
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1])
    return {
        "preset": preset, "family": cfg.model.family, "variant": args.variant, "batch_size": b, "block_size": t,
        "vocab_size": vocab, "step_ms": step_ms, "kernel_ms": kernel_ms, "idle_ms": step_ms - kernel_ms,
        "buckets": dict(sorted(per_bucket.items(), key=lambda kv: -kv[1])), "head_gemm_ms_alone": head_ms,
        "kernels": [{"name": name[:300], "ms_per_step": ms, "bucket": bucket_of(name)} for name, ms in top],
    }


def markdown(result: dict[str, Any]) -> str:
    step = result["step_ms"]
    lines = [f"### {result['preset']} ({result['variant']}, {result['batch_size']} x {result['block_size']}, "
             f"vocab {result['vocab_size']}): {step:.2f} ms/step",
             "", "| bucket | ms / step | share of step |", "|---|---|---|"]
    for label, ms in result["buckets"].items():
        lines.append(f"| {label} | {ms:.2f} | {100 * ms / step:.1f}% |")
    lines.append(f"| idle (launch gaps, host) | {result['idle_ms']:.2f} | {100 * result['idle_ms'] / step:.1f}% |")
    lines.append(f"| of GEMM: LM head's 3 GEMMs timed alone | {result['head_gemm_ms_alone']:.2f} | "
                 f"{100 * result['head_gemm_ms_alone'] / step:.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["baseline-28m", "spinnet-28m"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--vocab-size", type=int, default=10000, help="sets model.vocab_size")
    parser.add_argument("--variant", default="compile", help="a benchmarks/train_throughput.py VARIANTS name")
    parser.add_argument("--chunk-tokens", type=int, default=8192, help="for the compile-chunked-ce variant")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], help="config override section.key=value")
    parser.add_argument("--out", default=None, help="output folder (default $OUT or results/benchmarks)")
    args = parser.parse_args(argv)
    try:
        if not torch.cuda.is_available():
            raise UserError("gpu_profile needs CUDA (the buckets are GPU kernels)")
        bench = load_bench()
        if args.variant not in bench.VARIANTS:
            raise UserError(f"unknown variant {args.variant!r}; choose from {', '.join(bench.VARIANTS)}")
        device = torch.device("cuda")
        results = []
        for preset in bench.applicable(args.presets, args.variant):  # a SpinNet-only variant skips baselines
            results.append(profile_preset(bench, preset, args, device))
            torch._dynamo.reset()
            torch.cuda.empty_cache()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = "python benchmarks/gpu_profile.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (f"device: {torch.cuda.get_device_name()}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
              f"bf16 autocast; {args.steps} profiled steps after {args.warmup} warm-up steps; kernel times "
              "from torch.profiler (CUPTI), bucketed by kernel name (benchmarks/gpu_profile.py BUCKETS)")
    text = f"`{command}`\n\n{header}\n\n" + "\n\n".join(markdown(r) for r in results) + "\n"
    print(text)
    out = bench.out_dir(args.out)
    (out / "gpu_profile.md").write_text(text)
    (out / "gpu_profile.json").write_text(json.dumps({
        "command": command, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "settings": vars(args),
        "buckets": BUCKETS, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

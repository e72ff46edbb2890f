"""Story generation speed: equal-length batching vs one sequence at a time, same run, same device.

`evalsuite.generate.generate_ids` batches sequences of equal current length (no padding, exact
forward passes). The reference measured in the same run is `batch_size=1` (one sequence per
forward pass). Both generate the same stories (per-prompt generators), which the table checks.

Model: a preset (default baseline-tiny and baseline-28m) with untrained weights (speed does not
depend on training) and a character tokenizer built from the built-in prompt set, so the run needs
no reference data. Stories never stop early at <|endoftext|> with untrained weights only by chance,
so every run does close to prompts x max_new_tokens steps.

    .venv/bin/python benchmarks/generate_batching.py                         # CPU, small
    python3 benchmarks/generate_batching.py --device cuda --presets baseline-28m spinnet-28m \
        --max-new-tokens 300 --batch-sizes 1 16 64
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from corpora.tokenizers import train_char  # noqa: E402
from evalsuite.generate import SamplingConfig, generate_ids, load_prompt_set  # noqa: E402
from trainers.config import load_config  # noqa: E402
from trainers.model import build_model  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["baseline-tiny", "baseline-28m"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prompts", type=int, default=16, help="how many prompts of the built-in set")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--block-size", type=int, default=256)
    args = parser.parse_args()

    prompt_set = load_prompt_set("tinystories")
    prompts = prompt_set.prompts[: args.prompts]
    tok = train_char([p.text for p in prompt_set.prompts] + ["abcdefghijklmnopqrstuvwxyz.,!?'\""])
    encoded = [(p, [tok.eot_id, *tok.encode(p.text)]) for p in prompts]
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else platform.processor()}), "
          f"torch {torch.__version__}, {len(prompts)} prompts of {min(len(e[1]) for e in encoded)}-"
          f"{max(len(e[1]) for e in encoded)} tokens, {args.max_new_tokens} new tokens each")
    print(f"{'preset':<16}{'batch':>6}{'seconds':>10}{'tokens/s':>12}{'passes':>8}{'speedup':>9}  same text as batch 1")
    for preset in args.presets:
        block = args.block_size
        cfg = load_config(preset, [f"model.vocab_size={tok.vocab_size}", f"train.block_size={block}",
                                   f"model.max_seq_len={max(block, 256)}"])
        torch.manual_seed(0)
        model = build_model(cfg.model).to(args.device).eval()
        reference_time = None
        reference_ids = None
        for bs in args.batch_sizes:
            sampling = SamplingConfig(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=1, batch_size=bs)
            passes = 0

            def count(module, inputs, output):
                nonlocal passes
                passes += 1

            handle = model.register_forward_hook(count)
            generate_ids(model, encoded[:2], eot_id=tok.eot_id, block_size=block,
                         sampling=SamplingConfig(temperature=1.0, max_new_tokens=4, batch_size=bs), device=args.device)
            passes = 0
            sync(args.device)
            t0 = time.perf_counter()
            seqs = generate_ids(model, encoded, eot_id=tok.eot_id, block_size=block, sampling=sampling, device=args.device)
            sync(args.device)
            elapsed = time.perf_counter() - t0
            handle.remove()
            new_tokens = sum(len(s.ids) - s.n_prompt for s in seqs)
            ids = [s.ids for s in seqs]
            if reference_time is None:
                reference_time, reference_ids = elapsed, ids
            same = "yes" if ids == reference_ids else f"no ({sum(a != b for a, b in zip(ids, reference_ids, strict=True))} differ)"
            print(f"{preset:<16}{bs:>6}{elapsed:>10.2f}{new_tokens / elapsed:>12.1f}{passes:>8}"
                  f"{reference_time / elapsed:>8.1f}x  {same}")


if __name__ == "__main__":
    main()

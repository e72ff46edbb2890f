"""Throughput of childes-compare's child pipeline over all 75 Brown files, end to end.

    .venv/bin/python benchmarks/childes_throughput.py [--data-dir D] [--n-process 2] [--out FILE.md]

Stages, timed in one run: reading the CHAT files (pylangacq + cleaning), then
(a) the reference: spaCy `nlp.pipe` alone over the same utterances (parse only), and
(b) end to end: parse + all detectors + MLU/clause measures, the library's `analyze_child_utterances`.
Utterances/s of (b) is the number; (b)/(a) says what the detectors cost on top of spaCy.
It also prints the detectors-vs-humans table and the MLU agreement on all files, since those are
the numbers a paper would quote (the tests use a six-file subset to stay fast).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--n-process", type=int, default=2, help="spaCy worker processes (2 cores in CI)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    args = parser.parse_args()

    from corpora.chat import read_chat
    from corpora.paths import find_data_dir
    from evalsuite.childes import validation
    from evalsuite.childes.compare import CompareConfig, analyze_child_utterances
    from evalsuite.childes.detectors import load_nlp

    brown = find_data_dir(args.data_dir) / "childes" / "Brown"
    nlp = load_nlp()
    list(nlp.pipe(["warm up ."]))

    t0 = time.perf_counter()
    frame = read_chat(brown)
    t_read = time.perf_counter() - t0
    n_files = frame["file"].nunique()
    analysable = frame[(frame["n_words"] > 0) & ~frame["unintelligible"]]
    texts = analysable["utterance"].tolist()

    t0 = time.perf_counter()
    n_tokens = sum(len(doc) for doc in nlp.pipe(texts, batch_size=args.batch_size, n_process=args.n_process))
    t_parse = time.perf_counter() - t0

    config = CompareConfig(n_process=args.n_process, batch_size=args.batch_size)
    t0 = time.perf_counter()
    units = analyze_child_utterances(frame, config, nlp)
    t_e2e = time.perf_counter() - t0

    n = len(units)
    lines = [
        f"# childes-compare throughput ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"spaCy n_process={args.n_process}, batch {args.batch_size})",
        "",
        f"{n_files} Brown files, {len(frame)} CHI utterances, {n} analysable ({n_tokens} spaCy tokens)",
        "",
        "| stage | seconds | utterances/s | vs parse-only |",
        "| --- | ---: | ---: | ---: |",
        f"| read CHAT (pylangacq + cleaning), all {len(frame)} | {t_read:.1f} | {len(frame) / t_read:,.0f} | |",
        f"| reference: spaCy parse only | {t_parse:.1f} | {n / t_parse:,.0f} | 1.00x |",
        f"| parse + detectors + measures | {t_e2e:.1f} | {n / t_e2e:,.0f} | {t_parse / t_e2e:.2f}x |",
        f"| **end to end: read + parse + detect** | {t_read + t_e2e:.1f} | **{n / (t_read + t_e2e):,.0f}** | |",
        "",
    ]
    table, _ = validation.validate_detectors(units)
    lines += ["## Detectors vs transcribers' codes (all files, CHI tier)", "",
              "| target | human codes | hits | precision [95% CI] | recall [95% CI] |", "| --- | ---: | ---: | --- | --- |"]
    for _, r in table.iterrows():
        if 0 < r["n_codes"] < validation.MIN_CODES_FOR_ESTIMATE:
            lines.append(f"| {r['target']} | {r['n_codes']} | {r['n_hits']} | too few human codes for an estimate | |")
        elif r["n_codes"]:
            lines.append(f"| {r['target']} | {r['n_codes']} | {r['n_hits']} | {r['precision']:.2f} "
                         f"[{r['precision_ci_low']:.2f}, {r['precision_ci_high']:.2f}] | {r['recall']:.2f} "
                         f"[{r['recall_ci_low']:.2f}, {r['recall_ci_high']:.2f}] |")
        else:
            lines.append(f"| {r['target']} | 0 | {r['n_hits']} | not validated: no human codes | |")
    _, mlu = validation.mlu_agreement(units)
    m, w = mlu["morphemes"], mlu["words"]
    lines += ["", f"## MLU: our text parse vs CHAT (per file, n = {mlu['n_files']})", "",
              "| measure | Pearson r | Lin CCC | mean diff | mean abs diff | utterances identical |",
              "| --- | ---: | ---: | ---: | ---: | ---: |",
              f"| MLU morphemes (vs %mor) | {m['pearson_r']:.4f} | {m['ccc']:.4f} | {m['mean_diff']:+.3f} | "
              f"{m['mean_abs_diff']:.3f} ({100 * m['mean_abs_rel_diff']:.1f} %) | {100 * m['utterances_exact']:.1f} % |",
              f"| MLU words (vs main tier) | {w['pearson_r']:.4f} | {w['ccc']:.4f} | {w['mean_diff']:+.3f} | "
              f"{w['mean_abs_diff']:.3f} ({100 * w['mean_abs_rel_diff']:.1f} %) | {100 * w['utterances_exact']:.1f} % |"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

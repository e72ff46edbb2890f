"""Throughput of the child side of childes-compare at corpus scale, and the %mor-vs-spaCy agreement.

    .venv/bin/python benchmarks/childes_throughput.py [--data-dir D] [--n-workers 2] [--out-dir results/benchmarks]
        [--zips Brown,Bates] [--old-utterances 3000] [--agreement-per-corpus 2] [--cache-dir DIR]

1. cold: `parse_cache.load_child_utterances` over the TalkBank zips with an empty cache (parse every
   transcript with pylangacq, clean the main tiers, %mor features; 2 worker processes);
2. warm: the same call again (every transcript from the Parquet cache);
3. the old path on a slice: read_chat + compare.analyze_child_utterances (spaCy parse + detectors),
   the ~262 utterances/s the per-utterance spaCy path gave on the 75 Brown files;
4. agreement of the CHAT side (%mor morphemes, main-tier words, %mor POS) with the spaCy path used
   for model text, on the same child utterances of a sample of transcripts per corpus: the evidence
   that lets the child side use %mor instead of spaCy.

Prints markdown tables; writes `<out-dir>/childes_throughput.md` and `childes_mor_spacy_agreement.csv`.
The machine's load average is printed beside the timings (a shared machine gives pessimistic numbers).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

POS_COMPARED = ("NOUN", "VERB", "PRON", "DET", "ADJ", "ADV", "ADP")


def _load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the worker pool, once closed)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _ccc(x, y) -> float:
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2))


def agreement(utts, nlp, per_corpus: int, seed: int = 0):
    """Per-utterance and per-transcript agreement of CHAT-side features with the spaCy text path."""
    import numpy as np
    import pandas as pd

    from evalsuite.childes import measures

    usable = utts[measures.mlu_eligible(utts) & utts["n_morphemes"].notna() & utts["mor_aligned"]]
    per_file = usable.groupby("file").size()
    files = usable.drop_duplicates("file")[["corpus", "file", "mor_style"]]
    files = files[files["file"].map(per_file) >= 50]
    rng = np.random.default_rng(seed)
    chosen = []
    for _, group in files.groupby("corpus"):
        chosen += list(rng.choice(group["file"].to_numpy(), size=min(per_corpus, len(group)), replace=False))
    sample = usable[usable["file"].isin(chosen)].reset_index(drop=True)
    rows = []
    for row, doc in zip(sample.itertuples(index=False), nlp.pipe(sample["utterance"].tolist(), batch_size=256),
                        strict=True):
        exclude = [(a["start"], a["end"]) for a in row.annotations if a["code"] == "[/]"]
        spacy_pos = [t.pos_ for t in measures._counted_tokens(doc, exclude, 0, row.compounds)]
        mor_pos = [p for p in row.pos if p]
        rec = {"corpus": row.corpus, "file": row.file, "mor_style": row.mor_style,
               "mor_morphemes": row.n_morphemes, "spacy_morphemes": measures.text_morphemes(doc, exclude, 0, row.compounds),
               "chat_words": row.n_words, "spacy_words": measures.text_words(doc, exclude, 0, row.compounds)}
        for p in POS_COMPARED:
            rec[f"mor_{p}"], rec[f"spacy_{p}"] = mor_pos.count(p), spacy_pos.count(p)
        rows.append(rec)
    per_utt = pd.DataFrame(rows)
    out = []
    for style, g in [("all", per_utt), *per_utt.groupby("mor_style")]:
        by_file = g.groupby("file")[["mor_morphemes", "spacy_morphemes", "chat_words", "spacy_words"]].mean()
        rec = {"mor_style": style, "n_transcripts": len(by_file), "n_utterances": len(g)}
        for name, a, b in (("mlu_morphemes", "mor_morphemes", "spacy_morphemes"), ("mlu_words", "chat_words", "spacy_words")):
            rec[f"{name}_pearson_r"] = float(np.corrcoef(by_file[a], by_file[b])[0, 1]) if len(by_file) > 2 else float("nan")
            rec[f"{name}_ccc"] = _ccc(by_file[a], by_file[b]) if len(by_file) > 2 else float("nan")
            rec[f"{name}_mean_diff"] = float((by_file[b] - by_file[a]).mean())
            rec[f"{name}_mean_abs_diff"] = float((by_file[b] - by_file[a]).abs().mean())
            rec[f"{name}_utterances_identical"] = float((g[a] == g[b]).mean())
        for p in POS_COMPARED:
            rec[f"pos_{p}_utterances_identical"] = float((g[f"mor_{p}"] == g[f"spacy_{p}"]).mean())
            total = g[f"mor_{p}"].sum()
            rec[f"pos_{p}_count_ratio_spacy_over_mor"] = float(g[f"spacy_{p}"].sum() / total) if total else float("nan")
        out.append(rec)
    return pd.DataFrame(out), per_utt


def sampled_utterances(zips, per_corpus: int, seed: int = 0):
    """Child utterances of `per_corpus` transcripts drawn at random from each zip (no full corpus pass)."""
    import zipfile

    import numpy as np
    import pandas as pd

    from corpora.chat import parse_transcript
    from evalsuite.childes.parse_cache import transcript_rows

    rng = np.random.default_rng(seed)
    frames = []
    for z in zips:
        with zipfile.ZipFile(z) as zf:
            names = sorted(n for n in zf.namelist() if n.lower().endswith(".cha"))
            for name in rng.permutation(names)[: 4 * per_corpus]:
                tr = parse_transcript(str(name), zf.read(str(name)), source=str(z))
                if tr.error is None and tr.mor_style != "none" and len(tr.rows) >= 50:
                    frames.append(transcript_rows(tr))
                if sum(f["source"].iloc[0] == str(z) for f in frames) >= per_corpus:
                    break
    return pd.concat(frames, ignore_index=True)


def agreement_only(args) -> None:
    from corpora.paths import find_data_dir
    from evalsuite.childes.detectors import load_nlp

    zips = sorted((find_data_dir(args.data_dir) / "childes" / "talkbank").glob("*.zip"))
    utts = sampled_utterances(zips, args.agreement_per_corpus)
    table, per_utt = agreement(utts, load_nlp(), args.agreement_per_corpus)
    print(table.T.to_string())
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out_dir / "childes_mor_spacy_agreement.csv", index=False)
        per_utt.to_csv(args.out_dir / "childes_mor_spacy_agreement_utterances.csv", index=False)


def _tree_cpu(pgid: int) -> float:
    """utime + stime (and reaped children's) of every live process in a process group, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields[0] is the state; pgrp is field 5 of stat, index 2 here
            total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
    return total


def _cached_units(cache: Path) -> tuple[int, int]:
    """(transcripts, child units) in the unit cache so far: the part a cut-off cold pass finished."""
    import pyarrow.parquet as pq

    files = [f for f in (cache / "childes_units").glob("*/*/*.parquet") if f.parent.name != "sources"]  # no shards
    return len(files), sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def compare_pass(zips, cache: Path, out: Path, timeout: float, n_bootstrap: int, n_workers: int) -> dict:
    """Time one `evalsuite childes-compare` over `zips` as a subprocess (its own process group, so the
    worker pool's CPU is counted while it runs and the whole tree stops at the timeout)."""
    import contextlib
    import signal
    import subprocess
    import sys

    env = {**os.environ, "EVALSUITE_CACHE": str(cache)}
    argv = [sys.executable, "-m", "evalsuite.cli", "childes-compare", "--no-progress", "-o", str(out),
            "--n-bootstrap", str(n_bootstrap), "--n-workers", str(n_workers)]
    for z in zips:
        argv += ["--childes", str(z)]
    load_before, t0 = _load(), time.perf_counter()
    kids0 = _cpu_seconds()
    # the console output goes to a file: an undrained pipe fills (64 KB) and blocks the command at corpus scale
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        cpu_live, timed_out = 0.0, False
        while proc.poll() is None:
            cpu_live = max(cpu_live, _tree_cpu(proc.pid))
            if time.perf_counter() - t0 > timeout:
                timed_out = True
                os.killpg(proc.pid, signal.SIGTERM)
                break
            # returns as soon as the command ends: a plain sleep made every wall time a multiple of ~5 s
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        proc.wait()
        seconds = time.perf_counter() - t0
        log.seek(0)
        output = log.read().decode(errors="replace")
    cpu = max(cpu_live, _cpu_seconds() - kids0)  # reaped total when it finished, last sample when cut off
    n_files, n_units = _cached_units(cache)
    meta = {}
    if proc.returncode == 0 and (out / "meta.json").is_file():
        import json

        meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    return {"seconds": seconds, "cpu": cpu, "timed_out": timed_out, "rc": proc.returncode, "load_before": load_before,
            "load_after": _load(), "cached_transcripts": n_files, "cached_units": n_units, "tail": output[-3000:],
            "unit_cache": meta.get("unit_cache", {}), "stages": meta.get("stage_seconds", {})}


def compare_mode(args, zips) -> None:
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="childes_compare_cache_"))
    out = Path(tempfile.mkdtemp(prefix="childes_compare_out_"))
    lines = [f"# childes-compare over {len(zips)} shared TalkBank zips ({platform.machine()}, {os.cpu_count()} CPUs "
             f"visible, {args.n_workers} worker processes, --n-bootstrap {args.n_bootstrap})", "",
             "| pass | finished | wall seconds | CPU seconds (process tree) | transcripts in unit cache | child units in "
             "unit cache | units/s (wall) | units per CPU second | utterances analysed this pass | spaCy docs parsed "
             "(distinct texts) | load average (1/5/15) before -> after |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    results = []
    # a --cache-dir that already holds caches makes the first pass (partly) warm: say so instead of "cold"
    prefilled = args.cache_dir is not None and Path(args.cache_dir).is_dir() and any(Path(args.cache_dir).iterdir())
    labels = (("first pass (the given --cache-dir was not empty: not a cold pass)", "second pass")
              if prefilled else ("cold (empty caches)", "warm (all cached)"))
    for label in labels:
        r = compare_pass(zips, cache, out, args.timeout, args.n_bootstrap, args.n_workers)
        results.append((label, r))
        done = "yes" if r["rc"] == 0 else f"no (cut off at the {args.timeout:.0f} s timeout)" if r["timed_out"] else f"no (exit {r['rc']})"
        uc = r["unit_cache"]
        parsed = f"{uc['utterances_parsed']:,}" if "utterances_parsed" in uc else "n/a"
        docs = f"{uc['spacy_docs_parsed']:,}" if "spacy_docs_parsed" in uc else "n/a"
        lines.append(f"| {label} | {done} | {r['seconds']:.1f} | {r['cpu']:.1f} | {r['cached_transcripts']} | "
                     f"{r['cached_units']:,} | {r['cached_units'] / r['seconds']:,.0f} | "
                     f"{r['cached_units'] / max(r['cpu'], 1e-9):,.0f} | {parsed} | {docs} | "
                     f"{r['load_before']} -> {r['load_after']} |")
        print(lines[-1], flush=True)
        if r["rc"] != 0:
            break  # a warm pass needs a complete cold one
    stages = [(label, r["stages"]) for label, r in results if r["stages"]]
    if stages:
        names = list(dict.fromkeys(k for _, st in stages for k in st))
        lines += ["", "Wall seconds per stage (meta.json `stage_seconds`; writing the tables and printing come after):", "",
                  "| pass | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
        lines += [f"| {label} | " + " | ".join(f"{st.get(n, float('nan')):.1f}" for n in names) + " |"
                  for label, st in stages]
    lines += ["", "Units/s count the child units the pass left in the unit cache (for a cut-off cold pass: the part "
              "done, parse + spaCy + detectors, before the tables; the tables' own time is only in a finished row).",
              "", "Last output of the last pass:", "", "```", results[-1][1]["tail"].strip(), "```"]
    text = "\n".join(lines)
    print(text)
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "childes_compare_throughput.md").write_text(text + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument("--zips", default="", help="comma-separated corpus names (default: every zip)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary folder (cold)")
    parser.add_argument("--old-utterances", type=int, default=3000, help="utterances for the old spaCy path (0: skip)")
    parser.add_argument("--agreement-per-corpus", type=int, default=2, help="transcripts per corpus (0: skip)")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--agreement-only", action="store_true",
                        help="skip the timings: the agreement table on transcripts sampled straight from the zips")
    parser.add_argument("--compare", action="store_true",
                        help="time `evalsuite childes-compare` over the zips, cold then warm (table "
                        "childes_compare_throughput.md)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="--compare: seconds before a pass is cut off")
    parser.add_argument("--n-bootstrap", type=int, default=200, help="--compare: childes-compare --n-bootstrap")
    args = parser.parse_args()
    if args.compare:
        from corpora.paths import find_data_dir

        zips = sorted((find_data_dir(args.data_dir) / "childes" / "talkbank").glob("*.zip"))
        if args.zips:
            zips = [z for z in zips if z.stem in set(args.zips.split(","))]
        compare_mode(args, zips)
        return
    if args.agreement_only:
        agreement_only(args)
        return

    from corpora.paths import find_data_dir
    from evalsuite.childes import measures
    from evalsuite.childes.parse_cache import load_child_utterances

    talkbank = find_data_dir(args.data_dir) / "childes" / "talkbank"
    zips = sorted(talkbank.glob("*.zip"))
    if args.zips:
        wanted = set(args.zips.split(","))
        zips = [z for z in zips if z.stem in wanted]
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="childes_cache_"))
    lines = [f"# CHILDES child side at corpus scale ({platform.machine()}, {os.cpu_count()} CPUs visible, "
             f"{args.n_workers} worker processes)", ""]

    timings = []
    for label in ("cold (empty cache)", "warm (all cached)"):
        load_before, cpu0 = _load(), _cpu_seconds()
        t0 = time.perf_counter()
        utts, issues, transcripts = load_child_utterances(zips, cache_dir=cache, n_workers=args.n_workers)
        seconds = time.perf_counter() - t0
        timings.append((label, seconds, _cpu_seconds() - cpu0, len(utts), load_before, _load()))
    n_read = int(transcripts["read"].sum())
    lines += [f"{len(zips)} zips, {len(transcripts)} transcripts ({n_read} read, {len(transcripts) - n_read} "
              f"reported unreadable), {len(utts):,} CHI utterances, {int(measures.mlu_eligible(utts).sum()):,} "
              "MLU-eligible (Brown rule)", "",
              "| pass | wall seconds | CHI utterances/s (wall) | CPU seconds, main + workers | CHI utterances per "
              "CPU second | load average (1/5/15 min) before -> after |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]
    for label, seconds, cpu, n, before, after in timings:
        lines.append(f"| {label} | {seconds:.1f} | {n / seconds:,.0f} | {cpu:.1f} | {n / cpu:,.0f} | {before} -> {after} |")

    if args.old_utterances:
        from corpora.chat import read_chat
        from evalsuite.childes.compare import CompareConfig, analyze_child_utterances
        from evalsuite.childes.detectors import load_nlp

        nlp = load_nlp()
        list(nlp.pipe(["warm up ."]))
        frame = read_chat(talkbank / "Brown.zip").iloc[: args.old_utterances]
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        units = analyze_child_utterances(frame, CompareConfig(n_process=1), nlp)
        t_old, cpu_old = time.perf_counter() - t0, _cpu_seconds() - cpu0
        lines.append(f"| old path on a slice: spaCy parse + detectors (1 process), first {len(frame)} Brown CHI "
                     f"utterances ({len(units)} analysable; reading excluded) | {t_old:.1f} | {len(units) / t_old:,.0f} "
                     f"| {cpu_old:.1f} | {len(units) / cpu_old:,.0f} | {_load()} |")
    lines.append("")
    kinds = issues.groupby(["severity", "kind"]).agg(rows=("kind", "size"), transcripts=("file", "nunique")).reset_index()
    lines += ["## chat_issues (every transcript read or reported)", "", "| severity | kind | rows | transcripts |",
              "| --- | --- | ---: | ---: |"]
    lines += [f"| {r.severity} | {r.kind} | {r.rows} | {r.transcripts} |" for r in kinds.itertuples()]
    styles = transcripts.groupby("mor_style").size()
    lines += ["", "%mor style per transcript: " + ", ".join(f"{k} {v}" for k, v in styles.items()), ""]

    if args.agreement_per_corpus:
        from evalsuite.childes.detectors import load_nlp

        table, _ = agreement(utts, load_nlp(), args.agreement_per_corpus)
        lines += [f"## %mor / main tier vs the spaCy text path, same child utterances ({args.agreement_per_corpus} "
                  "transcripts per corpus with >= 50 eligible utterances)", "",
                  "| %mor style | transcripts | utterances | MLU-m r | MLU-m CCC | MLU-m mean diff (spaCy - %mor) | "
                  "utterances same morphemes | MLU-w CCC | utterances same words | " +
                  " | ".join(f"{p} same" for p in POS_COMPARED) + " |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in POS_COMPARED) + " |"]
        for r in table.to_dict("records"):
            lines.append(
                f"| {r['mor_style']} | {r['n_transcripts']} | {r['n_utterances']} | {r['mlu_morphemes_pearson_r']:.4f} | "
                f"{r['mlu_morphemes_ccc']:.4f} | {r['mlu_morphemes_mean_diff']:+.3f} | "
                f"{100 * r['mlu_morphemes_utterances_identical']:.1f} % | {r['mlu_words_ccc']:.4f} | "
                f"{100 * r['mlu_words_utterances_identical']:.1f} % | "
                + " | ".join(f"{100 * r[f'pos_{p}_utterances_identical']:.1f} %" for p in POS_COMPARED) + " |")
        if args.out_dir:
            args.out_dir.mkdir(parents=True, exist_ok=True)
            table.to_csv(args.out_dir / "childes_mor_spacy_agreement.csv", index=False)
    text = "\n".join(lines)
    print(text)
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "childes_throughput.md").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

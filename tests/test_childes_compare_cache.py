"""childes-compare at corpus scale: chat_issues.csv and transcript counts from the commands, child units
from the parse cache, and the per-transcript unit cache (warm run: same tables, no spaCy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from corpora.chat import ISSUE_COLUMNS
from evalsuite.childes import compare
from evalsuite.childes.compare import (
    CompareConfig,
    analyze_child_utterances,
    analyze_children_cached,
    load_children,
)
from evalsuite.cli import main
from evalsuite.results import validate_meta

REPO = Path(__file__).resolve().parents[1]
FILES = ["Eve/011000b.cha", "Adam/021128.cha"]


def _shorten(src: Path, dst: Path, n_child: int = 60) -> None:
    """The headers and the first n_child child utterances of a real transcript, closed with @End."""
    out, seen = [], 0
    for line in src.read_text(encoding="utf-8").splitlines():
        if line.startswith("*CHI:"):
            seen += 1
            if seen > n_child:
                break
        out.append(line)
    while out and not out[-1].startswith(("*", "%")):
        out.pop()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(out + ["@End"]) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def folder(shared_data, tmp_path_factory) -> Path:
    """Two short real Brown transcripts and one that cannot be read (not UTF-8)."""
    root = tmp_path_factory.mktemp("chat") / "Brown"
    for rel in FILES:
        _shorten(shared_data / "childes" / "Brown" / rel, root / rel)
    (root / "Eve" / "broken.cha").write_bytes(b"@UTF8\n@Begin\n*CHI:\t\xff\xfe caf\xe9 .\n@End\n")
    return root


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


@pytest.mark.slow
@pytest.mark.shared_data
def test_compare_writes_chat_issues_counts_and_warm_run_is_cached(folder, tmp_path, capsys):
    cold, warm = tmp_path / "cold", tmp_path / "warm"
    assert _run(["childes-compare", "--childes", str(folder), "-o", str(cold), "--n-bootstrap", "100",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "3 transcripts found, 2 read, 1 unreadable" in " ".join(printed.split())
    issues = pd.read_csv(cold / "chat_issues.csv")
    assert list(issues.columns) == ISSUE_COLUMNS
    broken = issues[issues["file"].str.endswith("broken.cha")]
    assert (broken["severity"] == "error").any()
    meta = json.loads((cold / "meta.json").read_text())
    assert not validate_meta(meta)
    assert "chat_issues.csv" in meta["outputs"]
    assert set(meta["columns"]["chat_issues.csv"]) == set(ISSUE_COLUMNS)
    assert all(c["definition"] for c in meta["columns"]["chat_issues.csv"].values())
    counts = meta["chat_transcripts"]
    assert (counts["found"], counts["read"], counts["unreadable"]) == (3, 2, 1)
    assert counts["issue_rows"] == len(issues)
    assert meta["unit_cache"]["computed"] == 2 and meta["unit_cache"]["from_cache"] == 0

    assert _run(["childes-compare", "--childes", str(folder), "-o", str(warm), "--n-bootstrap", "100",
                 "--no-progress"]) == 0
    meta = json.loads((warm / "meta.json").read_text())
    assert meta["unit_cache"]["computed"] == 0 and meta["unit_cache"]["from_cache"] == 2
    for name in ("rates.csv", "measures.csv", "validation.csv", "hits.csv", "chat_issues.csv", "mlu_agreement.csv"):
        assert (cold / name).read_bytes() == (warm / name).read_bytes(), name
    pd.testing.assert_frame_equal(pd.read_parquet(cold / "units.parquet"), pd.read_parquet(warm / "units.parquet"))

    # a warm run parses nothing: in a fresh process on the same cache no spaCy pipeline is loaded (the model
    # package is never imported; spaCy's package itself is, for the stop-word list of the age features)
    code = ("import sys; from evalsuite.childes import compare; "
            f"r = compare.childes_compare([{str(folder)!r}], [], compare.CompareConfig(n_bootstrap=100)); "
            "print(r.meta['unit_cache']['computed'], compare.SPACY_MODEL in sys.modules, "
            "compare._shared_nlp.cache_info().currsize > 0)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["0", "False", "False"]


def _as_lists(units: pd.DataFrame) -> pd.DataFrame:
    """The nested columns as Python lists (a cached frame holds the numpy arrays pyarrow returns)."""
    return units.assign(**{c: [list(v) for v in units[c]] for c in compare._LIST_COLUMNS if c in units})


def test_list_columns_round_trip_every_field_and_empty_lists(tmp_path):
    units = pd.DataFrame({
        "doc_id": ["a", "b", "c"], "n_words": [2, 0, 1],
        "words": [["I", "goed"], [], ["yes"]],
        "hits": [[{"error_type": "overregularization", "kind": "past", "start": 2, "end": 6, "text": "goed"}], [],
                 [{"error_type": "x", "kind": "", "start": 0, "end": 0, "text": ""},
                  {"error_type": "y", "kind": "k", "start": 1, "end": 3, "text": "yes"}]],
        "annotations": [[], [{"start": 0, "end": 0, "word": "", "target": "is", "code": "[* m]"}], []]})
    path = tmp_path / "u.parquet"
    compare._write_units(path, units)
    back = compare._read_units(path)
    assert list(back.columns) == list(units.columns)
    pd.testing.assert_frame_equal(_as_lists(back), units)
    compare._write_units(path, units.iloc[[1]])  # every hits list empty: still the fixed struct type
    assert list(compare._read_units(path)["hits"].iloc[0]) == []


@pytest.mark.shared_data
def test_unit_cache_round_trips_and_is_keyed_by_code_and_settings(folder, tmp_path):
    frame = load_children([folder], CompareConfig(n_workers=1)).utterances
    direct = analyze_child_utterances(frame, CompareConfig())
    cfg = CompareConfig(n_workers=1)
    cold, stats = analyze_children_cached(frame, cfg, cache_dir=tmp_path)
    warm, stats2 = analyze_children_cached(frame, cfg, cache_dir=tmp_path)
    assert (stats["computed"], stats2["computed"], stats2["from_cache"]) == (2, 0, 2)
    pd.testing.assert_frame_equal(cold, direct)
    # nested hits / annotations / words survive the Parquet trip: stored as Parquet lists (not JSON text), they come
    # back as arrays with the same elements, dicts with the same keys and values
    pd.testing.assert_frame_equal(_as_lists(warm), direct)
    assert warm.drop(columns=list(compare._LIST_COLUMNS)).equals(direct.drop(columns=list(compare._LIST_COLUMNS)))
    assert sum(map(len, direct["hits"])) > 5 and sum(map(len, direct["annotations"])) > 5
    import pyarrow.parquet as pq

    shard = pq.read_schema(next(Path(stats["cache"]).glob("sources/*.parquet")))
    assert all(str(shard.field(c).type).startswith("list<") for c in compare._LIST_COLUMNS)
    # a setting that changes detections is part of the key: a new context window is computed afresh
    assert compare.unit_code_key(0) != compare.unit_code_key(3)
    _, stats3 = analyze_children_cached(frame, CompareConfig(n_workers=1, context_window=0), cache_dir=tmp_path)
    assert stats3["computed"] == 2
    assert stats2["source_shards_read"] == 1  # the warm run read the folder's one shard, no per-transcript file
    # a damaged cache file is never served: a bad shard falls back to the transcripts' files, a bad
    # transcript file is recomputed
    root = Path(stats["cache"])
    next(root.glob("sources/*.parquet")).write_bytes(b"not parquet")
    again, stats4 = analyze_children_cached(frame, cfg, cache_dir=tmp_path)
    assert (stats4["computed"], stats4["source_shards_read"]) == (0, 0)
    pd.testing.assert_frame_equal(_as_lists(again), direct)
    next(root.glob("sources/*.parquet")).write_bytes(b"not parquet")
    next(p for p in root.glob("*/*.parquet") if p.parent.name != "sources").write_bytes(b"not parquet")
    again, stats4 = analyze_children_cached(frame, cfg, cache_dir=tmp_path)
    assert stats4["computed"] == 1
    pd.testing.assert_frame_equal(_as_lists(again), direct)
    # without the cache nothing is read or written
    _, stats5 = analyze_children_cached(frame, CompareConfig(n_workers=1, use_cache=False), cache_dir=tmp_path / "x")
    assert stats5["computed"] == 2 and stats5["cache"] is None and not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.shared_data
def test_worker_pool_gives_the_same_units(folder, tmp_path, monkeypatch):
    frame = load_children([folder], CompareConfig(n_workers=1)).utterances
    direct = analyze_child_utterances(frame, CompareConfig())
    monkeypatch.setattr(compare, "POOL_MIN_UTTERANCES", 0)
    monkeypatch.setattr(compare, "TEXT_CHUNK", 20)  # several jobs, so that the pool is used
    pooled, stats = analyze_children_cached(frame, CompareConfig(n_workers=2), cache_dir=tmp_path)
    assert stats["worker_processes"] == 2 and stats["computed"] == 2
    pd.testing.assert_frame_equal(pooled, direct)
    warm, _ = analyze_children_cached(frame, CompareConfig(n_workers=2), cache_dir=tmp_path)
    pd.testing.assert_frame_equal(_as_lists(warm), direct)


@pytest.mark.slow
@pytest.mark.shared_data
def test_childes_age_writes_chat_issues_beside_its_output(folder, tmp_path, capsys):
    out = tmp_path / "ages.csv"
    assert _run(["childes-age", str(folder), "-o", str(out)]) == 0
    assert "3 transcripts found, 2 read, 1 unreadable" in " ".join(capsys.readouterr().out.split())
    issues = pd.read_csv(out.with_suffix(".chat_issues.csv"))
    assert list(issues.columns) == ISSUE_COLUMNS and (issues["severity"] == "error").sum() == 1
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert not validate_meta(meta)
    assert "ages.chat_issues.csv" in meta["outputs"] and meta["chat_transcripts"]["unreadable"] == 1
    assert set(meta["columns"]["ages.chat_issues.csv"]) == set(ISSUE_COLUMNS)


def _old_group_keys(units, config):
    """_group_keys before it grouped by child once and kept only the needed columns (the reference)."""
    import math

    from evalsuite.childes.compare import age_bin_label

    groups = []
    child = units[units["source"] == "childes"]
    labels = [age_bin_label(a, config.bin_months) if a == a else (math.nan, "age unknown") for a in child["age_months"]]
    child = child.assign(age_bin_start=[lo for lo, _ in labels], age_bin=[lab for _, lab in labels])
    for who in [*sorted(child["child"].unique()), "all"]:
        sub = child if who == "all" else child[child["child"] == who]
        for (start, label), g in sub.groupby(["age_bin_start", "age_bin"], dropna=False):
            groups.append(({"source": "childes", "child": who, "age_bin": label, "age_bin_start": start,
                            "unit": "utterance"}, g))
    model = units[units["source"] == "model"]
    for ckpt, g in model.groupby("checkpoint_id", sort=False) if not model.empty else []:
        groups.append(({"source": "model", "checkpoint": ckpt, "model_family": g["model_family"].iloc[0],
                        "val_loss": g["val_loss"].iloc[0], "val_bpc": g["val_bpc"].iloc[0], "unit": "sentence"}, g))
    return groups


def _old_rate_table(units, config):
    """The per-group loop rate_table replaced (kept here as the reference the fast one must equal)."""
    import numpy as np

    from evalsuite.childes.compare import SUB_KINDS, _order_columns
    from evalsuite.childes.detectors import ERROR_TYPES
    from evalsuite.stats import wilson_ci

    rows = []
    for key, g in _old_group_keys(units, config):
        n = len(g)
        for t in ERROR_TYPES:
            entries = [(t, g[f"has_{t}"].to_numpy())]
            for kind in SUB_KINDS.get(t, ()):
                entries.append((f"{t}/{kind}", np.array([any(h["error_type"] == t and h["kind"] == kind for h in hs)
                                                          for hs in g["hits"]])))
            for name, flags in entries:
                count = int(flags.sum())
                lo, hi = wilson_ci(count, n)
                hits = int(sum(sum(1 for h in hs if h["error_type"] == name.split("/")[0]
                                   and ("/" not in name or h["kind"] == name.split("/")[1])) for hs in g["hits"]))
                rows.append({**key, "error_type": name, "rate": 100.0 * count / n, "ci_low": 100.0 * lo,
                             "ci_high": 100.0 * hi, "n": n, "count": count, "hits": hits})
    return _order_columns(pd.DataFrame(rows))


def _old_hits_table(units):
    rows = []
    for idx, row in units.iterrows():
        for h in row["hits"]:
            rows.append({"unit_row": idx, "source": row["source"], "doc_id": row["doc_id"],
                         "checkpoint": row.get("checkpoint_id") if row["source"] == "model" else None,
                         "child": row.get("child") if row["source"] == "childes" else None,
                         "age_months": row.get("age_months"), **h, "unit_text": row["text"]})
    return pd.DataFrame(rows)


def _old_measure_table(units, config):
    """measure_table before it shared the bootstrap draws across the three unit measures and reused a
    transcript's MATTR / TTR across groups (the reference the fast one must equal)."""
    from evalsuite.childes import measures
    from evalsuite.childes.compare import _group_keys, _mean_ci, _order_columns

    rows = []
    doc_col = {"childes": "file", "model": "doc_id"}
    for key, g in _group_keys(units, config, ["n_morphemes", "n_words", "n_clauses", "words", "file", "doc_id"]):
        for name, col in (("mlu_morphemes", "n_morphemes"), ("mlu_words", "n_words"), ("clause_density", "n_clauses")):
            value, lo, hi, _ = _mean_ci(g[col], config)
            rows.append({**key, "measure": name, "value": value, "ci_low": lo, "ci_high": hi, "n": len(g),
                         "ci_method": "percentile bootstrap over units"})
        per_doc = g.groupby(doc_col[key["source"]])["words"].agg(lambda s: [w for ws in s for w in ws])
        for name, fn in (("mattr", lambda w: measures.mattr(w, config.mattr_window)), ("ttr", measures.ttr)):
            vals = [fn(w) for w in per_doc]
            value, lo, hi, _ = _mean_ci(vals, config)
            rows.append({**key, "measure": name, "value": value, "ci_low": lo, "ci_high": hi, "n": len(vals),
                         "ci_method": "mean over documents, percentile bootstrap over documents"})
    return _order_columns(pd.DataFrame(rows))


def _scalar_wilson_ci(count, n, alpha=0.05):
    """evalsuite.stats.wilson_ci as it was before it went through wilson_cis: one statsmodels call per pair."""
    import math

    from statsmodels.stats.proportion import proportion_confint

    if n <= 0:
        return math.nan, math.nan
    lo, hi = proportion_confint(int(count), int(n), alpha=alpha, method="wilson")
    p = count / n
    lo = 0.0 if count == 0 else max(0.0, float(lo))
    hi = 1.0 if count == n else min(1.0, float(hi))
    return float(min(lo, p)), float(max(hi, p))


def test_vectorised_wilson_equals_wilson_ci_exactly():
    import numpy as np

    from evalsuite.stats import ALPHA, wilson_ci, wilson_cis

    assert ALPHA == 0.05
    pairs = [(c, n) for n in (1, 2, 3, 7, 50, 999, 123457) for c in sorted({0, 1, n // 3, n // 2, n - 1, n}) if c <= n]
    pairs.append((0, 0))
    los, his = wilson_cis(np.array([c for c, _ in pairs]), np.array([n for _, n in pairs]))
    for (c, n), lo, hi in zip(pairs, los, his, strict=True):
        assert [lo, hi] == pytest.approx(list(_scalar_wilson_ci(c, n)), rel=0, abs=0, nan_ok=True), (c, n)
        assert list(wilson_ci(c, n)) == pytest.approx([lo, hi], rel=0, abs=0, nan_ok=True), (c, n)


def _sliding_mattr(words, window):
    """measures.mattr as it was before it counted windows at once: a sliding counter (the reference)."""
    n = len(words)
    if n == 0:
        return float("nan")
    if n <= window:
        return len(set(words)) / n
    counts: dict[str, int] = {}
    for w in words[:window]:
        counts[w] = counts.get(w, 0) + 1
    total = len(counts)
    for i in range(window, n):
        old, new = words[i - window], words[i]
        counts[old] -= 1
        if counts[old] == 0:
            del counts[old]
        counts[new] = counts.get(new, 0) + 1
        total += len(counts)
    return total / ((n - window + 1) * window)


def test_mattr_equals_the_sliding_counter_exactly():
    import random

    from evalsuite.childes import measures

    rng = random.Random(3)
    vocab = [f"w{k}" for k in range(40)]
    for n in (0, 1, 5, 49, 50, 51, 52, 120, 1000):
        for vocab_size in (1, 3, 40):
            words = [rng.choice(vocab[:vocab_size]) for _ in range(n)]
            for window in (2, 10, 50):
                fast, slow = measures.mattr(words, window), _sliding_mattr(words, window)
                assert fast == slow or (fast != fast and slow != slow), (n, vocab_size, window)


def test_shared_bootstrap_draws_equal_bootstrap_ci_exactly():
    import numpy as np

    from evalsuite import stats
    from evalsuite.stats import bootstrap_ci

    rng = np.random.default_rng(7)
    cases = []
    for n in (0, 1, 2, 3, 17, 500, 3000):
        # counts (the packed single-gather path: small non-negative integers), then a float, a negative and a
        # too-large column (each makes the set take the per-column gathers)
        counts = [rng.integers(0, 9, n), rng.integers(0, 40, n), np.full(n, 2.0)]
        cases += [counts, [*counts, rng.normal(size=n)], [*counts[:2], -counts[2]],
                  [counts[0], rng.integers(0, 70000, n)]]
        if n == 17:
            with_nan = [c.astype(float) for c in counts]
            with_nan[1][4] = np.nan  # a NaN: that column drops a row, so every column goes through bootstrap_ci
            cases.append(with_nan)
    # both paths are exercised: the counts pack, the others do not
    assert stats._packable([c.astype(float) for c in cases[-4]])
    assert not any(stats._packable([c.astype(float) for c in case]) for case in cases[-3:])
    for columns in cases:
        for seed, n_boot in ((0, 200), (3, 101)):
            config = CompareConfig(seed=seed, n_bootstrap=n_boot)
            got = compare._mean_cis(columns, config)
            for col, (value, lo, hi, k) in zip(columns, got, strict=True):
                ci = bootstrap_ci(col.astype(float), n_boot=n_boot, seed=seed)
                # bit for bit (NaN where bootstrap_ci gives NaN)
                assert [value, lo, hi, k] == pytest.approx([ci.estimate, ci.ci_low, ci.ci_high, ci.n], rel=0, abs=0,
                                                           nan_ok=True)


@pytest.mark.shared_data
def test_fast_rate_and_hits_tables_equal_the_per_unit_loops(folder):
    frame = load_children([folder], CompareConfig(n_workers=1)).utterances
    units = analyze_child_utterances(frame, CompareConfig())
    # model-side rows too, with sub-kind hits, so every branch is compared
    story = units.head(30).assign(source="model", checkpoint_id="ck", checkpoint="ck", model_family="baseline",
                                  val_loss=2.0, val_bpc=0.8)
    story["hits"] = [[{"error_type": "pronoun_antecedent", "kind": k, "start": 0, "end": 1, "text": "he"}
                      for k in ("gender_mismatch", "no_antecedent")[: i % 3]] for i in range(len(story))]
    story["has_pronoun_antecedent"] = story["hits"].map(bool)
    both = pd.concat([units, story], ignore_index=True)
    assert sum(map(len, both["hits"])) > 20
    config = CompareConfig()
    # two children, and one transcript without an age (its own "age unknown" bin)
    both.loc[both["file"] == both["file"].iloc[0], "age_months"] = float("nan")
    assert both["child"].nunique() >= 2
    pd.testing.assert_frame_equal(compare.rate_table(both, config), _old_rate_table(both, config), check_exact=True)
    pd.testing.assert_frame_equal(compare.hits_table(both), _old_hits_table(both))
    # measures too, exactly (check_exact: the bootstrap bounds are the same floats, not merely close); with a
    # model document id shared by two checkpoints, so that a document split across groups is computed per group
    shared = both.copy()
    shared.loc[shared["source"] == "model", "doc_id"] = "story-0"
    shared.loc[shared.index[-5:], "checkpoint_id"] = "ck2"
    for frame in (both, shared):
        new, old = compare.measure_table(frame, config), _old_measure_table(frame, config)
        assert len(new) > 20 and new["ci_low"].notna().sum() > 10
        pd.testing.assert_frame_equal(new, old, check_exact=True)
    # one grouping shared by both tables (what childes_compare passes) gives the same tables
    shared_groups = compare._group_keys(both, config, (*compare.RATE_COLUMNS, *compare.MEASURE_COLUMNS))
    pd.testing.assert_frame_equal(compare.rate_table(both, config, shared_groups), compare.rate_table(both, config))
    pd.testing.assert_frame_equal(compare.measure_table(both, config, shared_groups), compare.measure_table(both, config),
                                  check_exact=True)
    # hit counts visit only units with a has_ flag: the same counts as visiting every unit
    for a, b in zip(compare._hit_counts(both), compare._hit_counts(both.drop(columns=list(compare.RATE_COLUMNS))),
                    strict=True):
        pd.testing.assert_frame_equal(a, b)
    # a non-default index (units of a caller's own frame) gives the same rates
    shifted = both.set_axis(both.index * 3 + 11)
    pd.testing.assert_frame_equal(compare.rate_table(shifted, config), _old_rate_table(shifted, config))
    new_groups = compare._group_keys(both, config, ["n_words"])
    old_groups = _old_group_keys(both, config)
    assert [k for k, _ in new_groups] == [k for k, _ in old_groups] or all(
        str(a) == str(b) for a, b in zip([k for k, _ in new_groups], [k for k, _ in old_groups], strict=True))
    for (_, a), (_, b) in zip(new_groups, old_groups, strict=True):
        assert list(a.index) == list(b.index)
        pd.testing.assert_series_equal(a["n_words"], b["n_words"])


def _synthetic_children(texts_by_file: dict[str, list[str]]) -> pd.DataFrame:
    """A parse-cache-like frame of child utterances (the columns analyze_child_utterances reads)."""
    rows = []
    for file, texts in texts_by_file.items():
        for i, text in enumerate(texts):
            anns = [{"start": 0, "end": 3, "word": "the", "target": "", "code": "[/]"}] if text.startswith("the the") else []
            rows.append({"file": file, "corpus": "Syn", "child": file[:3], "age_months": 30.0 + len(file), "utt_index": i,
                         "utterance": text, "utterance_clan": text, "n_words": len(text.split()), "unintelligible": False,
                         "annotations": anns, "compounds": [[0, 9]] if text.startswith("thank you") else [],
                         "mor": ["pron|he", "aux|be"][: i % 3], "mor_words": ["he", "is"][: i % 3]})
    return pd.DataFrame(rows)


@pytest.mark.shared_data  # the spaCy model is part of the environment the shared data tests assume
def test_distinct_texts_are_parsed_once_and_pronouns_keep_their_own_context():
    # the same "he is happy" after a male, a female and no mention: three different pronoun_antecedent results
    frame = _synthetic_children({
        "Aaa/1.cha": ["the boy ran .", "he is happy .", "he is happy .", "the the dog runs .", "thank you ."],
        "Bbb/2.cha": ["Mommy is here .", "he is happy .", "no .", "no .", "no .", "he is happy ."],
        "Ccc/3.cha": ["he is happy .", "the dog the dog runs home .", "no .", "thank you ."],
    })
    for window in (3, 1, 0):
        config = CompareConfig(n_workers=1, use_cache=False, context_window=window)
        direct = pd.concat([analyze_child_utterances(g, config) for _, g in frame.groupby("file", sort=False)],
                           ignore_index=True)
        fast, stats = analyze_children_cached(frame, config)
        pd.testing.assert_frame_equal(fast, direct)
        assert stats["utterances_parsed"] == len(frame) == 15
        assert stats["spacy_docs_parsed"] == 7 and stats["distinct_texts_parsed"] == 7
        kinds = [[h["kind"] for h in hs if h["error_type"] == "pronoun_antecedent"] for hs in fast["hits"]]
        assert kinds[11] == ["no_antecedent"]  # the first utterance of Ccc: no context
        if window:
            assert kinds[1] == kinds[2] == [] and kinds[6] == ["gender_mismatch"]  # after "the boy" / "Mommy"
        else:
            assert kinds[1] == ["no_antecedent"]


def test_unit_cache_key_changes_with_the_code_that_builds_units(monkeypatch, tmp_path):
    compare.unit_code_key.cache_clear()
    before = compare.unit_code_key(3)
    try:
        # an edited unit-building function of compare.py
        def analyze_texts(keys, nlp, batch_size=256):  # a different body: a different key
            return []

        monkeypatch.setattr(compare, "analyze_texts", analyze_texts)
        compare.unit_code_key.cache_clear()
        assert compare.unit_code_key(3) != before
        monkeypatch.undo()
        compare.unit_code_key.cache_clear()
        assert compare.unit_code_key(3) == before
        # an edited detector module
        root = tmp_path / "repo"
        for rel in (*compare.UNIT_CODE_FILES, *(p.relative_to(REPO) for p in (REPO / "evalsuite/childes/data").glob("*.tsv"))):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes((REPO / rel).read_bytes())
        monkeypatch.setattr(compare, "_ROOT", root)
        compare.unit_code_key.cache_clear()
        assert compare.unit_code_key(3) == before
        (root / "evalsuite/childes/detectors.py").write_text((REPO / "evalsuite/childes/detectors.py").read_text() + "\n# edit\n")
        compare.unit_code_key.cache_clear()
        assert compare.unit_code_key(3) != before
    finally:
        monkeypatch.undo()
        compare.unit_code_key.cache_clear()


def test_the_distinct_text_path_runs_every_detector_of_detect_span_in_its_order():
    """analyze_texts and detect_span share one split of the detectors around pronoun_antecedent
    (detectors.context_free_hits): every detect_* function of the module is in it, in detect_span's order
    (a structural guard; the equality tests above only see detectors that fire)."""
    import inspect
    import re

    from evalsuite.childes import detectors

    split = [d.__name__ for d in (*detectors._BEFORE_PRONOUNS, *detectors._AFTER_PRONOUNS)]
    every = {name for name, fn in inspect.getmembers(detectors, inspect.isfunction)  # the per-unit detectors
             if name.startswith("detect_") and list(inspect.signature(fn).parameters) == ["span", "offset"]}
    assert set(split) == every and len(split) == len(every)
    assert split[:2] == ["detect_article_omission", "detect_pronoun_case"]  # the two detect_span ran before pronouns
    assert "context_free_hits(" in inspect.getsource(compare.analyze_texts)
    assert re.findall(r"\b(context_free_hits|detect_pronoun_antecedent)\(", inspect.getsource(detectors.detect_span)) == [
        "context_free_hits", "detect_pronoun_antecedent"]

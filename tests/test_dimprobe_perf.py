"""The optimised dim-probe path (issue 14 item 7) computes the same numbers as the code before it.

Two probe runs in one process on the same fixture (a tiny SpinNet, the default controls: two
untrained twins and an untrained baseline, permutations and bootstrap on): one with the package as
it is, one with the pre-optimisation accumulator, statistics, claim scores and top-components table
swapped in (tests/_dimprobe_reference.py, verbatim copies of commit 00e9c6f). Every table must be
identical, bitwise (values, dtypes, row order)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests._dimprobe_fixtures import stories, tiny_probe_model, word_tokenizer

DOCS = stories(16, seed=11)


@pytest.fixture(scope="module")
def both_runs():
    import tests._dimprobe_reference as ref
    from evalsuite.dimprobe import probe as probe_mod
    from evalsuite.dimprobe import stats as stats_mod
    from evalsuite.dimprobe.collect import ProbeText
    from evalsuite.dimprobe.probe import ProbeConfig, run_probe

    tok = word_tokenizer(DOCS)
    probe = tiny_probe_model(tok, seed=5)
    # a short window stride exercises the windowed forward; few permutations keep it fast
    config = ProbeConfig(permutations=99, bootstrap=200, seed=3, min_docs=5, batch_tokens=512, doc_batch=7)
    texts = [ProbeText(d) for d in DOCS]
    fast = run_probe(probe, texts, config)
    patch = pytest.MonkeyPatch()
    try:
        patch.setattr(probe_mod, "Accumulator", ref.ReferenceAccumulator)
        patch.setattr(probe_mod, "compute_stats", ref.compute_stats)
        patch.setattr(probe_mod, "top_components", ref.top_components)
        patch.setattr(stats_mod, "_claim_scores", ref._claim_scores)
        slow = run_probe(probe, texts, config)
    finally:
        patch.undo()
    return fast, slow


@pytest.mark.slow
@pytest.mark.parametrize("table", ["table", "specialisation", "controls", "claims", "top", "documents"])
def test_optimised_tables_equal_the_reference_bitwise(both_runs, table):
    fast, slow = both_runs
    assert len(fast.summary.models) == 4  # probed + 2 untrained twins + baseline
    got, want = getattr(fast, table), getattr(slow, table)
    assert len(want) > 0
    pd.testing.assert_frame_equal(got, want, check_exact=True)


@pytest.mark.slow
def test_the_reference_run_is_a_real_comparison(both_runs):
    """The comparison could fail: the fixture has p-values, intervals and NaN columns (categories
    absent from some resamples), the cases the fast paths treat differently."""
    fast, slow = both_runs
    table = fast.table
    assert table["p"].notna().sum() > 100 and (table["p"] < 1).any()
    assert (fast.claims["role"] == "control").any() and len(fast.controls) > 0
    boot = fast.stats["probe"].boot_mean
    assert np.isnan(boot).any() and not np.isnan(boot).all()  # mixed NaN / NaN-free columns
    assert fast.summary.timings["statistics"] > 0 and slow.summary.timings["statistics"] > 0


def test_fast_helpers_equal_their_references():
    import tests._dimprobe_reference as ref
    from evalsuite.dimprobe.stats import (
        _boot_rank_interval,
        _interval,
        _interval1,
        _intervals1,
        _max_last,
        _rank_interval,
        _ranks_desc,
    )

    rng = np.random.default_rng(4)
    for dtype in (np.float32, np.float64):
        draws = rng.integers(0, 5, size=(301, 4, 3, 8)).astype(dtype)  # many ties
        for case in ("clean", "mixed", "all-nan-column"):
            d = draws.copy()
            if case != "clean":
                d[rng.random(301) < 0.2, 1] = np.nan
            if case == "all-nan-column":
                d[:, 2, 1, 3] = np.nan
            for got, want in zip(_interval(d), ref._interval(d), strict=True):
                assert got.dtype == want.dtype
                assert np.array_equal(got, want, equal_nan=True)
            ranks = np.where(np.isnan(d.astype(np.float64)).all(axis=-1, keepdims=True), np.nan,
                             _ranks_desc(d.astype(np.float64)))
            for got, want in zip(_boot_rank_interval(d), _rank_interval(ranks, 8), strict=True):
                assert np.array_equal(got, want, equal_nan=True)
            assert np.array_equal(_max_last(d), d.max(axis=-1), equal_nan=True)
    draws = [rng.normal(size=250) for _ in range(30)]
    draws[3][5] = np.nan
    draws[7][:] = np.nan
    draws[9][2] = np.inf
    got, want = _intervals1(draws), [_interval1(d) for d in draws]
    assert np.array_equal(np.asarray(got), np.asarray(want), equal_nan=True)
    assert np.isnan(got[7][0]) and np.isfinite(got[3][0])


def test_batched_permutations_equal_one_document_at_a_time():
    from evalsuite.dimprobe.collect import _batched_partial_permutations, _partial_permutations

    sizes = np.random.default_rng(9)
    shuffles, want = [], []
    for j in range(12):
        n = int(sizes.integers(1, 60))
        m = int(sizes.integers(1, n + 1))
        row = int(sizes.integers(0, 500))
        want.append(_partial_permutations(np.random.default_rng([3, j]), n, 50, m) + row)
        shuffles.append((n, m, np.random.default_rng([3, j]).random((m, 50)), row))
    got = _batched_partial_permutations(shuffles, 50)
    assert len(got) == len(want)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    # and each row is a partial permutation: distinct unit rows of its document
    assert all(len(set(r)) == len(r) for g in got for r in g)

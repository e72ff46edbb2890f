"""The optimised dim-probe path (issue 14 item 7) computes the same statistics as the code before it.

Two probe runs in one process on the same fixture (a tiny SpinNet, the default controls: two
untrained twins and an untrained baseline, permutations and bootstrap on): one with the package as
it is, one with the pre-optimisation permutation plan, accumulator, statistics, claim scores and
top-components table swapped in (tests/_dimprobe_reference.py, verbatim copies of commit 00e9c6f;
claims_table of cd2be71).

The permutation draws are the same (same seed, same RNG stream, same words permuted); the sums over
them may be formed in another floating-point order (other GEMM blocking, float64 running sums), so
the tables agree to a stated tolerance, not bitwise: every float column to RTOL relative (ATOL
absolute near 0), a Monte Carlo p-value (p, spec_p) exactly or by one step 1/(P + 1) where a
replicate's |D*| sits on |D| within rounding (a tie flips), and the columns computed from the p-values
(p_adj, significant, counts of significant components, formatted p_adj) exactly wherever that model's
p-values are all equal. Labels, orders, counts and dtypes are equal exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests._dimprobe_fixtures import stories, tiny_probe_model, word_tokenizer

DOCS = stories(16, seed=11)
PERMUTATIONS = 99
RTOL, ATOL = 1e-6, 1e-9
P_COLUMNS = {"p", "spec_p"}
FROM_P = {"p_adj", "significant", "n_significant_up", "n_significant_down", "top_p_adj", "claimed_p_adj"}


@pytest.fixture(scope="module")
def package_run():
    """The fixture (a tiny SpinNet, its 4 models with the default controls; a short window stride exercises the
    windowed forward; few permutations keep it fast) and the package's own run on it: (inputs, result)."""
    from evalsuite.dimprobe.collect import ProbeText
    from evalsuite.dimprobe.probe import ProbeConfig, run_probe

    tok = word_tokenizer(DOCS)
    inputs = (tiny_probe_model(tok, seed=5), [ProbeText(d) for d in DOCS],
              ProbeConfig(permutations=PERMUTATIONS, bootstrap=200, seed=3, min_docs=5, batch_tokens=512,
                          doc_batch=7))
    return inputs, run_probe(*inputs)


def _run_with(inputs: tuple, swaps: list[tuple[object, str, object]]):
    """run_probe on `inputs` with each (module, name, replacement) swapped in for the run."""
    from evalsuite.dimprobe.probe import run_probe

    patch = pytest.MonkeyPatch()
    try:
        for module, name, value in swaps:
            patch.setattr(module, name, value)
        return run_probe(*inputs)
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def both_runs(package_run):
    import tests._dimprobe_reference as ref
    from evalsuite.dimprobe import probe as probe_mod
    from evalsuite.dimprobe import stats as stats_mod

    inputs, fast = package_run
    slow = _run_with(inputs, [
        (probe_mod, "Accumulator", _without_layout(ref.ReferenceAccumulator)),
        (probe_mod, "plan_permutations", ref.plan_permutations),
        (probe_mod, "compute_stats", ref.compute_stats),
        (probe_mod, "top_components", ref.top_components),
        (stats_mod, "_claim_scores", ref._claim_scores),
        (stats_mod, "claims_table", ref.claims_table),
        (probe_mod, "claims_across_models", ref.claims_across_models),
    ])
    return fast, slow


TABLES = ("table", "specialisation", "controls", "claims", "top", "documents")


@pytest.fixture(scope="module")
def main_runs(package_run):
    """The package's run and a run with main's (e822e81) versions of the functions the controls pass
    changed (tests/_dimprobe_reference_main.py), on `package_run`'s fixture with its 4 models."""
    import tests._dimprobe_reference_main as ref
    from evalsuite.dimprobe import probe as probe_mod
    from evalsuite.dimprobe import stats as stats_mod

    inputs, fast = package_run
    swaps = [(module, name, getattr(ref, name))
             for module, names in ((stats_mod, ("_boot_rank_interval", "_interval_sorted")),
                                   (probe_mod, ("compare_with_control", "claims_across_models")))
             for name in names]
    swaps.append((probe_mod, "Accumulator", _without_layout(ref.Accumulator)))  # with main's _unit_sums
    return fast, _run_with(inputs, swaps)


def _without_layout(cls: type) -> type:
    """`cls` with an add_batch that ignores the batch layout run_probe shares (it derives its own)."""

    class WithoutLayout(cls):
        def add_batch(self, *args, layout=None) -> None:  # noqa: ARG002
            super().add_batch(*args)

    return WithoutLayout


@pytest.mark.slow
def test_tables_are_bit_identical_to_main(main_runs):
    """The controls pass (shared work, batched percentiles, ...) changes no output: every table of a
    run with the default controls equals, exactly, main's (e822e81) on the same fixture, the NaN
    paths included (categories absent from some resamples)."""
    fast, slow = main_runs
    assert len(fast.summary.models) == 4  # probed + 2 untrained twins + baseline
    assert np.isnan(fast.stats["probe"].boot_mean).any() and (fast.claims["role"] == "control").any()
    for table in TABLES:
        pd.testing.assert_frame_equal(getattr(fast, table), getattr(slow, table), check_exact=True, obj=table)
    for name, st in fast.stats.items():
        for field in ("mean", "ratio", "boot_mean", "boot_overall", "boot_spec_excess", "rank_ci_low", "rank_ci_high"):
            assert np.array_equal(getattr(st, field), getattr(slow.stats[name], field), equal_nan=True), (name, field)


def assert_tables_agree(got: pd.DataFrame, want: pd.DataFrame, p_step: float) -> dict[str, int]:
    """The tolerance of the module docstring; returns {column: cells that differ at all}."""
    assert list(got.columns) == list(want.columns) and len(got) == len(want)
    assert list(got.dtypes) == list(want.dtypes)
    differ: dict[str, int] = {}
    models = want["model"].to_numpy() if "model" in want else np.zeros(len(want))
    p_moved = set()
    for col in P_COLUMNS & set(want.columns):
        a, b = got[col].to_numpy(float), want[col].to_numpy(float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), col
        gap = np.abs(np.nan_to_num(a - b))
        assert gap.max(initial=0.0) <= p_step * (1 + 1e-9), (col, gap.max())
        p_moved |= set(models[gap > 0])
        differ[col] = int((gap > 0).sum())
    for col in want.columns:
        if col in P_COLUMNS:
            continue
        a, b = got[col], want[col]
        rows = ~np.isin(models, list(p_moved)) if col in FROM_P else np.ones(len(want), dtype=bool)
        if pd.api.types.is_float_dtype(b):
            x, y = a.to_numpy(float), b.to_numpy(float)
            np.testing.assert_allclose(x[rows], y[rows], rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=col)
            differ[col] = int((~np.isclose(x, y, rtol=0, atol=0, equal_nan=True)).sum())
        else:
            same = (a.astype(object).where(a.notna(), None).to_numpy() == b.astype(object).where(b.notna(), None)
                    .to_numpy())
            assert same[rows].all(), (col, a[rows & ~same].head(3).tolist(), b[rows & ~same].head(3).tolist())
            differ[col] = int((~same).sum())
    return differ


@pytest.mark.slow
@pytest.mark.parametrize("table", ["table", "specialisation", "controls", "claims", "top", "documents"])
def test_optimised_tables_agree_with_the_reference(both_runs, table):
    fast, slow = both_runs
    assert len(fast.summary.models) == 4  # probed + 2 untrained twins + baseline
    got, want = getattr(fast, table), getattr(slow, table)
    assert len(want) > 0
    assert_tables_agree(got, want, 1 / (PERMUTATIONS + 1))
    if table == "documents":
        pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_the_tolerance_check_can_fail():
    want = pd.DataFrame({"model": ["a", "a"], "p": [0.01, 0.5], "p_adj": [0.02, 0.5], "mean": [1.0, 2.0],
                         "component": ["e0", "e1"]})
    step = 0.01
    assert_tables_agree(want.assign(mean=[1.0 + 1e-8, 2.0], p=[0.02, 0.5], p_adj=[0.04, 0.5]), want, step)
    for bad in (want.assign(mean=[1.0 + 1e-4, 2.0]), want.assign(p=[0.03, 0.5]),
                want.assign(component=["e1", "e0"]), want.assign(p_adj=[0.03, 0.5])):
        with pytest.raises(AssertionError):
            assert_tables_agree(bad, want, step)


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
    cpu = fast.summary.cpu_timings  # the probing thread's CPU seconds, stage by stage
    assert set(cpu) == set(fast.summary.timings) and cpu["statistics"] > 0 and min(cpu.values()) >= 0


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


@pytest.mark.slow
def test_control_comparison_equals_main_with_other_layers_and_category_order(main_runs):
    """compare_with_control (gathered at once) equals main's row-by-row version exactly where the
    control has fewer layers and its categories in another order (the index paths of the gather)."""
    import dataclasses

    import tests._dimprobe_reference_main as ref
    from evalsuite.dimprobe.stats import compare_with_control

    fast, _ = main_runs
    probe, control = fast.stats["probe"], fast.stats["untrained"]
    order = list(range(len(control.categories)))[::-1]
    keep = list(range(1, len(control.layers)))
    other = dataclasses.replace(
        control, layers=[control.layers[i] for i in keep], categories=[control.categories[i] for i in order[1:]],
        spec_excess=control.spec_excess[order[1:]][:, keep],
        boot_spec_excess=control.boot_spec_excess[:, order[1:]][:, :, keep], n_tokens=control.n_tokens[order[1:]])
    for a, b in ((probe, other), (other, probe), (probe, control)):
        got, want = compare_with_control(a, b), ref.compare_with_control(a, b)
        assert len(got) > 0
        pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_nan_flag_helpers_equal_numpy_any_and_all():
    """The packed NaN flags (K flags read as one integer) give numpy's any()/all() over the last axis,
    for the packed widths and the others, contiguous or not."""
    from evalsuite.dimprobe.stats import _all_nan_last, _any_nan_last

    rng = np.random.default_rng(8)
    for k in (1, 2, 3, 4, 7, 8, 9):
        for dtype in (np.float32, np.float64):
            d = rng.standard_normal((60, 3, k)).astype(dtype)
            d[rng.random(d.shape) < 0.3] = np.nan
            d[rng.random(60) < 0.2] = np.nan  # whole rows: every flag set
            for x in (d, d[::2], np.moveaxis(d, 0, 1)):
                assert np.array_equal(_any_nan_last(x), np.isnan(x).any(axis=-1))
                assert np.array_equal(_all_nan_last(x), np.isnan(x).all(axis=-1))

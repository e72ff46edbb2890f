"""dim-probe statistics on synthetic magnitudes: permutation null, p-value calibration, bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from evalsuite.dimprobe.collect import Accumulator, plan_permutations
from evalsuite.dimprobe.stats import (
    ALL,
    adjust_pvalues,
    bootstrap_weights,
    claims_table,
    compare_with_control,
    compute_stats,
)

CATS = ["A", "B", "C", "D"]


def synthetic_docs(n_docs, rng, n_layers=2, k=4, shift=None):
    """Documents of 20-60 tokens; labels: A ~30%, B ~10%, C = 'most tokens' (~80%), D absent in some docs.
    Magnitudes iid chi-like noise; `shift=(cat, layer, comp, amount)` adds signal on one category."""
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(20, 60))
        labels = np.zeros((n, len(CATS)), dtype=bool)
        labels[:, 0] = rng.random(n) < 0.3
        labels[:, 1] = rng.random(n) < 0.1
        labels[:, 2] = rng.random(n) < 0.8
        labels[:, 3] = (rng.random(n) < 0.05) & (rng.random() < 0.5)
        values = np.sqrt(rng.chisquare(8, size=(n, n_layers, k))).astype(np.float32)
        values[:, :, 0] += 2.0  # e0 is the largest component everywhere (scale, not category)
        if shift is not None:
            cat, layer, comp, amount = shift
            values[labels[:, cat], layer, comp] += amount
        docs.append((values, labels))
    return docs


def accumulate(docs, n_perm, seed=0, batch=7):
    n_layers, k = docs[0][0].shape[1:]
    acc = Accumulator(list(range(n_layers)), k, CATS, n_perm)
    for start in range(0, len(docs), batch):
        chunk = docs[start : start + batch]
        ids = list(range(start, start + len(chunk)))
        labels = [lab for _, lab in chunk]
        plan = plan_permutations(labels, ids, n_perm, seed) if n_perm else None
        # every token its own word unit
        acc.add_batch(ids, [v for v, _ in chunk], [np.arange(len(lab)) for lab in labels], labels, plan)
    return acc.finalize()


def test_permutation_replicates_are_within_document_shuffles():
    """The replicates' mean and variance match the exact within-document permutation moments, and
    their distribution matches explicit label shuffles (two-sample KS)."""
    rng = np.random.default_rng(1)
    docs = synthetic_docs(12, rng)
    acc = accumulate(docs, 3000)
    n_layers, k = 2, 4
    # exact moments, document by document
    expect = np.zeros((len(CATS), n_layers * k))
    var = np.zeros_like(expect)
    for values, labels in docs:
        v = values.reshape(len(values), -1).astype(np.float64)
        n = len(v)
        for c in range(len(CATS)):
            m = labels[:, c].sum()
            expect[c] += m * v.mean(axis=0)
            if n > 1:
                var[c] += m * (n - m) / (n - 1) * v.var(axis=0)
    perm = acc.perm_sum  # (C, P, LK)
    np.testing.assert_allclose(perm.mean(axis=1), expect, rtol=0.02, atol=0.05)
    ok = var > 0
    ratio = perm.var(axis=1)[ok] / var[ok]
    assert ratio.min() > 0.85 and ratio.max() < 1.15
    # explicit shuffles of the label rows within each document, for category A, layer 1, comp 2
    col = 1 * k + 2
    naive = []
    shuffle_rng = np.random.default_rng(99)
    for _ in range(3000):
        total = 0.0
        for values, labels in docs:
            shuffled = labels[shuffle_rng.permutation(len(labels))]
            total += values.reshape(len(values), -1)[shuffled[:, 0], col].sum()
        naive.append(total)
    assert sps.ks_2samp(perm[0, :, col], naive).pvalue > 0.01
    # a category that is absent contributes nothing; the observed sums are exact
    observed = sum(v.reshape(len(v), -1)[lab[:, 0]].sum(axis=0) for v, lab in docs)
    np.testing.assert_allclose(acc.doc_cat_sum[:, 0].sum(axis=0), observed, rtol=1e-5)


def test_null_pvalues_are_uniform_and_nothing_is_discovered():
    rng = np.random.default_rng(2)
    docs = synthetic_docs(60, rng, n_layers=3, k=8)
    acc = accumulate(docs, 400, seed=3)
    stats = compute_stats("null", acc, bootstrap_weights(len(docs), 100, 0))
    table = stats.table[stats.table["category"] != ALL]
    p = table["p"].dropna().to_numpy()
    assert len(p) == 3 * 8 * 4
    assert sps.kstest(p, "uniform").pvalue > 0.01
    assert 0.0 <= (p < 0.05).mean() <= 0.12
    assert not table["significant"].any()
    assert sps.kstest(table["p_norm"].dropna(), "uniform").pvalue > 0.01
    # the specialisation statistic is at chance too
    spec_p = stats.spec["spec_p"].dropna()
    assert (spec_p > 0.01).all()


def test_planted_shift_is_found_and_ranked_first():
    rng = np.random.default_rng(4)
    docs = synthetic_docs(40, rng, n_layers=2, k=8, shift=(1, 1, 5, 1.0))
    acc = accumulate(docs, 200)
    stats = compute_stats("planted", acc, bootstrap_weights(len(docs), 200, 0))
    t = stats.table
    row = t[(t["category"] == "B") & (t["layer"] == 1) & (t["component"] == "e5")].iloc[0]
    assert row["p"] == pytest.approx(1 / 201)  # more extreme than every replicate
    assert row["p_norm_adj"] < 1e-6
    # with 64 tests and 200 replicates, a lone effect's BH-adjusted Monte Carlo p cannot go below
    # 64/201: the resolution limit the probe warns about
    assert row["p_adj"] == pytest.approx(adjust_pvalues(t["p"].to_numpy(), "bh")[row.name])
    assert row["rank_ratio"] == 1 and row["ratio"] > 1.1 and row["z"] > 0.3
    assert row["ci_low"] < row["mean"] < row["ci_high"]
    # e0 is the largest component by mean everywhere (scale), so it ranks first by mean
    assert t[(t["category"] == "B") & (t["layer"] == 1) & (t["component"] == "e0")]["rank_mean"].iloc[0] == 1
    spec = stats.spec.set_index(["layer", "category"])
    assert spec.loc[(1, "B"), "spec_component"] == "e5" and spec.loc[(1, "B"), "spec_p"] < 0.01
    # layer 0 carries no signal for B
    assert (t[(t["category"] == "B") & (t["layer"] == 0)]["p_adj"] > 0.05).all()
    # the same documents without the shift are a control the planted model exceeds
    control_docs = [(v.copy(), lab) for v, lab in docs]
    for v, lab in control_docs:
        v[lab[:, 1], 1, 5] -= 1.0
    control = compute_stats("control", accumulate(control_docs, 200), bootstrap_weights(len(docs), 200, 0))
    cmp = compare_with_control(stats, control).set_index(["layer", "category"])
    assert bool(cmp.loc[(1, "B"), "exceeds_control"])
    assert not bool(cmp.loc[(0, "B"), "exceeds_control"])


def test_bootstrap_interval_covers_and_shrinks():
    rng = np.random.default_rng(5)
    small = compute_stats("s", accumulate(synthetic_docs(15, rng), 0), bootstrap_weights(15, 300, 1))
    large = compute_stats("l", accumulate(synthetic_docs(150, rng), 0), bootstrap_weights(150, 300, 1))

    def width(s):
        t = s.table[(s.table["category"] == "A")]
        return float((t["ci_high"] - t["ci_low"]).mean())

    assert width(large) < 0.6 * width(small)
    t = large.table
    inside = (t["ci_low"] <= t["mean"]) & (t["mean"] <= t["ci_high"])
    assert inside[t["n_tokens"] > 0].all()
    # no permutations: p columns are empty rather than made up
    assert t["p"].isna().all()


def test_bootstrap_weights_resample_documents():
    w = bootstrap_weights(10, 50, 3)
    assert w.shape == (50, 10) and (w.sum(axis=1) == 10).all()
    assert not np.array_equal(w[0], w[1])
    np.testing.assert_array_equal(w, bootstrap_weights(10, 50, 3))


def test_adjust_pvalues_matches_statsmodels_and_keeps_nan():
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.001, 0.02, np.nan, 0.04, 0.5])
    adj = adjust_pvalues(p, "bh")
    assert np.isnan(adj[2])
    np.testing.assert_allclose(adj[[0, 1, 3, 4]], multipletests(p[[0, 1, 3, 4]], method="fdr_bh")[1])
    np.testing.assert_allclose(adjust_pvalues(p, "holm")[[0, 1, 3, 4]],
                               multipletests(p[[0, 1, 3, 4]], method="holm")[1])


def test_claims_table_compares_claimed_and_measured_top3():
    rng = np.random.default_rng(6)
    docs = synthetic_docs(30, rng, n_layers=1, k=8, shift=(0, 0, 3, 3.0))
    stats = compute_stats("m", accumulate(docs, 100), bootstrap_weights(30, 200, 0))
    claims = claims_table(stats, {"A": (0, 3, 1), "B": (7, 6, 5), "E": (0, 1, 2)})
    row = claims.set_index("category").loc["A"]
    # A: e3 is lifted by 3.0 above e0's +2 offset, so the measured order starts e3, e0
    assert row["measured_by_mean"].startswith("e3 e0")
    assert row["verdict"] == "refuted" and row["p_boot_ordered"] <= 0.05
    assert row["measured_by_ratio"].startswith("e3")
    assert not row["same_as_overall"]  # over all tokens e0 stays first: the category reorders
    b = claims.set_index("category").loc["B"]
    assert b["verdict"] == "refuted" and b["measured_by_mean"].startswith("e0")
    assert claims.set_index("category").loc["E", "verdict"] == "not testable"
    every = claims.set_index("category").loc["(every category)"]
    assert every["measured_by_mean"] == "e0 first in 3/4 categories"


def word_docs(n_docs, rng, k=4):
    """Documents of 10-30 words of 1-6 tokens; a word's tokens share one random magnitude (as the
    characters of a word do in a character-level model); labels belong to words."""
    docs = []
    for _ in range(n_docs):
        n_words = int(rng.integers(10, 30))
        lengths = rng.integers(1, 7, size=n_words)
        word_labels = np.zeros((n_words, len(CATS)), dtype=bool)
        word_labels[:, 0] = rng.random(n_words) < 0.3
        word_labels[:, 1] = lengths >= 5  # long words: category B (labels tied to word length)
        word_labels[:, 2] = rng.random(n_words) < 0.7
        units = np.repeat(np.arange(n_words), lengths)
        word_value = np.sqrt(rng.chisquare(8, size=(n_words, 1, k)))
        values = (word_value[units] + 0.05 * rng.standard_normal((len(units), 1, k))).astype(np.float32)
        docs.append((values, units, word_labels))
    return docs


def accumulate_words(docs, n_perm, token_units=False, seed=0):
    acc = Accumulator([0], docs[0][0].shape[2], CATS, n_perm)
    for start in range(0, len(docs), 8):
        chunk = docs[start : start + 8]
        ids = list(range(start, start + len(chunk)))
        if token_units:  # the wrong design: every token its own unit, labels copied from its word
            units = [np.arange(len(u)) for _, u, _ in chunk]
            ulabels = [wl[u] for _, u, wl in chunk]
        else:
            units = [u for _, u, _ in chunk]
            ulabels = [wl for _, _, wl in chunk]
        acc.add_batch(ids, [v for v, _, _ in chunk], units, ulabels, plan_permutations(ulabels, ids, n_perm, seed))
    return acc.finalize()


def test_word_units_shuffle_words_and_match_the_exact_null_moments():
    rng = np.random.default_rng(7)
    docs = word_docs(30, rng)
    acc = accumulate_words(docs, 2000)
    stats = compute_stats("w", acc, bootstrap_weights(len(docs), 50, 0))
    assert acc.perm_n[0].std() > 0  # the category's token count varies when words are shuffled
    t = stats.table[stats.table["category"] != ALL].set_index(["category", "component"])
    mu0_dev = []
    for ci, cat in enumerate(CATS[:3]):
        for comp in range(4):
            row = t.loc[(cat, f"e{comp}")]
            # D* replicates: recover mu0 from the exact formula through z_perm's definition
            s_obs = acc.doc_cat_sum[:, ci, comp].astype(np.float64).sum()
            n_obs = acc.doc_n_cat[:, ci].sum()
            units = acc.doc_units.astype(float)
            w = acc.doc_units_cat[:, ci].astype(float)
            mu0 = (w @ (acc.doc_unit_sum[:, comp] / units)) / (w @ (acc.doc_unit_n / units))
            d_star = acc.perm_sum[ci, :, comp] - mu0 * acc.perm_n[ci]
            mu0_dev.append(abs(d_star.mean()) / d_star.std())
            z_mc = (s_obs - mu0 * n_obs) / d_star.std()
            assert row["z_perm"] == pytest.approx(z_mc, rel=0.1, abs=0.05)
    assert max(mu0_dev) < 0.1  # E*[D] = 0
    # explicit word-label shuffles give the same null distribution of S (category A, component 1)
    shuffle_rng = np.random.default_rng(3)
    naive = []
    for _ in range(2000):
        total = 0.0
        for values, units, wl in docs:
            shuffled = wl[shuffle_rng.permutation(len(wl))]
            total += values[shuffled[units, 0], 0, 1].sum()
        naive.append(total)
    assert sps.ks_2samp(acc.perm_sum[0, :, 1], naive).pvalue > 0.01


def test_word_units_keep_the_null_calibrated_where_token_shuffles_are_not():
    """Tokens of a word share their magnitude: shuffling tokens understates the null variance."""
    rng = np.random.default_rng(8)
    pw, pt = [], []
    for rep in range(6):
        docs = word_docs(25, rng, k=8)
        for token_units, out in ((False, pw), (True, pt)):
            stats = compute_stats("n", accumulate_words(docs, 200, token_units, seed=rep),
                                  bootstrap_weights(len(docs), 10, 0))
            out.extend(stats.table[stats.table["category"].isin(["A", "C"])]["p"].dropna())
    pw, pt = np.asarray(pw), np.asarray(pt)
    assert (pw < 0.05).mean() < 0.1 and sps.kstest(pw, "uniform").pvalue > 0.01
    assert (pt < 0.05).mean() > 2 * max((pw < 0.05).mean(), 0.05)


def test_resamples_without_a_rare_category_do_not_vote_for_a_ranking():
    """A category in 2 of 20 documents is absent from ~12% of document resamples. Those resamples
    have no ranking: they must not enter the rank intervals (ranking NaN means hands out 1..K in
    component order) nor count as "e0 first" in the every-category row."""
    rng = np.random.default_rng(5)
    docs = []
    for i, (values, labels) in enumerate(synthetic_docs(20, rng, n_layers=1, k=8)):
        labels = labels.copy()
        labels[:, 3] = False
        if i < 2:
            labels[:3, 3] = True
        values = values.copy()
        values[labels[:, 3], 0, 3] += 10.0  # D: e3 far above every other component, e0 second
        docs.append((values, labels))
    stats = compute_stats("m", accumulate(docs, 50), bootstrap_weights(20, 1000, 0))
    assert np.isnan(stats.boot_mean[:, 3, 0, 0]).mean() > 0.05  # the situation under test
    d = stats.table[stats.table["category"] == "D"].set_index("component")
    assert d.loc["e3", "rank_mean"] == 1 and d.loc["e3", "rank_mean_ci_high"] == 1
    assert d.loc["e0", "rank_mean_ci_low"] == 2  # never first in a resample that holds D
    every = claims_table(stats, {"D": (0, 1, 2)}).set_index("category").loc["(every category)"]
    assert every["p_boot_ordered"] == 0.0 and every["verdict"] == "refuted"


def test_indistinguishable_components_leave_the_claim_uncertain_not_refuted():
    """With no real differences the exact claimed order is rarely reproduced by chance; that alone
    must not be reported as a refutation while no claimed component is confidently outside the top 3."""
    rng = np.random.default_rng(3)
    docs = synthetic_docs(40, rng, n_layers=1, k=8)  # category A carries no signal
    stats = compute_stats("m", accumulate(docs, 50), bootstrap_weights(40, 300, 0))
    row = claims_table(stats, {"A": (0, 1, 2)}).set_index("category").loc["A"]
    a = stats.table[stats.table["category"] == "A"].set_index("component")
    assert row["p_boot_ordered"] <= 0.05  # the old rule alone would have said "refuted"
    assert all(a.loc[c, "rank_mean_ci_low"] <= 3 for c in ("e0", "e1", "e2"))
    assert row["verdict"] == "uncertain"


def test_fast_interval_and_rank_interval_equal_the_sorted_percentiles():
    """The one-pass shortcuts give exactly the sorted-percentile answers, NaN resamples included."""
    from evalsuite.dimprobe.stats import _interval, _percentile, _rank_interval, _rank_percentile, _ranks_desc

    rng = np.random.default_rng(3)
    draws = rng.normal(size=(401, 6, 5))
    for values in (draws, np.where(rng.random(draws.shape) < 0.1, np.nan, draws)):
        low, high = _interval(values)
        np.testing.assert_allclose(low, _percentile(values, 2.5), rtol=1e-12)
        np.testing.assert_allclose(high, _percentile(values, 97.5), rtol=1e-12)
    v = rng.integers(0, 4, size=(300, 5, 3, 8)).astype(float)
    v[rng.random(v.shape) < 0.05] = np.nan
    v[:20, 0] = np.nan
    ranks = np.where(np.isnan(v).all(axis=-1, keepdims=True), np.nan, _ranks_desc(v))
    lo, hi = _rank_interval(ranks, 8)
    assert np.array_equal(lo, _rank_percentile(ranks, 2.5, "lower"), equal_nan=True)
    assert np.array_equal(hi, _rank_percentile(ranks, 97.5, "higher"), equal_nan=True)

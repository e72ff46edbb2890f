"""The two %mor styles of the CHILDES corpora, told apart and read the same way.

- UD style (TalkBank's current MOR, most corpora): `verb|play-Fin-Ind-Past-S3`, `noun|cookie-Plur`,
  `pron|I-Prs-Nom-S1~aux|be-Fin-Ind-Pres-S1`. Features are UD names; regular and fused
  inflection look alike (`verb|go-Fin-Ind-Past` is "went"), so a bound morpheme is counted only
  when the surface word is the regular form (evalsuite.childes.measures does that).
- CLAN style (the older MOR, e.g. Providence): `v|play-PAST`, `v|go&PAST`, `n|dog-PL`,
  `part|wear-PRESP`, `n|+n|birth+n|day`, `0det:art|a`. A suffix after `-` is a separate
  morpheme; after `&` it is fused into the stem and not counted (CLAN's MLU rule, Brown 1973).

`mor_style_of_items` tells the style from the items of a transcript; `item_style` from one item.
`clan_item_morphemes` counts one CLAN-style item; `coarse_pos` maps either style to UD's POS tags.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable

# POS labels that occur in one style only (the rest, adj adv aux det part num, occur in both).
UD_ONLY_POS = frozenset({"noun", "verb", "pron", "adp", "cconj", "sconj", "intj", "propn", "punct", "sym", "x"})
CLAN_ONLY_POS = frozenset({"n", "v", "pro", "prep", "co", "cop", "mod", "coord", "conj", "inf", "neg", "qn",
                           "on", "chi", "fil", "poss", "wplay", "bab", "n:prop"})
# Regular inflections of the CLAN style that MLU counts (Brown's list; derivational -AGT, -DIM are not).
CLAN_INFLECTIONS = frozenset({"PL", "PAST", "PASTP", "3S", "PRESP", "CP", "SP", "POSS"})
_CLAN_FEATURE_RE = re.compile(r"[A-Z]{2,}|\d+[A-Z]+")  # PAST, PRESP, 3S, 13S; not UD S1, P3
SKIP_POS = frozenset({"cm", "end", "beg", "bq", "eq", "punct"})
FILLER_POS = frozenset({"intj", "co", "fil"})

_CLAN_TO_UD = {
    "n": "NOUN", "n:prop": "PROPN", "v": "VERB", "part": "VERB", "cop": "AUX", "aux": "AUX", "mod": "AUX",
    "pro": "PRON", "det": "DET", "qn": "DET", "adj": "ADJ", "adv": "ADV", "prep": "ADP", "coord": "CCONJ",
    "conj": "SCONJ", "co": "INTJ", "inf": "PART", "neg": "PART", "num": "NUM", "on": "INTJ", "poss": "PART",
}


def split_item(item: str) -> tuple[str, str]:
    """`pos|rest` -> (pos, rest); pos keeps its subcategory (pro:sub)."""
    pos, _, rest = item.partition("|")
    return pos, rest


@functools.lru_cache(maxsize=65536)
def item_style(item: str) -> str:
    """'ud', 'clan' or '' (cannot tell) for one %mor item (no clitic `~`)."""
    pos, rest = split_item(item)
    if not rest:
        return ""
    base = pos.lstrip("0").split(":", 1)[0]
    if base in UD_ONLY_POS:
        return "ud"
    if base in CLAN_ONLY_POS or pos.startswith("0") or rest.startswith("+"):
        return "clan"
    if "&" in rest:
        return "clan"
    features = rest.split("-")[1:]
    if any(_CLAN_FEATURE_RE.fullmatch(f) for f in features):
        return "clan"
    if any(f[:1].isupper() and not f.isupper() for f in features):
        return "ud"
    return ""


def mor_style_of_items(items: Iterable[str], limit: int = 5000) -> str:
    """'ud', 'clan', 'mixed' or 'none' (no %mor item) for the %mor items of a transcript (the first `limit`)."""
    counts = {"ud": 0, "clan": 0, "": 0}
    for item in itertools.islice(items, limit):
        for part in item.split("~"):
            if "|" in part:
                counts[item_style(part)] += 1
    if counts["ud"] == counts["clan"] == counts[""] == 0:
        return "none"
    if counts["ud"] and counts["clan"]:
        major, minor = sorted((counts["ud"], counts["clan"]), reverse=True)
        if minor > 0.01 * major:
            return "mixed"
        return "ud" if counts["ud"] > counts["clan"] else "clan"
    return "clan" if counts["clan"] else "ud"


def clan_item_morphemes(item: str, fillers: frozenset[str] = frozenset(), clitic: bool = False) -> int:
    """Morphemes of one CLAN-style item: 1 for the stem (a `+` compound is one stem) plus one per
    regular inflection after `-`; fused `&` features add nothing. Omitted words (`0det:art|a`),
    punctuation and fillers count 0, and so does the `inf|to` clitic of gonna/wanna
    (`part|go&PRESP~inf|to`), which CLAN and the UD style (`adv|gonna`) count as one word."""
    pos, rest = split_item(item)
    if not rest or pos.startswith("0") or pos in SKIP_POS:
        return 0
    if clitic and pos == "inf" and rest == "to":
        return 0
    stem, *suffixes = rest.split("-")
    if pos.split(":", 1)[0] in FILLER_POS and stem.lower() in fillers:
        return 0
    return 1 + sum(1 for s in suffixes if s.split("&", 1)[0] in CLAN_INFLECTIONS)


@functools.lru_cache(maxsize=65536)
def coarse_pos(item: str) -> str:
    """UD universal POS (NOUN, VERB, ...) of one %mor item of either style; '' for punctuation/omitted."""
    pos, rest = split_item(item)
    if not rest or pos.startswith("0") or pos in SKIP_POS:
        return ""
    base = pos.split(":", 1)[0]
    if item_style(item) == "clan" or base in CLAN_ONLY_POS:
        return _CLAN_TO_UD.get(pos if pos == "n:prop" else base, base.upper())
    return base.upper()

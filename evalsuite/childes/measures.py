"""Developmental measures: MLU in morphemes and words, TTR / MATTR, clause density.

MLU follows CLAN's definition (MacWhinney, The CHILDES Project, MLU command; Brown 1973): every
word stem counts one morpheme, and so does each *regular* bound inflection: plural -s, past -ed,
past participle -ed, third-person -s, progressive -ing, comparative -er, superlative -est; a clitic
('s, n't, 'm, 'll) counts as a morpheme of its own. Irregular (fused) forms count one: went, men,
took (CLAN marks them with "&" rather than "-" and does not count them).

Two implementations that must agree:
- `mor_morphemes`: from the transcribers' %mor tier. These Brown files use TalkBank's UD-style
  %mor (`noun|cookie-Plur`, `verb|take-Fin-Ind-Past-S1`, `pron|I-Prs-Nom-S1~aux|be-...`), which no
  longer separates regular from fused inflection, so a feature counts only when the surface word is
  the regular form of the lemma (walked/walk yes, took/take no).
- `text_morphemes`: from our spaCy parse of the cleaned text (the same text the detectors see), by
  the same rules on the Penn tags.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from corpora import mor as mor_styles
from evalsuite.childes import lexicon
from evalsuite.childes.detectors import FILLERS, is_word

CLAUSE_DEPS = {"ROOT", "ccomp", "xcomp", "advcl", "relcl", "acl", "conj", "csubj", "csubjpass", "parataxis"}
FILLER_SET = frozenset(FILLERS)
SPLIT_CONTRACTIONS = {("gon", "na"), ("wan", "na"), ("got", "ta"), ("lem", "me"), ("gim", "me")}


def _regular_bound(surface: str, lemma: str, kind: str) -> bool:
    surface, lemma = surface.lower(), lemma.lower()
    if not surface or not lemma or surface == lemma:
        return False
    if kind == "plural" or kind == "3s":
        return surface in lexicon.regular_s(lemma) and surface != "does"
    if kind == "past":
        return surface in lexicon.regular_past(lemma)
    if kind == "ing":
        return surface.endswith("ing")
    if kind == "er":
        return surface in lexicon.regular_degree(lemma, "er")
    if kind == "est":
        return surface in lexicon.regular_degree(lemma, "est")
    return False


def _counted_tokens(
    span, exclude: Sequence[tuple[int, int]] = (), offset: int = 0, compounds: Sequence[Sequence[int]] = ()
) -> list:
    """Word tokens MLU counts: no punctuation, fillers, material inside `exclude` character ranges, or
    the second and later words of a `_` compound (`compounds`: [start, end] spans, e.g. corpora.chat's
    "thank you" from thank_you), which CLAN counts as one word and one morpheme."""
    out = []
    for tok in span:
        if not is_word(tok) or tok.lower_ in FILLERS:
            continue
        start = tok.idx - offset
        if any(a <= start < b for a, b in exclude) or any(a < start < b for a, b in compounds):
            continue
        out.append(tok)
    return out


def _continues_word(tok) -> bool:
    """True for the second half of a word spaCy split: can|'t, gon|na, that|'s."""
    if tok.i == 0:
        return False
    prev = tok.doc[tok.i - 1]
    return not prev.whitespace_ and not prev.is_punct


def text_words(
    span, exclude: Sequence[tuple[int, int]] = (), offset: int = 0, compounds: Sequence[Sequence[int]] = ()
) -> int:
    """Orthographic words (as CLAN counts words on the main tier: "can't" and "gonna" are one)."""
    return sum(1 for tok in _counted_tokens(span, exclude, offset, compounds) if not _continues_word(tok))


def token_morphemes(tok) -> int:
    if tok.i > 0 and (tok.doc[tok.i - 1].lower_, tok.lower_) in SPLIT_CONTRACTIONS:
        return 0  # gonna/wanna: CLAN counts one unit
    lemma, tag, low = tok.lemma_, tok.tag_, tok.lower_
    n = 1
    if tag in ("NNS", "NNPS"):
        n += _regular_bound(low, lemma, "plural")
    elif tag in ("VBD", "VBN"):
        n += _regular_bound(low, lemma, "past")
    elif tag == "VBZ":
        n += _regular_bound(low, lemma, "3s")
    elif tag == "VBG":
        n += _regular_bound(low, lemma, "ing")
    elif tag in ("JJR", "RBR"):
        n += _regular_bound(low, lemma, "er")
    elif tag in ("JJS", "RBS"):
        n += _regular_bound(low, lemma, "est")
    return n


def text_morphemes(
    span, exclude: Sequence[tuple[int, int]] = (), offset: int = 0, compounds: Sequence[Sequence[int]] = ()
) -> int:
    return sum(token_morphemes(tok) for tok in _counted_tokens(span, exclude, offset, compounds))


def mor_morphemes(mor: Sequence[str], words: Sequence[str], style: str | None = None) -> int:
    """Morphemes of one utterance from its %mor items (clitics already split) and their surface words.

    Both %mor styles: the UD style (`verb|play-Fin-Ind-Past`) by the surface-form rule above, the
    older CLAN style (`v|play-PAST`, `v|go&PAST`, Providence) by its own `-`/`&` distinction
    (corpora.mor.clan_item_morphemes). `style` is the transcript's (corpora.mor.mor_style_of_items);
    None or "mixed" decides per item. In pylangacq's alignment a clitic split off its word at `~` has an
    empty surface word after a non-empty one: that is how gonna's `part|go&PRESP~inf|to` is told from
    a free "to" (unaligned utterances, all surfaces empty, count every item)."""
    total = 0
    words = list(words) + [""] * (len(mor) - len(words))
    aligned = any(words)
    prev = ""
    for item, surface in zip(mor, words, strict=False):
        if "|" not in item:
            continue
        item_style = style if style in ("ud", "clan") else (mor_styles.item_style(item) or "ud")
        if item_style == "clan":
            clitic = aligned and not surface and prev.endswith(("go&PRESP", "want", "got"))
            total += mor_styles.clan_item_morphemes(item, FILLER_SET, clitic=clitic)
        else:
            total += _ud_item_morphemes(item, surface or "")
        prev = item
    return total


def _ud_item_morphemes(item: str, surface: str) -> int:
    pos, _, rest = item.partition("|")
    if pos in ("cm", "end", "beg", "punct") or pos.startswith("0") or not rest:
        return 0
    lemma, *features = rest.split("-")
    feats = set(features)
    if pos == "intj" and lemma.lower() in FILLERS:
        return 0
    n = 1
    if pos in ("noun", "propn") and "Plur" in feats:
        n += _regular_bound(surface, lemma, "plural")
    elif pos in ("verb", "aux"):
        if "Past" in feats:
            n += _regular_bound(surface, lemma, "past")
        elif "Pres" in feats and "S3" in feats and "Fin" in feats:
            n += _regular_bound(surface, lemma, "3s")
        elif ("Part" in feats and "Pres" in feats) or "Ger" in feats:
            n += _regular_bound(surface, lemma, "ing")
    elif pos in ("adj", "adv"):
        if "Cmp" in feats:
            n += _regular_bound(surface, lemma, "er")
        elif "Sup" in feats:
            n += _regular_bound(surface, lemma, "est")
    return n


def clause_count(span) -> int:
    """Clauses in a unit: verbal predicates heading a clause (a copula heads its clause when it is the root)."""
    n = 0
    for tok in span:
        if tok.dep_ not in CLAUSE_DEPS:
            continue
        verbal = tok.pos_ == "VERB" or (tok.pos_ == "AUX" and tok.dep_ == "ROOT")
        predicate = tok.dep_ in ("ROOT", "ccomp", "conj", "advcl", "relcl") and any(
            c.dep_ in ("cop", "aux") for c in tok.children
        )
        n += verbal or predicate
    return n


def word_types(span) -> list[str]:
    return [tok.lower_ for tok in span if is_word(tok) and tok.lower_ not in FILLERS]


def ttr(words: Sequence[str]) -> float:
    return len(set(words)) / len(words) if words else float("nan")


def windows_first_of_word(i: np.ndarray, prev: np.ndarray, n: np.ndarray | int, window: int) -> np.ndarray:
    """For token i of a document of n tokens whose word last occurred at position prev (-1: not before): in how
    many windows of `window` consecutive tokens (starts 0 .. n - window) it is the first of its word, i.e. the
    starts s in [max(prev + 1, i - window + 1), min(i, n - window)]. Summed over a document's tokens this is the
    sum over all windows of their distinct words: MATTR's numerator, an exact integer."""
    first = np.maximum(prev + 1, i - window + 1)
    return np.maximum(np.minimum(i, n - window) - first + 1, 0)


def mattr(words: Sequence[str], window: int = 50) -> float:
    """Moving-average type-token ratio (Covington & McFall 2010); plain TTR when shorter than the window.
    The distinct words of every window are counted at once (windows_first_of_word), not by sliding a counter."""
    n = len(words)
    if n == 0:
        return float("nan")
    if n <= window:
        return ttr(words)
    codes = pd.factorize(np.asarray(words, dtype=object))[0]
    order = np.argsort(codes, kind="stable")  # each word's positions in increasing order
    same = codes[order[1:]] == codes[order[:-1]]
    prev = np.full(n, -1, dtype=np.int64)
    prev[order[1:][same]] = order[:-1][same]
    total = int(windows_first_of_word(np.arange(n, dtype=np.int64), prev, n, window).sum())
    return total / ((n - window + 1) * window)


UNINTELLIGIBLE_RULES = ("brown", "clan")


def mlu_eligible(frame, unintelligible: str = "brown"):
    """Boolean mask of the utterances an MLU counts (a frame from corpora.chat.read_chat or the parse cache).

    Always out: utterances with no word (`n_words` 0: empty, or filled pauses only, `filler_only`).
    `unintelligible="brown"` (default, Brown 1973): any utterance with an unintelligible word (xxx, yyy)
    is left out. `"clan"` (CLAN's MLU): only the fully unintelligible ones are; in a partly
    unintelligible utterance the intelligible words count (xxx itself is never a word).
    """
    if unintelligible not in UNINTELLIGIBLE_RULES:
        from corpora.errors import UserError

        raise UserError(f"unintelligible rule must be one of {', '.join(UNINTELLIGIBLE_RULES)}, not {unintelligible!r}")
    has_words = frame["n_words"] > 0
    if "filler_only" in frame:
        has_words &= ~frame["filler_only"].astype(bool)
    if unintelligible == "brown":
        return has_words & ~frame["unintelligible"].astype(bool)
    return has_words & ~frame["fully_unintelligible"].astype(bool)

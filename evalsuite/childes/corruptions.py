"""Controlled corruptions of real story text at known rates, to check that each detector tracks them.

Each corruption changes one site in a sentence (the first eligible one), found from the parse of
the clean sentence; the detector then reads the corrupted text afresh:

- drop_articles: remove a/an/the before a singular noun (capitalising the next word at the start).
- swap_pronoun_case: a subject pronoun I/he/she/we/they -> me/him/her/us/them.
- break_agreement: is<->are, was<->were, has<->have, does<->do, am->is with a judged subject;
  a 3rd-singular present verb -> its base form (he likes -> he like); a plural-subject present verb
  -> +s (they like -> they likes).
- overregularize_verbs: an irregular past/participle -> the regular form of its lemma
  (went -> goed, saw -> seed, took -> taked); "be" is left alone. Regularised forms that happen
  to be English words (seed) stay in: they are what a child might say, and a detector that cannot
  see them should lose slope for it.

`injection_curve` corrupts a fraction r of the eligible sentences (exactly round(r * N), chosen at
random, several replicates per rate) and measures the share of eligible sentences the detector
flags; the slope of measured on injected rate estimates (detection rate on corrupted sentences)
minus (false-alarm rate on their clean versions): 1 for a perfect detector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from evalsuite.childes import lexicon
from evalsuite.childes.detectors import _subject_person_number, detect_texts, load_nlp

DETECTOR_FOR = {
    "drop_articles": "article_omission",
    "swap_pronoun_case": "pronoun_case",
    "break_agreement": "subject_verb_agreement",
    "overregularize_verbs": "overregularization",
}
CORRUPTIONS = tuple(DETECTOR_FOR)
OBJECT_OF = {"i": "me", "he": "him", "she": "her", "we": "us", "they": "them"}
BE_SWAP = {"is": "are", "are": "is", "was": "were", "were": "was", "has": "have", "have": "has",
           "does": "do", "do": "does", "am": "is"}


def _match_case(new: str, old: str) -> str:
    if old.isupper() and len(old) > 1:
        return new.upper()
    if old[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def _replace(span, tok, new: str) -> str:
    """The span's text with one token replaced ('' removes it with its trailing space)."""
    text, start = span.text, tok.idx - span.start_char
    end = start + len(tok.text)
    if new == "":
        end += len(tok.whitespace_)
        rest = text[end:]
        if start == 0 and rest:
            rest = rest[:1].upper() + rest[1:]
        return text[:start] + rest
    return text[:start] + new + text[end:]


def _regular_past_form(lemma: str) -> str:
    if lemma.endswith("e"):
        return lemma + "d"
    if len(lemma) > 1 and lemma.endswith("y") and lemma[-2] not in lexicon.VOWELS:
        return lemma[:-1] + "ied"
    return lemma + "ed"


def corrupt_span(span, kind: str) -> str | None:
    """The sentence with one error of `kind` injected, or None when it has no eligible site."""
    if kind == "drop_articles":
        for tok in span:
            if tok.lower_ in ("a", "an", "the") and tok.dep_ == "det" and tok.head.tag_ == "NN":
                return _replace(span, tok, "")
    elif kind == "swap_pronoun_case":
        for tok in span:
            if tok.dep_ in ("nsubj", "nsubjpass") and tok.lower_ in OBJECT_OF:
                return _replace(span, tok, _match_case(OBJECT_OF[tok.lower_], tok.text))
    elif kind == "break_agreement":
        for tok in span:
            subj = [c for c in tok.children if c.dep_ in ("nsubj", "nsubjpass")]
            if tok.pos_ not in ("VERB", "AUX") or len(subj) != 1:
                continue
            pn = _subject_person_number(subj[0])
            if pn is None:
                continue
            low = tok.lower_
            if low in BE_SWAP and low != "am":
                if low in ("has", "have", "does", "do") and tok.tag_ not in ("VBZ", "VBP"):
                    continue
                return _replace(span, tok, _match_case(BE_SWAP[low], tok.text))
            if low == "am":
                return _replace(span, tok, _match_case("is", tok.text))
            if tok.tag_ == "VBZ" and pn == "3sg" and tok.pos_ == "VERB":
                return _replace(span, tok, _match_case(tok.lemma_.lower(), tok.text))
            if tok.tag_ == "VBP" and pn == "other" and tok.pos_ == "VERB":
                return _replace(span, tok, _match_case(sorted(lexicon.regular_s(tok.lemma_.lower()))[0], tok.text))
    elif kind == "overregularize_verbs":
        verbs = lexicon.irregular_verbs()
        for tok in span:
            low = tok.lower_
            if tok.tag_ in ("VBD", "VBN") and low in verbs.lemma_of and low != verbs.lemma_of[low]:
                lemma = verbs.lemma_of[low]
                if lemma == "be":
                    continue
                regular = _regular_past_form(lemma)
                if regular != low and regular not in verbs.accepted.get(lemma, ()):
                    return _replace(span, tok, _match_case(regular, tok.text))
    else:
        raise ValueError(f"unknown corruption {kind!r}; known: {', '.join(CORRUPTIONS)}")
    return None


def story_sentences(stories: Sequence[str], nlp=None) -> list[str]:
    """Sentences of real stories (spaCy segmentation), those with at least 3 words."""
    nlp = nlp or load_nlp()
    out = []
    for doc in nlp.pipe(stories):
        for sent in doc.sents:
            if sum(t.is_alpha for t in sent) >= 3:
                out.append(sent.text.strip())
    return out


@dataclass
class CurveResult:
    kind: str
    detector: str
    n_sentences: int
    n_eligible: int
    base_rate: float  # detector rate on the clean eligible sentences
    hit_rate_corrupted: float  # detector rate on their corrupted versions
    slope: float
    intercept: float
    points: pd.DataFrame  # rate, replicate, injected_rate, measured_rate


def injection_curve(
    sentences: Sequence[str],
    kind: str,
    rates: Sequence[float] = (0.0, 0.1, 0.2, 0.4),
    replicates: int = 20,
    seed: int = 0,
    nlp=None,
) -> CurveResult:
    """Measured detector rate vs injected error rate over the eligible sentences; OLS slope."""
    nlp = nlp or load_nlp()
    detector = DETECTOR_FOR[kind]
    clean_docs = list(nlp.pipe(sentences))
    pairs = [(d.text, c) for d in clean_docs if (c := corrupt_span(d[:], kind)) is not None]
    if not pairs:
        raise ValueError(f"no sentence is eligible for {kind}")
    clean_hits = detect_texts([p[0] for p in pairs], nlp)
    bad_hits = detect_texts([p[1] for p in pairs], nlp)
    clean = np.array([any(h.error_type == detector for h in hs) for hs in clean_hits], dtype=float)
    bad = np.array([any(h.error_type == detector for h in hs) for hs in bad_hits], dtype=float)
    rng = np.random.default_rng(seed)
    n = len(pairs)
    rows = []
    for rate in rates:
        k = int(round(rate * n))
        for rep in range(replicates):
            chosen = np.zeros(n, dtype=bool)
            chosen[rng.choice(n, size=k, replace=False)] = True
            measured = np.where(chosen, bad, clean).mean()
            rows.append({"rate": rate, "replicate": rep, "injected_rate": k / n, "measured_rate": float(measured)})
    points = pd.DataFrame(rows)
    slope, intercept = np.polyfit(points["injected_rate"], points["measured_rate"], 1)
    return CurveResult(kind, detector, len(sentences), n, float(clean.mean()), float(bad.mean()),
                       float(slope), float(intercept), points)

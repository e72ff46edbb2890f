"""Features of developmental age that read the same on child transcripts and on model text.

One function, `document_features(utterances, doc_key)`, turns a DataFrame of utterances (one row
per child utterance or story sentence, a text column `utterance`) into one row per document
(transcript, or all text of one checkpoint). It needs no parser: words come from the text by a
regular expression, morphemes and over-regularisations from the lexicon in
`evalsuite.childes.lexicon`, so the same code runs on 1.8 million CHILDES utterances, on the
parse cache's DataFrame, and on generated stories.

Features (chosen for robustness: one length measure, rates per opportunity, word age):
- `mlu_m`: mean length of utterance in morphemes (Brown 1973 / CLAN MLU rules as far as text shows
  them): each word 1, + 1 for a regular plural/3rd-singular -s, past -ed, progressive -ing of a
  word the lexicon knows, + 1 for each clitic ('s n't 'm 'll 're 've 'd). `_` compounds
  (thank_you) are one word and one morpheme; gonna/wanna count one. Fillers (um, uh) are not
  words; an utterance with no word left is not an utterance (it leaves the denominator).
- `overreg_rate`: over-regularised forms (goed, throwed, foots, mens) per opportunity, where an
  opportunity is a context that needs an irregular past/participle or irregular plural: the
  irregular forms the child produced (went, men) plus the over-regularised ones. NaN without any
  opportunity (a rate of nothing).
- `mean_aoa`: mean Kuperman et al. (2012) age of acquisition (years) over the word tokens with a
  rating (`evalsuite.aoa`).
- `ndw_100`: number of different words in the first 100 word tokens of the document (NDW on a
  fixed-size sample, so it does not grow with transcript length as a plain type count does);
  NaN for a document with fewer than 100 words.
Also returned (for tables, not as model inputs): counts behind each feature and `mlu_w`.

Not a feature: article omission per obligatory context needs a parse (what is a singular count
noun in an argument slot); it stays with the spaCy detectors of childes-compare.
"""

from __future__ import annotations

import functools
import math
import re

import numpy as np
import pandas as pd

from evalsuite.childes import lexicon

FEATURES: tuple[str, ...] = ("mlu_m", "overreg_rate", "mean_aoa", "ndw_100")
NDW_TOKENS = 100
FILLERS = frozenset({"um", "uh", "er", "erm", "hm", "hmm", "mm", "ah", "uhm", "uhhuh", "mhm", "eh", "oh_oh"})
CLITICS = ("n't", "'s", "'m", "'ll", "'re", "'ve", "'d")
ONE_UNIT = frozenset({"gonna", "wanna", "gotta", "hafta", "lemme", "gimme", "dunno"})
_WORD_RE = re.compile(r"[a-z]+(?:['_][a-z]+)*")
_SENT_RE = re.compile(r"(?<=[.!?])\s+|\n+")
# Brown's (1973) stages by MLU in morphemes (upper bounds); V+ beyond 4.5.
BROWN_STAGES: tuple[tuple[float, str], ...] = (
    (2.0, "I"), (2.5, "II"), (3.0, "III"), (3.75, "IV"), (4.5, "V"), (math.inf, "V+"),
)


def brown_stage(mlu_m: float) -> str:
    """Brown's stage for an MLU in morphemes (I: < 2.0 ... V: 3.75-4.5, V+ above); '' for NaN."""
    if mlu_m != mlu_m:
        return ""
    return next(label for upper, label in BROWN_STAGES if mlu_m < upper)


def words_of(text: str) -> list[str]:
    """Word tokens of one utterance (lower-cased; `_` compounds and clitics stay inside the word; no fillers)."""
    return [w for w in _WORD_RE.findall(text.lower()) if w not in FILLERS]


def split_sentences(text: str) -> list[str]:
    """Sentences of a story (after . ! ? or a line break): the units that stand for utterances."""
    return [s.strip() for s in _SENT_RE.split(text) if s and s.strip()]


@functools.lru_cache(maxsize=1)
def _irregular_contexts() -> tuple[frozenset[str], frozenset[str]]:
    """Irregular past/participle forms (went, taken) and irregular plural forms (men, feet) of the lexicon."""
    verbs, nouns = lexicon.irregular_verbs(), lexicon.irregular_nouns()
    past = frozenset(f for f, lemma in verbs.lemma_of.items() if f != lemma and not f.endswith(("s", "ing")))
    plural = frozenset(f for f, lemma in nouns.lemma_of.items() if f != lemma)
    return past, plural


def _known(form: str, pos: str) -> bool:
    return pos in lexicon.known_forms().get(form, ())


@functools.lru_cache(maxsize=200_000)
def word_analysis(word: str) -> tuple[int, int, int]:
    """(morphemes, over-regularisation 0/1, irregular-context 0/1) of one word, by text rules."""
    base, clitics = word, 0
    for clitic in CLITICS:
        while base.endswith(clitic) and len(base) > len(clitic):
            base, clitics = base[: -len(clitic)], clitics + 1
    if "_" in base or base in ONE_UNIT or "'" in base:
        return 1 + clitics, 0, 0
    over = _overregularised(base)
    past, plural = _irregular_contexts()
    context = int(bool(over) or base in past or base in plural)
    return 1 + clitics + _bound_morpheme(base), int(bool(over)), context


def _overregularised(form: str) -> str | None:
    """'verb' for goed/throwed/wented, 'noun' for foots/mans/mens/childs; None otherwise. Forms the
    lexicon accepts as that part of speech (dreamed, fishes, deers) are never flagged."""
    if len(form) < 3 or not form.isalpha():
        return None
    verbs, nouns = lexicon.irregular_verbs(), lexicon.irregular_nouns()
    if form.endswith("ed") and not _known(form, "verb"):
        for base in lexicon.strip_past(form):
            lemma = verbs.lemma_of.get(base)
            if lemma and form not in verbs.accepted.get(lemma, ()) and form != lemma:
                return "verb"
    if form.endswith("s") and not _known(form, "noun"):
        for base in lexicon.strip_s(form):
            lemma = nouns.lemma_of.get(base)
            if not lemma or form in nouns.accepted.get(lemma, ()) or form == lemma or base in _NUMBERS:
                continue
            if base == lemma and nouns.accepted.get(lemma, frozenset()) <= {lemma}:
                continue  # a zero-plural or uncountable noun of the list (the list holds 'abandon'): no evidence
            if base != lemma or _irregular_plural(lemma):
                return "noun"
    return None


_NUMBERS = frozenset({"two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "one"})


def _irregular_plural(lemma: str) -> bool:
    """The noun has a native irregular plural (man/men, foot/feet, child/children, mouse/mice)."""
    accepted = lexicon.irregular_nouns().accepted.get(lemma, frozenset())
    return any(f != lemma and not f.endswith("s") for f in accepted)


def _bound_morpheme(form: str) -> int:
    """1 if the form is a regular inflection (-s, -ed, -ing) of a word the lexicon knows, else 0."""
    if form in lexicon.function_words() or len(form) < 4:
        return 0
    if form.endswith("ing"):
        stem = form[:-3]
        for base in (stem, stem + "e", stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2] else ""):
            if base and _known(base, "verb"):
                return 1
        return 0
    if form.endswith("ed"):
        return int(any(_known(b, "verb") and form in lexicon.regular_past(b) for b in lexicon.strip_past(form)))
    if form.endswith("s") and not form.endswith(("ss", "us", "is")):
        return int(any((_known(b, "noun") or _known(b, "verb")) and form in lexicon.regular_s(b)
                       for b in lexicon.strip_s(form)))
    return 0


def utterance_stats(utterances: pd.DataFrame) -> pd.DataFrame:
    """Per-utterance counts: words, morphemes, over-regularisations, irregular contexts, AoA sum/count.
    Rows with no word (empty, or fillers only) get n_words 0 and are left out of every MLU."""
    from evalsuite.aoa import aoa_norms

    norms = aoa_norms()
    cols: dict[str, list] = {k: [] for k in ("n_words", "n_morphemes", "n_overreg", "n_irregular_context",
                                             "aoa_sum", "n_aoa")}
    for text in utterances["utterance"].astype(str):
        words = words_of(text)
        m = o = c = na = 0
        s = 0.0
        for w in words:
            wm, wo, wc = word_analysis(w)
            m, o, c = m + wm, o + wo, c + wc
            rating = norms.get(w.replace("_", " ")) if "_" in w else norms.get(w)
            if rating is not None:
                s, na = s + rating, na + 1
        for key, value in zip(cols, (len(words), m, o, c, s, na), strict=True):
            cols[key].append(value)
    return pd.DataFrame(cols, index=utterances.index)


def analysable(utterances: pd.DataFrame, clan_unintelligible: bool = False) -> pd.Series:
    """Utterances that count: by default any utterance with a word; `clan_unintelligible=True`
    also drops utterances with an unintelligible word (xxx, yyy), the rule of Brown's MLU, where the
    frame says which (`unintelligible` column of corpora.chat.read_chat)."""
    keep = pd.Series(True, index=utterances.index)
    if clan_unintelligible and "unintelligible" in utterances:
        keep &= ~utterances["unintelligible"].astype(bool)
    return keep


def document_features(
    utterances: pd.DataFrame, doc_key: str = "file", *, clan_unintelligible: bool = True
) -> pd.DataFrame:
    """One row per document: n_utterances and the FEATURES (+ the counts behind them), plus the first
    value of `child`, `corpus`, `age_months`, `checkpoint_id` ... columns when the frame has them."""
    if doc_key not in utterances:
        raise KeyError(f"utterances have no column {doc_key!r}")
    frame = utterances[analysable(utterances, clan_unintelligible)]
    stats = utterance_stats(frame)
    stats[doc_key] = frame[doc_key].to_numpy()
    stats = stats[stats["n_words"] > 0]
    agg = stats.groupby(doc_key, sort=False).agg(
        n_utterances=("n_words", "size"), words=("n_words", "sum"), morphemes=("n_morphemes", "sum"),
        n_overreg=("n_overreg", "sum"), n_irregular_context=("n_irregular_context", "sum"),
        aoa_sum=("aoa_sum", "sum"), n_aoa=("n_aoa", "sum"),
    )
    agg["mlu_m"] = agg["morphemes"] / agg["n_utterances"]
    agg["mlu_w"] = agg["words"] / agg["n_utterances"]
    agg["overreg_rate"] = np.where(agg["n_irregular_context"] > 0,
                                   agg["n_overreg"] / agg["n_irregular_context"].where(agg["n_irregular_context"] > 0),
                                   np.nan)
    agg["mean_aoa"] = agg["aoa_sum"] / agg["n_aoa"].where(agg["n_aoa"] > 0)
    first_words = frame.assign(_w=[words_of(str(u)) for u in frame["utterance"]]).groupby(doc_key, sort=False)["_w"]
    agg["ndw_100"] = first_words.agg(_ndw).reindex(agg.index)
    agg["brown_stage"] = [brown_stage(v) for v in agg["mlu_m"]]
    meta_cols = [c for c in ("corpus", "child", "age_months", "checkpoint_id", "run", "val_loss", "val_bpc",
                             "model_family", "register") if c in frame and c != doc_key]
    if meta_cols:
        first = frame.groupby(doc_key, sort=False)[meta_cols].first()
        agg = agg.join(first)
    return agg.reset_index()


def _ndw(word_lists: pd.Series) -> float:
    words: list[str] = []
    for ws in word_lists:
        words.extend(ws)
        if len(words) >= NDW_TOKENS:
            return float(len(set(words[:NDW_TOKENS])))
    return math.nan


def sentences_frame(samples: pd.DataFrame) -> pd.DataFrame:
    """Model completions (one row per sample) -> one row per sentence with the sample's columns,
    so that `document_features(..., doc_key="checkpoint_id")` reads them like utterances."""
    rows = []
    keep = [c for c in samples.columns if c not in ("completion", "prompt")]
    for rec in samples.to_dict("records"):
        for sent in split_sentences(str(rec["completion"])):
            rows.append({**{k: rec[k] for k in keep}, "utterance": sent})
    return pd.DataFrame(rows, columns=[*keep, "utterance"])

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
- `question_rate` (utterances ending in "?"), `one_word_rate` (utterances of one word): text only.
- From the %mor tier where the frame has one (`mor`, `pos` columns of corpora.chat / the parse cache;
  NaN for a document where fewer than half the utterances have an aligned %mor, and for model text):
  `art_omission_rate` (article omission per obligatory context, defined in `mor_stats`),
  `plural_rate` (plural common nouns per common noun), `past_rate`, `s3_rate`, `prog_rate` (past,
  3rd-singular present, progressive/gerund verb forms per verb), `aux_per_utt`, `verbs_per_utt`.
Also returned (for tables, not as model inputs): counts behind each feature and `mlu_w`.

Everything is vectorised (tokens exploded once, each distinct word and %mor item analysed once, sums
by bincount): ~1 s per 50 k utterances, so childes-compare can call it on every child utterance.
"""

from __future__ import annotations

import functools
import math
import re

import numpy as np
import pandas as pd

from evalsuite.childes import lexicon
from evalsuite.childes.measures import windows_first_of_word

FEATURES: tuple[str, ...] = ("mlu_m", "overreg_rate", "mean_aoa", "ndw_100")
NDW_TOKENS = 100
LATE_AOA_YEARS = 6.0  # a word rated as learned at 6 years or later counts as a late word (late_word_rate)
LENGTH_QUANTILE = 0.9  # len_p90_m: the 90th percentile of utterance length in morphemes
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


def _token_table(texts: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """(utterance position of each word token, the tokens) of lower-cased texts, fillers dropped, in order."""
    tokens = texts.str.lower().str.findall(_WORD_RE).explode()
    tokens = tokens[tokens.notna()]
    tokens = tokens[~tokens.isin(FILLERS)]
    return tokens.index.to_numpy(dtype=np.int64), tokens.astype(str).reset_index(drop=True)


def _word_table(words: pd.Index) -> np.ndarray:
    """(morphemes, over-regularisation, irregular context, AoA rating or NaN, content word 0/1) per
    distinct word; a content word is one that is not a function word (lexicon.function_words)."""
    from evalsuite.aoa import aoa_norms

    norms = aoa_norms()
    function = lexicon.function_words()
    out = np.empty((len(words), 5), dtype=float)
    for i, w in enumerate(words):
        m, o, c = word_analysis(w)
        rating = norms.get(w.replace("_", " ")) if "_" in w else norms.get(w)
        out[i] = (m, o, c, math.nan if rating is None else rating, float(w not in function and "'" not in w))
    return out


def utterance_stats(utterances: pd.DataFrame, tokens: tuple[np.ndarray, pd.Series] | None = None) -> pd.DataFrame:
    """Per-utterance counts: words, morphemes, over-regularisations, irregular contexts, AoA sum/count.
    Rows with no word (empty, or fillers only) get n_words 0 and are left out of every MLU.
    Vectorised: each distinct word is analysed once (`word_analysis`), counts are summed by bincount."""
    n = len(utterances)
    pos, words = tokens if tokens is not None else _token_table(utterances["utterance"].astype(str).reset_index(drop=True))
    codes, uniques = pd.factorize(words)
    per_word = _word_table(pd.Index(uniques))[codes] if len(words) else np.zeros((0, 5))
    rated = np.isfinite(per_word[:, 3])
    content = rated & (per_word[:, 4] > 0)
    late = rated & (per_word[:, 3] >= LATE_AOA_YEARS)
    cols = {
        "n_words": np.bincount(pos, minlength=n),
        "n_morphemes": np.bincount(pos, per_word[:, 0], minlength=n),
        "n_overreg": np.bincount(pos, per_word[:, 1], minlength=n),
        "n_irregular_context": np.bincount(pos, per_word[:, 2], minlength=n),
        "aoa_sum": np.bincount(pos[rated], per_word[rated, 3], minlength=n),
        "n_aoa": np.bincount(pos[rated], minlength=n),
        "content_aoa_sum": np.bincount(pos[content], per_word[content, 3], minlength=n),
        "n_content_aoa": np.bincount(pos[content], minlength=n),
        "n_late_aoa": np.bincount(pos[late], minlength=n),
    }
    frame = pd.DataFrame(cols, index=utterances.index)
    for c in ("n_morphemes", "n_overreg", "n_irregular_context", "n_aoa", "n_content_aoa", "n_late_aoa"):
        frame[c] = frame[c].astype(np.int64)
    return frame


# ----------------------------------------------------------------------------- features from %mor

# Coarse UD POS (corpora.mor.coarse_pos, both %mor styles) that may stand between a determiner and its
# noun ("the big red ball", "a toy car"): the scan for a determiner walks left over these.
_NP_INNER = frozenset({"ADJ", "NOUN"})
_MAX_NP_SCAN = 4
MOR_FEATURES: tuple[str, ...] = ("art_omission_rate", "plural_rate", "past_rate", "s3_rate", "prog_rate",
                                 "aux_per_utt", "verbs_per_utt", "sconj_per_utt", "rel_per_utt", "comp_per_utt",
                                 "inf_per_utt", "multi_verb_rate")
# Clause markers on %mor (the parse cache carries %mor, not %gra): a relative pronoun/determiner/adverb (UD
# feature Rel: pron|who-Rel-S1, pron|that-Rel-S1; CLAN pro:rel|who), a complementiser (UD sconj|that,
# sconj|if, sconj|whether; CLAN comp|that) and an infinitival to (UD part|to, CLAN inf|to).
_COMPLEMENTISERS = frozenset({"that", "if", "whether"})


def _clause_flags(item: str, tag: str) -> tuple[bool, bool, bool]:
    """(relative, complementiser, infinitival to) of one %mor item and its coarse POS, both %mor styles."""
    head, _, rest = item.partition("|")
    lemma = rest.split("-", 1)[0].split("&", 1)[0].lower()
    feats = rest[len(lemma):].upper()
    head = head.lower()
    relative = head == "pro:rel" or "-REL" in feats
    complementiser = head == "comp" or (tag == "SCONJ" and lemma in _COMPLEMENTISERS)
    infinitive = lemma == "to" and head in ("part", "inf")
    return relative, complementiser, infinitive


def _mor_flags(item: str) -> tuple[bool, bool, bool, bool, bool, bool, bool]:
    """(plural, past, 3rd-singular present, progressive/gerund, possessive/genitive, capitalised lemma, the
    lemma is the possessive 's) of one
    %mor item, both styles: UD features (noun|dog-Plur, verb|go-Fin-Ind-Past-S3, verb|run-Part-Pres-S,
    pron|my-Prs-Gen-S1) and CLAN suffixes/fusions (n|dog-PL, v|go&PAST, v|want-3S, v|run-PRESP, det:poss|my)."""
    _, _, rest = item.partition("|")
    lemma = rest.split("-", 1)[0].split("&", 1)[0]
    feats = rest[len(lemma):]
    up = feats.upper()
    plural = "PLUR" in up or "-PL" in up
    past = "PAST" in up
    s3 = "PRES-S3" in up or "3S" in up
    prog = "PART-PRES" in up or "GER" in up or "PRESP" in up
    poss = "GEN" in up or "POSS" in item.upper()
    return plural, past, s3, prog, poss, bool(lemma[:1].isupper()), lemma == "'s"


def mor_stats(utterances: pd.DataFrame) -> pd.DataFrame:
    """Per-utterance counts from the %mor tier (`mor` list of items and `pos` list of coarse UD POS,
    as corpora.chat / the parse cache give them); all zero and `has_mor` False without a %mor tier.

    Article omission per obligatory context (`art_contexts`, `art_omitted`), defined on %mor:
    an obligatory context is a singular common noun (POS NOUN, no plural feature, lower-case lemma:
    names and family terms written as names, Mummy, are left out) that heads its noun phrase (the next
    item is not a NOUN: in "toy car" only "car" counts) in an utterance of at least two %mor items (a
    one-word naming utterance, "ball!", is not a context). Walking left from the noun over adjectives
    and nouns (at most 4 items), the article is supplied when the first other item is a determiner
    (DET: a, the, this, that, some, my in CLAN style ...), a numeral, a possessive/genitive (my, Daddy's)
    or the possessive 's; otherwise it is omitted ("want ball", "big ball"). Mass nouns and idioms
    without an article (juice, at home, in bed) are counted as contexts too: the rate is a bare
    singular common-noun rate, high early and falling with age, not an error rate that adults score 0 on.
    Inflection counts: `n_nouns` (common nouns), `n_plural`; `n_verbs` (VERB items), `n_past`,
    `n_s3`, `n_prog`; `n_aux` (AUX items), `n_sconj` (SCONJ items).
    Clause markers (`_clause_flags`): `n_rel` relative pronouns, `n_comp` complementisers, `n_inf` infinitival
    to; `n_verbs` >= 2 in one utterance is read at document level as a multi-clause utterance."""
    n = len(utterances)
    names = ("art_contexts", "art_omitted", "n_nouns", "n_plural", "n_verbs", "n_past", "n_s3", "n_prog", "n_aux",
             "n_sconj", "n_rel", "n_comp", "n_inf")
    out = {k: np.zeros(n, dtype=np.int64) for k in names}
    has = np.zeros(n, dtype=bool)
    if "mor" not in utterances or "pos" not in utterances or n == 0:
        frame = pd.DataFrame(out, index=utterances.index)
        frame["has_mor"] = has
        return frame
    mor = utterances["mor"].reset_index(drop=True)
    pos = utterances["pos"].reset_index(drop=True)
    lengths_mor = mor.map(lambda v: len(v) if v is not None and not isinstance(v, float) else 0).to_numpy()
    lengths_pos = pos.map(lambda v: len(v) if v is not None and not isinstance(v, float) else 0).to_numpy()
    ok = (lengths_mor > 0) & (lengths_mor == lengths_pos)
    has[:] = ok
    if not ok.any():
        frame = pd.DataFrame(out, index=utterances.index)
        frame["has_mor"] = has
        return frame
    items = pd.Series(mor[ok].explode().to_numpy(dtype=object)).astype(str)
    tags = pd.Series(pos[ok].explode().to_numpy(dtype=object)).astype(str).to_numpy()
    utt = np.repeat(np.flatnonzero(ok), lengths_mor[ok])
    codes, uniques = pd.factorize(items)
    flags = np.array([_mor_flags(u) for u in uniques], dtype=bool).reshape(-1, 7)[codes]
    plural, past, s3, prog, poss, capital, lemma_is_s = (flags[:, k] for k in range(7))
    noun = tags == "NOUN"
    verb = tags == "VERB"
    common = noun & ~capital
    out["n_nouns"] = np.bincount(utt[common], minlength=n)
    out["n_plural"] = np.bincount(utt[common & plural], minlength=n)
    out["n_verbs"] = np.bincount(utt[verb], minlength=n)
    out["n_past"] = np.bincount(utt[verb & past], minlength=n)
    out["n_s3"] = np.bincount(utt[verb & s3], minlength=n)
    out["n_prog"] = np.bincount(utt[verb & prog], minlength=n)
    out["n_aux"] = np.bincount(utt[tags == "AUX"], minlength=n)
    out["n_sconj"] = np.bincount(utt[tags == "SCONJ"], minlength=n)
    pair_codes, pair_uniques = pd.factorize(pd.Series(items.to_numpy() + "\t" + tags))
    clause = np.array([_clause_flags(*u.split("\t", 1)) for u in pair_uniques], dtype=bool).reshape(-1, 3)[pair_codes]
    out["n_rel"] = np.bincount(utt[clause[:, 0]], minlength=n)
    out["n_comp"] = np.bincount(utt[clause[:, 1]], minlength=n)
    out["n_inf"] = np.bincount(utt[clause[:, 2]], minlength=n)
    m = len(items)
    same_next = np.zeros(m, dtype=bool)
    same_next[:-1] = utt[1:] == utt[:-1]
    next_noun = np.zeros(m, dtype=bool)
    next_noun[:-1] = noun[1:] & same_next[:-1]
    context = common & ~plural & ~next_noun & (lengths_mor[utt] >= 2)
    supplied = np.zeros(m, dtype=bool)
    open_ = context.copy()  # still scanning left
    inner = np.isin(tags, list(_NP_INNER))
    marks = (tags == "DET") | (tags == "NUM") | poss | lemma_is_s
    for k in range(1, _MAX_NP_SCAN + 1):
        idx = np.arange(m) - k
        valid = (idx >= 0)
        valid[valid] &= utt[idx[valid]] == utt[valid]
        prev_mark = np.zeros(m, dtype=bool)
        prev_inner = np.zeros(m, dtype=bool)
        prev_mark[valid] = marks[idx[valid]]
        prev_inner[valid] = inner[idx[valid]] & ~marks[idx[valid]]
        supplied |= open_ & prev_mark
        open_ &= prev_inner
    out["art_contexts"] = np.bincount(utt[context], minlength=n)
    out["art_omitted"] = np.bincount(utt[context & ~supplied], minlength=n)
    frame = pd.DataFrame(out, index=utterances.index)
    frame["has_mor"] = has
    return frame


def analysable(utterances: pd.DataFrame, clan_unintelligible: bool = False) -> pd.Series:
    """Utterances that count: by default any utterance with a word; `clan_unintelligible=True`
    also drops utterances with an unintelligible word (xxx, yyy), the rule of Brown's MLU, where the
    frame says which (`unintelligible` column of corpora.chat.read_chat)."""
    keep = pd.Series(True, index=utterances.index)
    if clan_unintelligible and "unintelligible" in utterances:
        keep &= ~utterances["unintelligible"].astype(bool)
    return keep


_INTERNAL_COUNTS = ("n_questions", "n_one_word", "n_mor_utterances", "content_aoa_sum", "n_content_aoa", "n_late_aoa",
                    "art_contexts", "art_omitted", "n_nouns", "n_plural", "n_verbs", "n_past", "n_s3", "n_prog", "n_aux",
                    "n_sconj", "n_rel", "n_comp", "n_inf", "n_multi_verb", "n_sub_words", "words_sq")
MATTR_WINDOW = 100  # mattr_100: the moving-average type-token ratio over windows of 100 word tokens
# Words that open a subordinate clause, read off the text (so model text has them too); counted outside
# questions only, where who/which/when/whose are relatives or subordinators rather than question words.
SUBORDINATORS = frozenset({"because", "cause", "cuz", "if", "when", "whenever", "while", "after", "before", "until",
                           "till", "unless", "since", "although", "though", "whether", "which", "who", "whose", "whom"})
# Features that keep growing after 4 years (issue 13): text ones for every document, %mor ones in MOR_FEATURES.
TEXT_FEATURES: tuple[str, ...] = ("mattr_100", "len_sd_w", "sub_words_per_utt")


def _rate(num: pd.Series, den: pd.Series) -> pd.Series:
    return (num / den.where(den > 0)).astype(float)


def document_features(
    utterances: pd.DataFrame, doc_key: str = "file", *, clan_unintelligible: bool = True
) -> pd.DataFrame:
    """One row per document: n_utterances and the FEATURES (+ the counts behind them), the %mor features
    (MOR_FEATURES: NaN for a document without %mor, e.g. model text), plus the first value of `child`,
    `corpus`, `age_months`, `checkpoint_id` ... columns when the frame has them. Vectorised (one pass of
    bincounts; each distinct word analysed once), so it runs on the 1.8 M CHILDES child utterances."""
    if doc_key not in utterances:
        raise KeyError(f"utterances have no column {doc_key!r}")
    frame = utterances[analysable(utterances, clan_unintelligible)].reset_index(drop=True)
    tokens = _token_table(frame["utterance"].astype(str))
    stats = utterance_stats(frame, tokens)
    mor = mor_stats(frame)
    keep = (stats["n_words"] > 0).to_numpy()
    text = frame["utterance"].astype(str)
    stats = pd.concat([stats, mor], axis=1)
    stats["question"] = text.str.rstrip().str.endswith("?").to_numpy()
    stats["one_word"] = stats["n_words"] == 1
    stats["words_sq"] = stats["n_words"].astype(float) ** 2
    stats["n_multi_verb"] = stats["has_mor"] & (stats["n_verbs"] >= 2)
    pos, words = tokens
    sub = words.isin(SUBORDINATORS).to_numpy()
    stats["n_sub_words"] = np.where(stats["question"], 0, np.bincount(pos[sub], minlength=len(frame)))
    stats[doc_key] = frame[doc_key].to_numpy()
    stats = stats[keep]
    agg = stats.groupby(doc_key, sort=False).agg(
        n_utterances=("n_words", "size"), words=("n_words", "sum"), morphemes=("n_morphemes", "sum"),
        n_overreg=("n_overreg", "sum"), n_irregular_context=("n_irregular_context", "sum"),
        aoa_sum=("aoa_sum", "sum"), n_aoa=("n_aoa", "sum"), n_questions=("question", "sum"),
        content_aoa_sum=("content_aoa_sum", "sum"), n_content_aoa=("n_content_aoa", "sum"),
        n_late_aoa=("n_late_aoa", "sum"), len_p90_m=("n_morphemes", lambda v: float(np.quantile(v, LENGTH_QUANTILE))),
        n_one_word=("one_word", "sum"), n_mor_utterances=("has_mor", "sum"),
        **{c: (c, "sum") for c in ("art_contexts", "art_omitted", "n_nouns", "n_plural", "n_verbs", "n_past",
                                   "n_s3", "n_prog", "n_aux", "n_sconj", "n_rel", "n_comp", "n_inf", "n_multi_verb",
                                   "n_sub_words", "words_sq")},
    )
    agg["mlu_m"] = agg["morphemes"] / agg["n_utterances"]
    agg["mlu_w"] = agg["words"] / agg["n_utterances"]
    agg["overreg_rate"] = _rate(agg["n_overreg"], agg["n_irregular_context"])
    agg["mean_aoa"] = _rate(agg["aoa_sum"], agg["n_aoa"])
    agg["content_aoa"] = _rate(agg["content_aoa_sum"], agg["n_content_aoa"])
    agg["late_word_rate"] = _rate(agg["n_late_aoa"], agg["n_aoa"])
    agg["question_rate"] = agg["n_questions"] / agg["n_utterances"]
    agg["one_word_rate"] = agg["n_one_word"] / agg["n_utterances"]
    # %mor features: only over documents where at least half the utterances have an aligned %mor tier
    mor_ok = agg["n_mor_utterances"] >= 0.5 * agg["n_utterances"]
    for name, count, per in MOR_RATES:
        agg[name] = _rate(agg[count], agg[per]).where(mor_ok)
    # spread of utterance length in words (population SD), and text subordinators per utterance
    agg["len_sd_w"] = np.sqrt(np.maximum(agg["words_sq"] / agg["n_utterances"] - agg["mlu_w"] ** 2, 0.0))
    agg["sub_words_per_utt"] = agg["n_sub_words"] / agg["n_utterances"]
    agg["mattr_100"] = mattr(frame[doc_key].to_numpy(), tokens).reindex(agg.index)
    agg["ndw_100"] = _ndw_first(frame[doc_key].to_numpy(), tokens).reindex(agg.index)
    agg["brown_stage"] = [brown_stage(v) for v in agg["mlu_m"]]
    agg = agg.drop(columns=list(_INTERNAL_COUNTS))  # the rates stay; mor_stats gives these counts per utterance
    meta_cols = [c for c in ("corpus", "child", "age_months", "checkpoint_id", "run", "val_loss", "val_bpc",
                             "model_family", "register") if c in frame and c != doc_key]
    if meta_cols:
        first = frame[keep].groupby(doc_key, sort=False)[meta_cols].first()
        agg = agg.join(first)
    return agg.reset_index()


def _ndw_first(doc_of_utterance: np.ndarray, tokens: tuple[np.ndarray, pd.Series]) -> pd.Series:
    """Number of different words among each document's first NDW_TOKENS word tokens (NaN with fewer)."""
    pos, words = tokens
    table = pd.DataFrame({"doc": doc_of_utterance[pos], "word": words.to_numpy()})
    rank = table.groupby("doc", sort=False).cumcount().to_numpy()
    total = table.groupby("doc", sort=False).size()
    first = table[rank < NDW_TOKENS].drop_duplicates()
    ndw = first.groupby("doc", sort=False).size().astype(float)
    return ndw.where(total.reindex(ndw.index) >= NDW_TOKENS)


# the %mor features of document_features: (feature, count, the count it is per), each NaN where %mor is too thin
MOR_RATES = (
    ("art_omission_rate", "art_omitted", "art_contexts"),
    ("plural_rate", "n_plural", "n_nouns"),
    ("past_rate", "n_past", "n_verbs"),
    ("s3_rate", "n_s3", "n_verbs"),
    ("prog_rate", "n_prog", "n_verbs"),
    ("aux_per_utt", "n_aux", "n_mor_utterances"),
    ("verbs_per_utt", "n_verbs", "n_mor_utterances"),
    ("sconj_per_utt", "n_sconj", "n_mor_utterances"),
    ("rel_per_utt", "n_rel", "n_mor_utterances"),
    ("comp_per_utt", "n_comp", "n_mor_utterances"),
    ("inf_per_utt", "n_inf", "n_mor_utterances"),
    ("multi_verb_rate", "n_multi_verb", "n_mor_utterances"),
)


def mattr(doc_of_utterance: np.ndarray, tokens: tuple[np.ndarray, pd.Series],
          window: int = MATTR_WINDOW) -> pd.Series:
    """Moving-average type-token ratio (Covington & McFall 2010) of each document's word tokens in order:
    the mean over every window of `window` consecutive tokens of (distinct words / window); NaN for a
    document with fewer tokens (measures.mattr, for one document, gives plain TTR there). Vectorised over
    documents: measures.windows_first_of_word counts each token's windows."""
    pos, words = tokens
    doc = pd.Series(doc_of_utterance[pos])
    codes = pd.factorize(words)[0]
    table = pd.DataFrame({"doc": doc.to_numpy(), "word": codes})
    table["i"] = table.groupby("doc", sort=False).cumcount()
    prev = table.groupby(["doc", "word"], sort=False)["i"].shift(1).fillna(-1).to_numpy(dtype=np.int64)
    i = table["i"].to_numpy(dtype=np.int64)
    n = table.groupby("doc", sort=False)["i"].transform("size").to_numpy(dtype=np.int64)
    table["distinct"] = windows_first_of_word(i, prev, n, window)
    total = table.groupby("doc", sort=False)["distinct"].sum().astype(float)
    size = table.groupby("doc", sort=False).size()
    n_windows = (size - window + 1).astype(float)
    return (total / (window * n_windows)).where(size >= window)


def sentences_frame(samples: pd.DataFrame) -> pd.DataFrame:
    """Model completions (one row per sample) -> one row per sentence with the sample's columns,
    so that `document_features(..., doc_key="checkpoint_id")` reads them like utterances."""
    rows = []
    keep = [c for c in samples.columns if c not in ("completion", "prompt")]
    for rec in samples.to_dict("records"):
        for sent in split_sentences(str(rec["completion"])):
            rows.append({**{k: rec[k] for k in keep}, "utterance": sent})
    return pd.DataFrame(rows, columns=[*keep, "utterance"])

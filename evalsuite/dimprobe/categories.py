"""Linguistic categories for dim-probe: which spaCy tokens are nouns, emotion words, dialogue, ...

A category is a named yes/no label on spaCy tokens; categories overlap (an emotion word is also a
NOUN or an ADJ, a dialogue token is also anything else). `CategorySet.label_doc(doc)` returns one
boolean column per category, in `CategorySet.names` order:

- every universal POS tag (UD v2, the 17 of `UPOS`) from spaCy's `token.pos_`;
- `EMOTION`: words the NRC Word-Emotion Association Lexicon (Mohammad & Turney 2013, shipped with
  the `nrclex` package as `nrclex/data/nrc_en.json`) associates with at least one of Plutchik's
  eight emotions. Words whose only association is positive/negative *sentiment* are not emotion
  words. A token matches on its lower-cased text or its lower-cased lemma ("smiled" -> "smile").
  Optional per-emotion categories `EMOTION:joy`, ... (`emotion_subcategories=True`);
- `DIALOGUE`: tokens strictly inside a pair of quotation marks (straight `"` or curly “ ”), the
  marks themselves excluded. Pairs are matched within one line (TinyStories puts each paragraph on
  its own line); a straight quote is read as opening or closing by its neighbours (`quoted_spans`).
  An opening mark without its closing mark in the same line marks nothing, so the odd quotes of a
  small model's story never turn the rest of a story into "dialogue". Single quotes are not used
  (they double as apostrophes);
- user categories from a YAML/JSON file (`load_user_categories`):

      categories:
        ANIMAL:
          words: [cat, dog, "teddy bear"]   # case-insensitive; multi-word entries via PhraseMatcher
          match: both                       # text | lemma | both (default both; single words only)
        NEGATION:
          patterns:                         # spaCy Matcher patterns: a list of token-pattern lists
            - [{LOWER: not}]
            - [{LOWER: "n't"}]

  Every token of a matched span gets the label. Unknown keys, empty categories, invalid patterns and
  names that clash with a built-in category are `UserError`s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corpora.errors import UserError

# Universal POS tags (UD v2). spaCy's extra SPACE tag (whitespace tokens) is not a category.
UPOS: tuple[str, ...] = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
)
EMOTION = "EMOTION"
DIALOGUE = "DIALOGUE"
NRC_EMOTIONS: tuple[str, ...] = (
    "anger", "anticipation", "disgust", "fear", "joy", "sadness", "surprise", "trust",
)
NRC_SENTIMENTS: tuple[str, ...] = ("positive", "negative")
# Matcher pattern keys that need spaCy pipes we otherwise disable for speed.
_PARSER_KEYS = {"DEP", "HEAD", "SENT_START", "IS_SENT_START", "_"}
_NER_KEYS = {"ENT_TYPE", "ENT_IOB", "ENT_ID", "ENT_KB_ID"}
_USER_KEYS = {"words", "patterns", "match"}
_MATCH_MODES = ("text", "lemma", "both")

OPEN_QUOTES = {"\u201c"}  # “
CLOSE_QUOTES = {"\u201d"}  # ”
STRAIGHT_QUOTE = '"'
_MARKS = re.compile("[\n" + re.escape("".join(sorted(OPEN_QUOTES | CLOSE_QUOTES)) + STRAIGHT_QUOTE) + "]")
_BEFORE_OPENER = set("([{,:;\u2014\u2013-")
_AFTER_CLOSER = set(".,!?;:)]}\u2014\u2013-'\u2019")


# --- the emotion lexicon ------------------------------------------------------------------------


@dataclass(frozen=True)
class EmotionLexicon:
    """word -> the NRC emotions it is associated with (sentiment-only words dropped)."""

    words: dict[str, frozenset[str]]
    source: str
    n_entries: int  # entries in the file, sentiment-only ones included

    def describe(self) -> dict[str, Any]:
        counts = {e: sum(e in v for v in self.words.values()) for e in NRC_EMOTIONS}
        return {
            "source": self.source,
            "entries_in_file": self.n_entries,
            "emotion_words": len(self.words),
            "words_per_emotion": counts,
            "rule": "a token is an emotion word when its lower-cased text or lemma is associated "
                    "with at least one of the 8 NRC emotions (sentiment-only words excluded)",
        }


def load_nrc_lexicon(path: str | Path | None = None) -> EmotionLexicon:
    """The NRC emotion lexicon: the file `nrclex` ships (offline), or a JSON file of the same shape
    ({word: [affects...]}). Raises UserError when the file is missing or malformed."""
    if path is None:
        try:
            from importlib import resources

            resource = resources.files("nrclex.data").joinpath("nrc_en.json")
            raw = json.loads(resource.read_text(encoding="utf-8"))
            source = f"nrclex {_package_version('nrclex')} nrclex/data/nrc_en.json (NRC EmoLex)"
        except (ModuleNotFoundError, FileNotFoundError) as err:
            raise UserError(f"the NRC emotion lexicon is not installed (pip install nrclex): {err}") from err
    else:
        file = Path(path).expanduser()
        if not file.is_file():
            raise UserError(f"emotion lexicon not found: {file}")
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"{file}: not a JSON lexicon ({err})") from None
        source = str(file.resolve())
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise UserError(f"emotion lexicon {source}: expected a JSON object word -> list of affects")
    words: dict[str, frozenset[str]] = {}
    for word, affects in raw.items():
        emotions = frozenset(a for a in affects if a in NRC_EMOTIONS)
        if emotions:
            words[str(word).lower()] = emotions
    if not words:
        raise UserError(f"emotion lexicon {source} has no word with an NRC emotion")
    return EmotionLexicon(words=words, source=source, n_entries=len(raw))


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


# --- dialogue -----------------------------------------------------------------------------------


def quoted_spans(text: str) -> list[tuple[int, int]]:
    """Character spans strictly between matching quotation marks, one line at a time.

    Curly “ opens and ” closes. A straight " is read by its shape: opening when it follows the
    line start, a space or an opening bracket/comma/colon and precedes a non-space; closing when it
    follows a non-space and precedes the line end, a space or punctuation; otherwise it toggles. An
    opening mark while a quote is open restarts the quote there (the earlier opener had no closer);
    a closing mark with nothing open is ignored. Marks left open at the end of a line are dropped,
    so unbalanced quotes label nothing.
    """
    spans: list[tuple[int, int]] = []
    open_at: int | None = None
    n = len(text)
    for mark in _MARKS.finditer(text):  # only newlines and quotation marks change the state
        i, ch = mark.start(), mark.group()
        if ch == "\n":
            open_at = None
        elif ch in OPEN_QUOTES:
            open_at = i + 1
        elif ch in CLOSE_QUOTES:
            if open_at is not None:
                spans.append((open_at, i))
            open_at = None
        elif ch == STRAIGHT_QUOTE:
            prev = text[i - 1] if i > 0 else "\n"
            nxt = text[i + 1] if i + 1 < n else "\n"
            opener = (prev.isspace() or prev in _BEFORE_OPENER) and not nxt.isspace()
            closer = not prev.isspace() and (nxt.isspace() or nxt in _AFTER_CLOSER)
            if open_at is None:
                if not (closer and not opener):
                    open_at = i + 1
            elif opener and not closer:
                open_at = i + 1
            else:
                spans.append((open_at, i))
                open_at = None
    return [(a, b) for a, b in spans if b > a]


def inside_spans(starts: np.ndarray, ends: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Which [start, end) token spans lie entirely inside one of the sorted, disjoint `spans`."""
    inside = np.zeros(len(starts), dtype=bool)
    if not spans or len(starts) == 0:
        return inside
    span_starts = np.array([a for a, _ in spans])
    span_ends = np.array([b for _, b in spans])
    which = np.searchsorted(span_starts, starts, side="right") - 1
    ok = which >= 0
    inside[ok] = ends[ok] <= span_ends[which[ok]]
    return inside


# --- user categories ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UserCategory:
    name: str
    words: frozenset[str] = frozenset()  # single lower-cased words
    phrases: tuple[str, ...] = ()  # multi-word entries (PhraseMatcher on LOWER)
    patterns: tuple[Any, ...] = ()  # spaCy Matcher patterns
    match: str = "both"


def load_user_categories(path: str | Path, reserved: Sequence[str] = ()) -> list[UserCategory]:
    """Parse a YAML/JSON category file (format in the module docstring), strictly."""
    import yaml

    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"category file not found: {file}")
    try:
        text = file.read_text(encoding="utf-8")
        raw = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{file}: cannot parse category file ({err})") from None
    if not isinstance(raw, dict) or set(raw) != {"categories"} or not isinstance(raw["categories"], dict):
        raise UserError(f"{file}: expected a mapping with one key 'categories' (name -> words/patterns)")
    if not raw["categories"]:
        raise UserError(f"{file}: no categories defined")
    reserved_upper = {r.upper() for r in reserved}
    out: list[UserCategory] = []
    for name, spec in raw["categories"].items():
        name = str(name).strip()
        where = f"{file}: category '{name}'"
        if not name or name.upper() in reserved_upper or name.upper() == "ALL":
            raise UserError(f"{where}: the name is empty or clashes with a built-in category")
        if not isinstance(spec, dict):
            raise UserError(f"{where}: expected a mapping with 'words' and/or 'patterns'")
        unknown = set(spec) - _USER_KEYS
        if unknown:
            raise UserError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_USER_KEYS)}")
        words = spec.get("words") or []
        patterns = spec.get("patterns") or []
        match = spec.get("match", "both")
        if match not in _MATCH_MODES:
            raise UserError(f"{where}: match must be one of {list(_MATCH_MODES)}, got {match!r}")
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise UserError(f"{where}: 'words' must be a list of non-empty strings")
        if not isinstance(patterns, list) or not all(isinstance(p, list) and p for p in patterns):
            raise UserError(f"{where}: 'patterns' must be a list of spaCy token-pattern lists")
        if not words and not patterns:
            raise UserError(f"{where}: give at least one word or pattern")
        single = frozenset(w.strip().lower() for w in words if len(w.split()) == 1)
        phrases = tuple(" ".join(w.lower().split()) for w in words if len(w.split()) > 1)
        out.append(UserCategory(name, single, phrases, tuple(patterns), match))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise UserError(f"{file}: duplicate category names")
    return out


def _pattern_keys(patterns: Sequence[Any]) -> set[str]:
    keys: set[str] = set()
    for pattern in patterns:
        for token in pattern:
            if isinstance(token, dict):
                keys.update(str(k).upper() for k in token)
    return keys


# --- the category set ---------------------------------------------------------------------------


@dataclass
class CategorySet:
    """The categories of one probe run and how to label a spaCy Doc with them."""

    lexicon: EmotionLexicon
    user: list[UserCategory] = field(default_factory=list)
    emotion_subcategories: bool = False
    names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        names = list(UPOS) + [EMOTION]
        if self.emotion_subcategories:
            names += [f"{EMOTION}:{e}" for e in NRC_EMOTIONS]
        names.append(DIALOGUE)
        names += [c.name for c in self.user]
        self.names = names
        self._index = {n: i for i, n in enumerate(names)}
        self._matchers: tuple[Any, Any] | None = None
        self._word_cache: dict[tuple[int, int], tuple[int, ...]] = {}  # (LOWER, LEMMA) hashes: columns

    @property
    def n(self) -> int:
        return len(self.names)

    def required_pipes(self) -> set[str]:
        """spaCy pipes the user patterns need beyond tagger/attribute_ruler/lemmatizer."""
        keys = set().union(*(_pattern_keys(c.patterns) for c in self.user)) if self.user else set()
        pipes = set()
        if keys & _PARSER_KEYS:
            pipes.add("parser")
        if keys & _NER_KEYS:
            pipes.add("ner")
        return pipes

    def build_matchers(self, vocab: Any) -> None:
        """Compile user patterns/phrases against a pipeline's vocab (invalid patterns: UserError)."""
        from spacy.errors import MatchPatternError
        from spacy.matcher import Matcher, PhraseMatcher
        from spacy.tokens import Doc

        matcher = Matcher(vocab, validate=True)
        phrase_matcher = PhraseMatcher(vocab, attr="LOWER")
        for cat in self.user:
            if cat.patterns:
                try:
                    matcher.add(cat.name, list(cat.patterns))
                except (MatchPatternError, ValueError, TypeError) as err:
                    raise UserError(f"category '{cat.name}': invalid spaCy Matcher pattern: {err}") from None
            if cat.phrases:
                # LOWER attribute only needs tokenization, so plain Docs are fine
                phrase_matcher.add(cat.name, [Doc(vocab, words=p.split()) for p in cat.phrases])
        self._matchers = (matcher, phrase_matcher)

    def label_doc(self, doc: Any, text: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(word_starts, word_ends, labels[n_words, n_categories]) for a tagged spaCy Doc; `text`: the
        string it was made from, if at hand (spaCy's tokenization keeps every character, so it is
        `doc.text`, which otherwise is joined from the tokens).

        Read from `Doc.to_array` (no Token objects): the POS column per distinct tag, and the
        lexicon / user-word columns once per distinct (lower form, lemma) pair of the run
        (`_word_columns`), the same test as per token."""
        from spacy.attrs import IDX, IS_SPACE, LEMMA, LENGTH, LOWER, POS

        n_words = len(doc)
        arr = doc.to_array([IDX, LENGTH, POS, IS_SPACE, LOWER, LEMMA]).reshape(n_words, 6)
        where = arr[:, :2].astype(np.int64)  # character offset, length
        starts = where[:, 0]
        ends = starts + where[:, 1]
        labels = np.zeros((n_words, self.n), dtype=bool)
        strings = doc.vocab.strings
        pos = arr[:, 2]
        for pos_id in np.unique(pos).tolist():
            col = self._index.get(strings[pos_id] if pos_id else "")
            if col is not None:
                labels[pos == pos_id, col] = True
        words = np.flatnonzero(arr[:, 3] == 0)  # not whitespace
        rows: list[int] = []
        cols: list[int] = []
        cache = self._word_cache
        for i, key in zip(words.tolist(), zip(arr[words, 4].tolist(), arr[words, 5].tolist(), strict=True), strict=True):
            hit = cache.get(key)
            if hit is None:
                hit = cache[key] = self._word_columns(strings[key[0]] if key[0] else "",
                                                      (strings[key[1]] if key[1] else "").lower())
            for col in hit:
                rows.append(i)
                cols.append(col)
        if rows:
            labels[rows, cols] = True
        labels[:, self._index[DIALOGUE]] = inside_spans(starts, ends, quoted_spans(doc.text if text is None else text))
        if self.user and any(c.patterns or c.phrases for c in self.user):
            if self._matchers is None:
                self.build_matchers(doc.vocab)
            assert self._matchers is not None
            for m in self._matchers:
                for match_id, a, b in m(doc):
                    labels[a:b, self._index[doc.vocab.strings[match_id]]] = True
        return starts, ends, labels

    def _word_columns(self, lower: str, lemma: str) -> tuple[int, ...]:
        """The lexicon and user-word columns of a non-space word with this lower form and lemma."""
        cols: list[int] = []
        emotions = self.lexicon.words.get(lower) or self.lexicon.words.get(lemma)
        if emotions:
            cols.append(self._index[EMOTION])
            if self.emotion_subcategories:
                cols.extend(self._index[f"{EMOTION}:{e}"] for e in emotions)
        for cat in self.user:
            if cat.words and ((cat.match != "lemma" and lower in cat.words)
                              or (cat.match != "text" and lemma in cat.words)):
                cols.append(self._index[cat.name])
        return tuple(cols)

    def describe(self) -> dict[str, Any]:
        return {
            "names": self.names,
            "upos": list(UPOS),
            "emotion": self.lexicon.describe(),
            "dialogue": "tokens strictly inside matching quotation marks (\" or \u201c \u201d) within one "
                        "line; unbalanced marks label nothing; single quotes are not used (apostrophes)",
            "user": [
                {"name": c.name, "words": sorted(c.words), "phrases": list(c.phrases),
                 "patterns": list(c.patterns), "match": c.match}
                for c in self.user
            ],
        }


def build_categories(
    user_file: str | Path | None = None,
    *,
    emotion_subcategories: bool = False,
    lexicon_path: str | Path | None = None,
) -> CategorySet:
    """The standard category set plus the user's, validated."""
    lexicon = load_nrc_lexicon(lexicon_path)
    reserved = list(UPOS) + [EMOTION, DIALOGUE] + [f"{EMOTION}:{e}" for e in NRC_EMOTIONS]
    user = load_user_categories(user_file, reserved) if user_file is not None else []
    categories = CategorySet(lexicon=lexicon, user=user, emotion_subcategories=emotion_subcategories)
    if any(c.patterns for c in user):
        import spacy

        # fail on a bad pattern now, before any model runs; the tagger's vocab is used later
        categories.build_matchers(spacy.blank("en").vocab)
        categories._matchers = None
    return categories

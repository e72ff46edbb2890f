"""How each tokenizer cuts each corpus: one tidy row per (corpus, tokenizer).

Every document is encoded on its own, without end-of-text tokens, so the counts describe the text
itself. Columns:

- n_documents, n_chars, n_words (whitespace-separated words), n_tokens
- tokens_per_char, tokens_per_word
- unk_rate: share of tokens that are the unknown token. Byte-level BPE has no unknown token (every
  byte is in the vocabulary); its rate is 0 by construction and `unk_note` says so.
- vocab_used_share: distinct ids used / vocabulary size
- article_token_share: share of tokens that are an article token (ids from `article_token_ids`)
  standing as a whole word in context (the characters around it are not letters or digits; this
  keeps the "a" inside "c|a|t" of a small BPE out of the count); article_id_share counts those ids
  anywhere, so the gap between the two shows how often the ids occur inside words.
- share_the / share_a / share_an: the whole-word count of each article per token
- article_word_share: share of whitespace words that are the/a/an (case-insensitive, punctuation
  stripped), the tokenizer-free reference
- article_ids: the ids counted, so the numbers can be checked; article_note explains empty sets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from corpora.tokenizers import ARTICLES, Tokenizer, article_token_ids

COLUMNS = [
    "corpus",
    "tokenizer",
    "tokenizer_identity",
    "vocab_size",
    "n_documents",
    "n_chars",
    "n_words",
    "n_tokens",
    "tokens_per_char",
    "tokens_per_word",
    "unk_rate",
    "unk_note",
    "vocab_used",
    "vocab_used_share",
    "article_token_share",
    "article_id_share",
    *[f"share_{a}" for a in ARTICLES],
    "article_word_share",
    "article_ids",
    "article_note",
]

if TYPE_CHECKING:
    import pandas as pd

_WORD_EDGE = re.compile(r"^\W+|\W+$")


def _is_word_char(ch: str) -> bool:
    return ch.isalnum()


def tokenizer_report(corpora: dict[str, Sequence[str]], tokenizers: list[Tokenizer]) -> pd.DataFrame:
    """One row per (corpus, tokenizer) with the columns described in the module docstring."""
    import pandas as pd

    rows = []
    for tok in tokenizers:
        articles = article_token_ids(tok)
        for corpus_name, docs in corpora.items():
            rows.append(_row(corpus_name, list(docs), tok, articles))
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(corpus_name: str, docs: list[str], tok: Tokenizer, articles: dict[str, list[int]]) -> dict:
    id_to_article = {i: a for a, ids in articles.items() for i in ids}
    n_chars = sum(len(d) for d in docs)
    words = [w for d in docs for w in d.split()]
    n_words = len(words)
    n_tokens = n_unk = n_article_ids = 0
    used: set[int] = set()
    whole_word = dict.fromkeys(ARTICLES, 0)
    for doc, (ids, offsets) in zip(docs, _encoded(tok, docs), strict=True):
        n_tokens += len(ids)
        used.update(ids)
        if tok.unk_id is not None:
            n_unk += sum(1 for i in ids if i == tok.unk_id)
        for token_id, (start, end) in zip(ids, offsets, strict=True):
            article = id_to_article.get(token_id)
            if article is None:
                continue
            n_article_ids += 1
            if _stands_alone(doc, start, end):
                whole_word[article] += 1
    has_articles = any(articles.values())
    n_article_words = sum(1 for w in words if _WORD_EDGE.sub("", w).lower() in ARTICLES)

    def share(count: int) -> float:
        return count / n_tokens if n_tokens and has_articles else float("nan")

    row = {
        "corpus": corpus_name,
        "tokenizer": tok.name,
        "tokenizer_identity": tok.identity,
        "vocab_size": tok.vocab_size,
        "n_documents": len(docs),
        "n_chars": n_chars,
        "n_words": n_words,
        "n_tokens": n_tokens,
        "tokens_per_char": n_tokens / n_chars if n_chars else float("nan"),
        "tokens_per_word": n_tokens / n_words if n_words else float("nan"),
        "unk_rate": (n_unk / n_tokens if n_tokens else float("nan")) if tok.unk_id is not None else 0.0,
        "unk_note": "" if tok.unk_id is not None else "byte-level BPE: no unknown token, 0 by construction",
        "vocab_used": len(used),
        "vocab_used_share": len(used) / tok.vocab_size,
        "article_token_share": share(sum(whole_word.values())),
        "article_id_share": share(n_article_ids),
        **{f"share_{a}": share(whole_word[a]) for a in ARTICLES},
        "article_word_share": n_article_words / n_words if n_words else float("nan"),
        "article_ids": " ".join(f"{a}:{','.join(map(str, ids)) or '-'}" for a, ids in articles.items()),
        "article_note": "" if has_articles else _no_article_note(tok),
    }
    return row


def _encoded(tok: Tokenizer, docs: list[str], batch: int = 1024):
    """Encodings in batches, so a large corpus never holds every encoding at once."""
    for i in range(0, len(docs), batch):
        yield from tok.encode_batch_with_offsets(docs[i : i + batch])


def _no_article_note(tok: Tokenizer) -> str:
    if tok.is_character_level:
        return "character-level: no word tokens, article shares undefined"
    return "no article is a single token in this vocabulary"


def _stands_alone(text: str, start: int, end: int) -> bool:
    """The token's text, leading whitespace aside, is a whole word: no letter or digit touches it."""
    while start < end and text[start].isspace():
        start += 1
    before_ok = start == 0 or not _is_word_char(text[start - 1])
    after_ok = end >= len(text) or not _is_word_char(text[end])
    return before_ok and after_ok

"""Offline judge modes that ask a small local model for probabilities instead of grades.

The packaged judge (Qwen2.5-Coder-1.5B, local_model.py) writes rubric grades that barely tell clean
from corrupted stories (2 of 40 pairs). A small model's *probabilities* carry more than its written
grades, so three cheaper modes read them directly (one greedy step or a forced decode, temperature 0):

- `loglik`   the model's log-likelihood of the continuation given the beginning: the text is forced
             token by token with a grammar that admits only it (llama.cpp), and the model's own
             (pre-grammar) log-probability of each forced token is summed. Reported in bits per
             character (comparable across tokenizers and text lengths; lower = more expected text).
             The forced path is the greedy tokenisation consistent with the text, so the total is a
             lower bound on the text's probability over all tokenisations.
- `yesno`    P(Yes) / (P(Yes) + P(No)) for the first reply token to a yes/no question on one
             dimension ("Is every sentence of the continuation grammatical English?").
- `pairwise` which of two continuations of the same beginning is better on one dimension, asked in
             both orders (A/B swapped) to cancel the position bias; the preference for the first of
             the two is the mean of P(first) over the two orders, P = P(A) / (P(A) + P(B)).

Only the continuation's first `max_chars` characters (cut at a word boundary) are scored, to keep a
1.5B model on 2 CPU cores within minutes; the cut is recorded with every score.
Every answer is cached (the judge cache, keyed by mode, model, texts and settings) the moment it is
computed, so a killed validation resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from corpora.errors import UserError
from evalsuite.judge.cache import JudgeCache, judgment_key

OFFLINE_MODES = ("loglik", "yesno", "pairwise")
JUDGE_MODES = ("auto", "rubric", *OFFLINE_MODES)
OFFLINE_VERSION = "1"
LN2 = math.log(2.0)

# The packaged judge's default mode: the one that passed the validity check (None: none passed).
# Evidence: results/study/judge_validity/ (gpt-eval --validate --judge-mode loglik,yesno,pairwise).
PACKAGED_DEFAULT_MODE: str | None = "loglik"
PACKAGED_VALIDITY_NOTE = (
    "validity check on 8 TinyStories-subset stories, 4 corruptions at rate 1.0: loglik preferred the clean "
    "story in 32 of 32 pairs (8/8 per corruption, Wilson 95% CI low end 0.68); yesno 16 of 24 and pairwise "
    "6 of 16 failed; results/study/judge_validity/"
)

SYSTEM = "You grade short stories written for small children. Answer with one word."
YESNO_QUESTIONS = {
    "grammar": "Is every sentence of the continuation grammatical English?",
    "consistency": "Does the continuation stay consistent with the beginning and with itself "
                   "(the same characters, events in a sensible order)?",
}
PAIRWISE_QUESTIONS = {
    "grammar": "Which continuation has better grammar?",
    "consistency": "Which continuation is more consistent with the beginning and with itself "
                   "(the same characters, events in a sensible order)?",
}


@dataclass(frozen=True)
class OfflineConfig:
    max_chars: int = 400  # characters of the continuation scored (0 = all)
    top_logprobs: int = 20

    def public_dict(self) -> dict[str, Any]:
        return {"max_chars": self.max_chars, "top_logprobs": self.top_logprobs, "version": OFFLINE_VERSION}


def clip_text(text: str, max_chars: int) -> str:
    """The first `max_chars` characters of `text`, cut back to the last word boundary."""
    if not max_chars or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > 0 else cut


def yesno_messages(beginning: str, continuation: str, dimension: str) -> list[dict[str, str]]:
    question = YESNO_QUESTIONS[dimension]
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Beginning of a story:\n{beginning.strip()}\n\nContinuation written by a "
                                        f"student:\n{continuation.strip()}\n\nQuestion: {question} "
                                        f"Answer Yes or No."}]


def pairwise_messages(beginning: str, first: str, second: str, dimension: str) -> list[dict[str, str]]:
    question = PAIRWISE_QUESTIONS[dimension]
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Beginning of a story:\n{beginning.strip()}\n\nContinuation A:\n"
                                        f"{first.strip()}\n\nContinuation B:\n{second.strip()}\n\nQuestion: "
                                        f"{question} Answer A or B."}]


def option_mass(top: Iterable[tuple[str, float]], options: tuple[str, ...]) -> dict[str, float]:
    """Probability of each option among the first reply token's alternatives (case and spaces folded)."""
    mass = dict.fromkeys(options, 0.0)
    for token, logprob in top:
        key = token.strip().lower()
        for opt in options:
            if key == opt.lower():
                mass[opt] += math.exp(logprob)
    return mass


@contextlib.contextmanager
def offline_scorer(judge_gguf: str | os.PathLike | None, *, use_packaged: bool = True, max_chars: int = 400,
                   cache: str | os.PathLike | None = None, max_prompt_chars: int = 4000,
                   progress: bool = False) -> Iterator[OfflineScorer]:
    """The local judge loaded in-process, with its cache open, for the length of a `with` block."""
    from corpora.paths import cache_dir
    from evalsuite.judge.local_model import embedded_judge

    embedded = embedded_judge(judge_gguf, max_prompt_chars=max_prompt_chars, max_tokens=max_chars,
                              use_packaged=use_packaged, progress=progress)
    backend = embedded.backend
    try:
        if not hasattr(backend, "forced_logprobs"):
            raise UserError("the offline judge modes need xllamacpp: pip install -e '.[judge]'")
        model_id = f"{backend.model_name}@{str(embedded.info.get('sha256', ''))[:16]}"
        with JudgeCache(Path(cache) if cache else cache_dir() / "judge_cache.sqlite") as store:
            scorer = OfflineScorer(backend, store, model_id, OfflineConfig(max_chars=max_chars))
            scorer.info = embedded.info
            yield scorer
    finally:
        if hasattr(backend, "close"):
            backend.close()


class OfflineScorer:
    """Scores texts with a backend that offers `forced_logprobs` and `next_token_logprobs`
    (local_model.XLlamaCppBackend); every score goes through the judge cache."""

    def __init__(self, backend: Any, cache: JudgeCache, model_id: str, config: OfflineConfig | None = None):
        self.backend = backend
        self.cache = cache
        self.model_id = model_id
        self.config = config or OfflineConfig()
        self.n_computed = 0
        self.n_cached = 0
        self.info: dict[str, Any] = {}

    def _cached(self, kind: str, prompt: str, completion: str, params: dict[str, Any],
                compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        sampling = {**params, **self.config.public_dict()}
        key = judgment_key(rubric_id=f"offline:{kind}", rubric_version=OFFLINE_VERSION, judge_model=self.model_id,
                           base_url="embedded", prompt=prompt, completion=completion, sampling=sampling,
                           repeat_index=0)
        hit = self.cache.get(key)
        if hit is not None and hit.status == "ok":
            self.n_cached += 1
            return hit.row["scores"]
        started = _now()
        t0 = time.monotonic()
        scores = compute()
        scores["elapsed_s"] = round(time.monotonic() - t0, 3)
        self.n_computed += 1
        self.cache.put({
            "key": key, "rubric_id": f"offline:{kind}", "rubric_version": OFFLINE_VERSION, "judge_model": self.model_id,
            "base_url": "embedded", "prompt": prompt, "completion": completion, "sampling": sampling,
            "repeat_index": 0, "status": "ok", "scores": scores, "logprob_scores": None, "reply_text": None,
            "request": {"kind": kind, **params}, "response": None, "attempts": [], "error": None, "n_requests": 1,
            "prompt_tokens": 0, "completion_tokens": int(scores.get("n_tokens") or 0),
            "response_model": self.model_id, "started_at": started, "finished_at": _now(),
        })
        return scores

    def loglik(self, beginning: str, continuation: str) -> dict[str, Any]:
        """Bits per character (and mean nats per token) of the continuation's first max_chars."""
        text = clip_text(continuation, self.config.max_chars)
        if not text.strip():
            raise UserError("nothing to score: the continuation is empty")

        def compute() -> dict[str, Any]:
            logprobs = self.backend.forced_logprobs(beginning, text)
            total = float(sum(logprobs))
            return {"bpc": -total / (len(text) * LN2), "mean_logprob": total / len(logprobs),
                    "n_tokens": len(logprobs), "n_chars": len(text)}

        return self._cached("loglik", beginning, text, {}, compute)

    def yes_probability(self, beginning: str, continuation: str, dimension: str) -> dict[str, Any]:
        text = clip_text(continuation, self.config.max_chars)

        def compute() -> dict[str, Any]:
            top = self.backend.next_token_logprobs(yesno_messages(beginning, text, dimension), self.config.top_logprobs)
            mass = option_mass(top, ("Yes", "No"))
            total = mass["Yes"] + mass["No"]
            return {"p_yes": mass["Yes"] / total if total > 0 else math.nan, "mass": total,
                    "n_chars": len(text)}

        return self._cached(f"yesno:{dimension}", beginning, text, {"dimension": dimension}, compute)

    def preference(self, beginning: str, first: str, second: str, dimension: str) -> dict[str, Any]:
        """Preference for `first` over `second` (0..1), the mean over both presentation orders."""
        a, b = clip_text(first, self.config.max_chars), clip_text(second, self.config.max_chars)

        def one_order(x: str, y: str) -> float:
            top = self.backend.next_token_logprobs(pairwise_messages(beginning, x, y, dimension),
                                                   self.config.top_logprobs)
            mass = option_mass(top, ("A", "B"))
            total = mass["A"] + mass["B"]
            return mass["A"] / total if total > 0 else math.nan

        def compute() -> dict[str, Any]:
            first_as_a = one_order(a, b)
            first_as_b = 1.0 - one_order(b, a)
            return {"pref_first": (first_as_a + first_as_b) / 2, "pref_first_as_a": first_as_a,
                    "pref_first_as_b": first_as_b, "position_bias": (first_as_a - first_as_b) / 2,
                    "n_chars": len(a) + len(b)}

        return self._cached(f"pairwise:{dimension}", beginning, json.dumps([a, b]), {"dimension": dimension}, compute)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def score_stories(scorer: OfflineScorer, mode: str, beginnings: list[str], continuations: list[str], *,
                  progress: bool = False) -> Any:
    """Per story scores of a pointwise offline mode: loglik -> judge_bpc; yesno -> p_yes_<dimension>."""
    import pandas as pd

    if mode not in ("loglik", "yesno"):
        raise UserError(f"mode {mode!r} does not score single stories (use loglik or yesno)")
    rows = []
    pairs = list(zip(beginnings, continuations, strict=True))
    if progress:
        from tqdm import tqdm

        pairs = tqdm(pairs, desc=f"local judge ({mode})", unit="story")
    for beginning, continuation in pairs:
        if not continuation.strip():  # an empty story has no likelihood to speak of, and no answer
            rows.append({"judge_bpc": math.nan} if mode == "loglik"
                        else {f"p_yes_{dim}": math.nan for dim in YESNO_QUESTIONS})
        elif mode == "loglik":
            rows.append({"judge_bpc": scorer.loglik(beginning, continuation)["bpc"]})
        else:
            rows.append({f"p_yes_{dim}": scorer.yes_probability(beginning, continuation, dim)["p_yes"]
                         for dim in YESNO_QUESTIONS})
    return pd.DataFrame(rows)

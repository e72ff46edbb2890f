"""Validation against the humans: detectors vs the transcribers' codes, and our MLU vs CLAN's.

Brown's transcribers marked errors with `[* code]` on the word. In the 75 Adam/Eve files the
child tier carries only over-marking codes (inspect with `code_inventory`): +ed (goed), +ed-sup
(ranned), ed-en (broked for broken), +es (haves, gots), +s (mans, deers), +s-sup (mens, feets),
pl-sup, +s-dup (schoolses), +s-pos (mines, manys), +'s (mine's), +est (mostest), plus `[/]` for
exact repetitions, and single instances of `case` (my for I) and `0en`. There are no codes for
article omission, agreement, copula or plural/past omission in these files, so those detectors
cannot be validated here: the table says so rather than invent a number.

Matching is at word level: a hit and a human code match when their character spans in the
utterance overlap. Recall = codes matched by a hit / codes; precision = hits matching a code / hits.
Human coding is not exhaustive (an uncoded "goed" is a true error our detector finds), so the
precision here is a lower bound.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from evalsuite.stats import wilson_ci


@dataclass(frozen=True)
class ValidationTarget:
    name: str
    detector: str
    codes: frozenset[str]
    kinds: frozenset[str] | None = None  # restrict the detector's hits to these sub-kinds


VERB_CODES = frozenset({"+ed", "+ed-sup", "ed-en", "+es"})
NOUN_CODES = frozenset({"+s", "+s-sup", "pl-sup", "+s-dup"})
PRONOUN_S_CODES = frozenset({"+s-pos", "+'s"})
OVER_CODES = VERB_CODES | NOUN_CODES | PRONOUN_S_CODES | {"+er", "+est"}

TARGETS: tuple[ValidationTarget, ...] = (
    ValidationTarget("overregularization (all over-marking codes)", "overregularization", OVER_CODES),
    ValidationTarget(
        "  verbs: +ed +ed-sup ed-en +es", "overregularization", VERB_CODES,
        frozenset({"verb_past", "verb_s", "double_past"}),
    ),
    ValidationTarget(
        "  nouns: +s +s-sup pl-sup +s-dup", "overregularization", NOUN_CODES,
        frozenset({"noun_plural", "double_plural"}),
    ),
    ValidationTarget(
        "  pronoun/quantifier +s: +s-pos +'s", "overregularization", PRONOUN_S_CODES,
        frozenset({"possessive_pronoun_s", "function_word_s"}),
    ),
    ValidationTarget("immediate_repetition ([/])", "immediate_repetition", frozenset({"[/]"})),
    ValidationTarget("pronoun_case ([* case])", "pronoun_case", frozenset({"case"})),
    ValidationTarget("missing_morpheme ([* 0en], 0-words)", "missing_morpheme", frozenset({"0en"})),
)
UNVALIDATED = ("article_omission", "subject_verb_agreement", "missing_copula_aux", "pronoun_antecedent")
MIN_CODES_FOR_ESTIMATE = 10


def code_inventory(frame: pd.DataFrame) -> pd.DataFrame:
    """Count of each human code on the rows given (all `[* ...]` codes and `[/]`)."""
    counts = Counter(a["code"] for anns in frame["annotations"] for a in anns)
    return pd.DataFrame(sorted(counts.items(), key=lambda kv: -kv[1]), columns=["code", "count"])


def _overlap(hit: dict, ann: dict) -> bool:
    if ann["start"] == ann["end"]:  # a zero-width omission mark: the hit must touch that point
        return hit["start"] <= ann["start"] <= hit["end"]
    return hit["start"] < ann["end"] and ann["start"] < hit["end"]


def validate_detectors(units: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Precision/recall per target on child units; second frame lists every disagreement for inspection."""
    rows, disagreements = [], []
    for target in TARGETS:
        n_codes = tp_codes = n_hits = tp_hits = hits_on_other_codes = 0
        for idx, text, anns, hits in zip(
            units.index, units["text"], units["annotations"], units["hits"], strict=True
        ):
            codes = [a for a in anns if a["code"] in target.codes]
            mine = [
                h for h in hits
                if h["error_type"] == target.detector and (target.kinds is None or h["kind"] in target.kinds)
            ]
            for ann in codes:
                n_codes += 1
                if any(_overlap(h, ann) for h in mine):
                    tp_codes += 1
                else:
                    disagreements.append({"target": target.name.strip(), "unit": idx, "text": text,
                                          "missed": "false_negative", "span": ann["word"], "code": ann["code"]})
            others = [a for a in anns if a["code"] not in target.codes and a["code"] != "[/]"]
            for hit in mine:
                n_hits += 1
                if any(_overlap(hit, ann) for ann in codes):
                    tp_hits += 1
                else:
                    if any(_overlap(hit, ann) for ann in others):
                        hits_on_other_codes += 1
                    disagreements.append({"target": target.name.strip(), "unit": idx, "text": text,
                                          "missed": "false_positive", "span": hit["text"], "code": hit["kind"]})
        p_lo, p_hi = wilson_ci(tp_hits, n_hits)
        r_lo, r_hi = wilson_ci(tp_codes, n_codes)
        enough = n_codes >= MIN_CODES_FOR_ESTIMATE
        rows.append({
            "target": target.name.strip(), "detector": target.detector, "codes": " ".join(sorted(target.codes)),
            "n_codes": n_codes, "n_hits": n_hits, "tp_codes": tp_codes, "tp_hits": tp_hits,
            "precision": tp_hits / n_hits if n_hits else float("nan"), "precision_ci_low": p_lo,
            "precision_ci_high": p_hi,
            "recall": tp_codes / n_codes if n_codes else float("nan"), "recall_ci_low": r_lo, "recall_ci_high": r_hi,
            "hits_on_other_codes": hits_on_other_codes,
            "note": "" if enough else f"only {n_codes} human code(s): no reliable estimate",
        })
    for name in UNVALIDATED:
        n_hits = int(sum(any(h["error_type"] == name for h in hits) for hits in units["hits"]))
        rows.append({"target": name, "detector": name, "codes": "", "n_codes": 0, "n_hits": n_hits,
                     "note": "no human codes for this error type in these transcripts: not validated"})
    return pd.DataFrame(rows), pd.DataFrame(disagreements)


def mlu_agreement(units: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per-file MLU from our text parse vs from %mor (morphemes) and vs CHAT words; agreement statistics."""
    usable = units[units["mor_n_items"] > 0]
    per_file = usable.groupby("file").agg(
        child=("child", "first"), age_months=("age_months", "first"), n_utterances=("text", "size"),
        mlu_m_text=("n_morphemes", "mean"), mlu_m_mor=("mor_morphemes", "mean"),
        mlu_w_text=("n_words", "mean"), mlu_w_chat=("clan_words", "mean"),
    ).reset_index()
    per_file["diff_m"] = per_file["mlu_m_text"] - per_file["mlu_m_mor"]
    per_file["diff_w"] = per_file["mlu_w_text"] - per_file["mlu_w_chat"]
    summary = {"n_files": int(len(per_file)), "n_utterances": int(len(usable)),
               "n_utterances_without_mor": int((units["mor_n_items"] == 0).sum())}
    for kind, a, b in (("morphemes", "mlu_m_text", "mlu_m_mor"), ("words", "mlu_w_text", "mlu_w_chat")):
        x, y = per_file[a].to_numpy(), per_file[b].to_numpy()
        r = stats.pearsonr(x, y) if len(x) > 2 else (float("nan"), float("nan"))
        summary[kind] = {
            "pearson_r": float(r[0]), "ccc": _lin_ccc(x, y), "mean_diff": float(np.mean(x - y)),
            "mean_abs_diff": float(np.mean(np.abs(x - y))), "max_abs_diff": float(np.max(np.abs(x - y))),
            "mean_abs_rel_diff": float(np.mean(np.abs(x - y) / y)),
        }
    utt_m = (usable["n_morphemes"] == usable["mor_morphemes"]).mean()
    summary["morphemes"]["utterances_exact"] = float(utt_m)
    summary["morphemes"]["utterances_within_1"] = float(((usable["n_morphemes"] - usable["mor_morphemes"]).abs() <= 1).mean())
    summary["words"]["utterances_exact"] = float((usable["n_words"] == usable["clan_words"]).mean())
    return per_file, summary


def _lin_ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation: agreement on the identity line, not just correlation."""
    if len(x) < 2:
        return float("nan")
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    return float(2 * cov / (x.var() + y.var() + (mx - my) ** 2))

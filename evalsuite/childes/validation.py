"""Validation against the humans: detectors vs the transcribers' codes, and our MLU vs CLAN's.

Brown's transcribers marked errors with `[* code]` on the word. In the 75 Adam/Eve files the
child tier carries only over-marking codes (inspect with `code_inventory`): +ed (goed), +ed-sup
(ranned), ed-en (broked for broken), +es (haves, gots), +s (mans, deers), +s-sup (mens, feets),
pl-sup, +s-dup (schoolses), +s-pos (mines, manys), +'s (mine's), +est (mostest), plus `[/]` for
exact repetitions, and single instances of `case` (my for I) and `0en`. There are no codes for
article omission, agreement, copula or plural/past omission in these files, so those detectors
cannot be validated here: the table says so rather than invent a number.

Other corpora code errors in the newer CHAT style: `[* m:+ed]` (over-regularised past), `[* m:+s]`
(over-regularised plural or 3rd singular), `[* m:+en]`, `[* m:++ed]` (double marking); they count
with the Brown codes of the same kind. Brown was read while the rules were written, so
`validate_by_split` scores Brown ("development") apart from every other corpus ("scoring").
`mines` (a single word that carries a large share of Brown's codes) has a line of its own, and
the over-regularisation line is repeated without it.

Intervals resample whole transcripts (evalsuite.stats.bootstrap_ci with groups = file): codes and
hits cluster within transcripts (one child's favourite form recurs), so a Wilson interval over
codes is too narrow.

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

from evalsuite.stats import bootstrap_ci


@dataclass(frozen=True)
class ValidationTarget:
    name: str
    detector: str
    codes: frozenset[str]
    kinds: frozenset[str] | None = None  # restrict the detector's hits to these sub-kinds
    only_forms: frozenset[str] | None = None  # keep only hits / codes on these word forms
    exclude_forms: frozenset[str] = frozenset()  # leave out hits / codes on these word forms

    def keeps(self, form: str) -> bool:
        form = form.lower()
        return form not in self.exclude_forms and (self.only_forms is None or form in self.only_forms)


VERB_CODES = frozenset({"+ed", "+ed-sup", "ed-en", "+es", "m:+ed", "m:+en", "m:++ed"})
NOUN_CODES = frozenset({"+s", "+s-sup", "pl-sup", "+s-dup", "m:+s", "m:++s", "m:+es"})
MINES = frozenset({"mines", "mine's", "mine 's"})
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
    ValidationTarget("overregularization without mines", "overregularization", OVER_CODES, exclude_forms=MINES),
    ValidationTarget("mines (own line)", "overregularization", PRONOUN_S_CODES, only_forms=MINES),
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


def _ratio(rows: np.ndarray) -> float:
    den = rows[:, 1].sum()
    return float(rows[:, 0].sum() / den) if den else float("nan")


def validate_detectors(
    units: pd.DataFrame, cluster: str = "file", n_boot: int = 1000, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Precision/recall per target on child units, with 95 % CIs from resampling whole `cluster`s
    (transcripts); the second frame lists every disagreement for inspection."""
    rows, disagreements = [], []
    groups = units[cluster].to_numpy() if cluster in units else np.arange(len(units))
    # one row per cluster for the bootstrap: the statistic is a ratio of sums, so a cluster's sums carry all
    # a resample needs (clusters in np.unique order, as bootstrap_ci orders groups)
    # (pd.factorize with sort=True: the same sorted labels and codes as np.unique(groups.astype(str),
    # return_inverse=True), without converting a million file names to a fixed-width numpy string array)
    codes_of_row, labels = pd.factorize(pd.Series(groups, copy=False).astype(str), sort=True)
    # only units with a human code or a hit can count anything: at corpus scale most have neither
    texts, all_anns, all_hits = units["text"].to_numpy(), units["annotations"].to_numpy(), units["hits"].to_numpy()
    index = units.index.to_numpy()
    # which units carry each human code / each detector's hits: a target looks only at the units with one of its
    # codes or a hit of its detector (every other unit adds zeros), in unit order as before
    by_code: dict[str, list[int]] = {}
    by_detector: dict[str, list[int]] = {}
    for i, (anns, hits) in enumerate(zip(all_anns, all_hits, strict=True)):
        if len(anns):
            for code in {a["code"] for a in anns}:
                by_code.setdefault(code, []).append(i)
        if len(hits):
            for detector in {h["error_type"] for h in hits}:
                by_detector.setdefault(detector, []).append(i)
    files = units[cluster].to_numpy() if cluster in units else None
    for target in TARGETS:
        hits_on_other_codes = 0
        candidates = sorted({i for code in target.codes for i in by_code.get(code, ())}
                            | set(by_detector.get(target.detector, ())))
        # tp_hits, n_hits, tp_codes, n_codes of the candidates only (every other unit's row would be zeros)
        per_unit = np.zeros((len(candidates), 4))
        for k, i in enumerate(candidates):
            idx, text, anns, hits = index[i], texts[i], all_anns[i], all_hits[i]
            codes = [a for a in anns if a["code"] in target.codes and target.keeps(a["word"])]
            mine = [
                h for h in hits
                if h["error_type"] == target.detector and (target.kinds is None or h["kind"] in target.kinds)
                and target.keeps(h["text"])
            ]
            for ann in codes:
                per_unit[k, 3] += 1
                if any(_overlap(h, ann) for h in mine):
                    per_unit[k, 2] += 1
                else:
                    disagreements.append({"target": target.name.strip(), "unit": idx, "text": text,
                                          "missed": "false_negative", "span": ann["word"], "code": ann["code"]})
            others = [a for a in anns if a["code"] not in target.codes and a["code"] != "[/]"]
            for hit in mine:
                per_unit[k, 1] += 1
                if any(_overlap(hit, ann) for ann in codes):
                    per_unit[k, 0] += 1
                else:
                    on_other = any(_overlap(hit, ann) for ann in others)
                    hits_on_other_codes += on_other
                    disagreements.append({"target": target.name.strip(), "unit": idx, "text": text,
                                          "missed": "false_positive", "span": hit["text"], "code": hit["kind"],
                                          "file": files[i] if files is not None else None,
                                          "on_other_code": on_other})
        per_cluster = np.zeros((len(labels), 4))
        np.add.at(per_cluster, codes_of_row[np.asarray(candidates, dtype=np.intp)], per_unit)
        tp_hits, n_hits, tp_codes, n_codes = (int(v) for v in per_unit.sum(axis=0))
        # one row per cluster: resampling rows is resampling clusters (the same draws as groups= would make,
        # without concatenating thousands of one-row groups per resample)
        prec = bootstrap_ci(per_cluster[:, :2], _ratio, n_boot=n_boot, seed=seed)
        rec = bootstrap_ci(per_cluster[:, 2:], _ratio, n_boot=n_boot, seed=seed)
        enough = n_codes >= MIN_CODES_FOR_ESTIMATE
        rows.append({
            "target": target.name.strip(), "detector": target.detector, "codes": " ".join(sorted(target.codes)),
            "n_codes": n_codes, "n_hits": n_hits, "tp_codes": tp_codes, "tp_hits": tp_hits,
            "precision": tp_hits / n_hits if n_hits else float("nan"), "precision_ci_low": prec.ci_low,
            "precision_ci_high": prec.ci_high,
            "recall": tp_codes / n_codes if n_codes else float("nan"), "recall_ci_low": rec.ci_low,
            "recall_ci_high": rec.ci_high, "n_transcripts": len(labels),
            "ci_method": "cluster bootstrap over transcripts (evalsuite.stats.bootstrap_ci)",
            "hits_on_other_codes": hits_on_other_codes,
            # a hit on another code (often a bare [*] of unspecified type) is a coded error all the same
            "precision_any_code": (tp_hits + hits_on_other_codes) / n_hits if n_hits else float("nan"),
            "note": "" if enough else f"only {n_codes} human code(s): no reliable estimate",
        })
    for name in UNVALIDATED:
        has = f"has_{name}"  # the unit flags iter_detect / _assemble_units set: a unit with >= 1 hit of the type
        n_hits = int(units[has].sum()) if has in units else int(sum(any(h["error_type"] == name for h in hits)
                                                                    for hits in units["hits"]))
        rows.append({"target": name, "detector": name, "codes": "", "n_codes": 0, "n_hits": n_hits,
                     "note": "no human codes for this error type in these transcripts: not validated"})
    return pd.DataFrame(rows), pd.DataFrame(disagreements)


DEVELOPMENT_CORPORA = ("Brown",)


def validate_by_split(
    units: pd.DataFrame, development: tuple[str, ...] = DEVELOPMENT_CORPORA, n_boot: int = 1000, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """validate_detectors on the development corpora (read while writing the rules) and, apart, on
    every other corpus (the scoring set); a `split` column says which."""
    corpus = units["corpus"].fillna("").astype(str) if "corpus" in units else pd.Series("", index=units.index)
    files = units["file"].astype(str)
    top = {f: f.split("/")[0] for f in files.unique()}  # per distinct file, not per unit
    dev_mask = corpus.isin(development) | files.map(top).isin(development)
    # only the columns validate_detectors reads are copied into each split (not the whole unit frame)
    units = units[[c for c in ("file", "text", "annotations", "hits", *(f"has_{n}" for n in UNVALIDATED)) if c in units]]
    tables, disagreements = [], []
    for split, mask in (("development", dev_mask), ("scoring", ~dev_mask)):
        if not mask.any():
            continue
        table, dis = validate_detectors(units[mask], n_boot=n_boot, seed=seed)
        tables.append(table.assign(split=split, corpora=", ".join(sorted(corpus[mask].unique()))))
        disagreements.append(dis.assign(split=split))
    return pd.concat(tables, ignore_index=True), pd.concat(disagreements, ignore_index=True)


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


# ----------------------------------------------------------------------------- coding gap

# The committed sample: sample_uncoded_hits(disagreements, "overregularization (all over-marking codes)",
# "scoring", n=40, seed=0) after validate_by_split on Brown/Adam+Eve (development) and the TalkBank zips
# Braunwald, Lara, MacWhinney (scoring), parsed with CompareConfig() defaults; each row judged by hand
# (issue 13): is the hit a real over-regularisation / over-marking the transcribers left uncoded?
HANDCHECK_FILE = "coding_gap_handcheck.tsv"
JUDGEMENTS = ("error", "not_error", "unclear")


def sample_uncoded_hits(disagreements: pd.DataFrame, target: str, split: str = "scoring", n: int = 40,
                        seed: int = 0) -> pd.DataFrame:
    """A random sample of detector hits with no human code on their word (no target code, and no other
    code such as a bare [*]) for a hand check: what the coding gap is estimated from."""
    fp = disagreements[(disagreements["missed"] == "false_positive") & (disagreements["target"] == target)]
    if "on_other_code" in fp:
        fp = fp[~fp["on_other_code"].fillna(False).astype(bool)]  # only hits with no code at all
    if "split" in fp:
        fp = fp[fp["split"] == split]
    return fp.sample(n=min(n, len(fp)), random_state=seed).reset_index(drop=True) if len(fp) else fp


def load_handcheck(path=None) -> pd.DataFrame:
    """The committed hand-check table (evalsuite/childes/data/coding_gap_handcheck.tsv): one row per
    sampled uncoded hit with the checker's `judgement` (error / not_error / unclear) and `reason`."""
    from corpora.errors import UserError
    from evalsuite.childes.lexicon import DATA_DIR

    path = path or DATA_DIR / HANDCHECK_FILE
    table = pd.read_csv(path, sep="\t", keep_default_na=False)
    bad = sorted(set(table["judgement"]) - set(JUDGEMENTS))
    if bad:
        raise UserError(f"{path}: unknown judgement(s) {', '.join(bad)} (use {', '.join(JUDGEMENTS)})")
    return table


def coding_gap(handcheck: pd.DataFrame, row: pd.Series | dict) -> dict:
    """Share of hits with no code that are real errors (Wilson 95 % CI over the checked sample,
    'unclear' left out) and the precision it implies: (tp + hits on another code + share x hits with
    no code) / hits. A hit on another code (mostly a bare [*]) counts as a coded error; the interval
    carries the sample's uncertainty only (not the resampling of transcripts)."""
    from evalsuite.stats import wilson_ci

    judged = handcheck[handcheck["judgement"] != "unclear"]
    k, n = int((judged["judgement"] == "error").sum()), len(judged)
    share = k / n if n else float("nan")
    lo, hi = wilson_ci(k, n)
    tp, hits = float(row["tp_hits"]), float(row["n_hits"])
    other = float(row.get("hits_on_other_codes", 0) or 0)
    no_code = hits - tp - other

    def implied(s: float) -> float:
        return (tp + other + s * no_code) / hits if hits else float("nan")

    return {"n_checked": len(handcheck), "n_judged": n, "n_real_errors": k, "n_unclear": len(handcheck) - n,
            "share_real": share, "share_ci_low": lo, "share_ci_high": hi, "n_hits_no_code": int(no_code),
            "n_hits_other_code": int(other), "precision_coded": tp / hits if hits else float("nan"),
            "precision_with_gap": implied(share), "precision_with_gap_ci_low": implied(lo),
            "precision_with_gap_ci_high": implied(hi)}

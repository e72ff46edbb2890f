"""The age model: transcript features -> child age in months, fit on many children, tested on unseen ones.

Features come from `evalsuite.childes.age_features.document_features`: MLU in morphemes, over-
regularisations per opportunity, age of acquisition of the words used (all words, content words, share
of late words), NDW in 100 words, the 90th percentile of utterance length, question and one-word
rates, and from %mor article omission per obligatory context, inflection rates (plural, past,
3rd singular, progressive), auxiliaries, verbs and subordinating conjunctions per utterance; measures
that keep growing after 4 years (MATTR over 100-word windows, the spread of utterance length, text
subordinators, and from %mor relatives, complementisers, infinitival to and multi-verb utterances).

The model is one of the pre-declared SPECS: a ridge regression on standardised inputs (base, full or rich
inputs, age or log age as the target, squares of MLU-m / NDW / AoA), or gradient boosting with fixed
GBM_PARAMS whose trees are exported as plain numbers (`export_gbm`) and applied by a small numpy
evaluator (`tree_ensemble_predict`, equal to sklearn's predict). Which spec, and ridge's alpha, are
chosen by an inner by-child CV on the training part only (`select_spec`, `fit_linear`): an outer test
fold never chooses anything. Rates that are NaN (no irregular context, no %mor) are filled with the
training median (overreg_rate also gets a missing flag); inputs are clipped to the training range
(central 99 %) before the dot product, so no input extrapolates.

Children: `real_child_id` derives the child from each corpus's naming rules (not the folder: the same
Bates child is in four task folders, a Champaign folder holds 44 children); every CV below groups by it.

Validation, on the same folds for every method:
- by child: GroupKFold over real children (no child in both train and test),
- by corpus: leave one corpus out,
against two baselines: a linear fit of age on MLU-m alone (fit on the same training folds), and
the Miller & Chapman (1981) MLU-for-age norm inverted (no fitting), and a negative control: the
training fold's mean age for every test transcript (`constant`).

Design choices fixed before fitting (AgeFitConfig): transcripts of children aged 18-60 months with at
least 50 analysable utterances and at least 100 words (NDW needs them); no corpus or child is dropped
otherwise.

Prediction intervals: split-conformal by child: the 95 % quantile of the absolute out-of-fold
residuals of a by-child CV on the training children, added either side (`interval_halfwidth`; a ridge
refits GroupKFold(n_splits), the trees reuse the 5 inner folds of the selection).
`in_range`: a document whose core features (RANGE_FEATURES: FEATURES, utterance-length spread, MATTR) lie
outside the training transcripts' range (the central 99 % of each feature, RANGE_QUANTILES), or with too few utterances, or whose point prediction
falls outside the training ages, gets no age: the model never returns an extrapolated number.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from corpora.errors import UserError
from evalsuite.childes.age_features import FEATURES, MOR_FEATURES, TEXT_FEATURES

SCHEMA = "evalsuite.childes.age_model/4"
# A saved ridge model of the previous schema (no `kind`, no trees) still loads, as a ridge model.
OLD_RIDGE_SCHEMAS = frozenset({"evalsuite.childes.age_model/3"})
MODEL_FILE = "age_model.json"
CHILDREN_FILE = "training_children.csv"
# The training range of a feature is its central 99 % over the training transcripts: one odd
# transcript (an MLU of 15 in a monologue) must not stretch the range in which ages are given.
RANGE_QUANTILES = (0.005, 0.995)
# Range-checked features (in_range): the core FEATURES, and the two growth measures the trees lean on most
# (utterance-length spread and MATTR; also computed on model text), so that a document beyond the training
# children on those gets no age either. A model saved without them checks the core FEATURES only.
RANGE_FEATURES: tuple[str, ...] = (*FEATURES, "len_sd_w", "mattr_100")

# Miller, J. F. & Chapman, R. S. (1981). The relation between age and mean length of utterance in
# morphemes. Journal of Speech and Hearing Research 24(2), 154-161, doi:10.1044/jshr.2402.154
# (123 children aged 17-59 months, r = .88; "MLU increased at an average rate of 1.2 morphemes per
# year"). Their regression of MLU on age, as quoted in clinical use of the norms:
# MLU = -0.548 + 0.103 * age_months; the baseline inverts it: age = (MLU + 0.548) / 0.103.
MILLER_CHAPMAN_INTERCEPT = -0.548
MILLER_CHAPMAN_SLOPE = 0.103
MILLER_CHAPMAN_AGES = (17.0, 59.0)


def miller_chapman_age(mlu_m: np.ndarray | float) -> np.ndarray:
    """Age in months for an MLU in morphemes from Miller & Chapman's (1981) norm, inverted."""
    return (np.asarray(mlu_m, dtype=float) - MILLER_CHAPMAN_INTERCEPT) / MILLER_CHAPMAN_SLOPE


@dataclass
class AgeFitConfig:
    """What the model is fit on; unknown keys are an error (`from_dict`)."""

    min_utterances: int = 50
    min_age_months: float = 18.0
    max_age_months: float = 60.0
    n_splits: int = 10
    coverage: float = 0.95
    n_boot: int = 1000
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict) -> AgeFitConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown age-model setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        config = cls(**values)
        if config.min_utterances < 1 or config.n_splits < 2 or not 0 < config.coverage < 1:
            raise UserError("min_utterances >= 1, n_splits >= 2 and 0 < coverage < 1 are required")
        if config.min_age_months >= config.max_age_months:
            raise UserError("min_age_months must be below max_age_months")
        return config


def corpus_of(frame: pd.DataFrame) -> pd.Series:
    """The corpus of each transcript: the @ID corpus field, else the first folder of its path."""
    from_path = frame["file"].astype(str).str.split("/").str[0] if "file" in frame else pd.Series("", index=frame.index)
    if "corpus" not in frame:
        return from_path
    corpus = frame["corpus"].fillna("").astype(str)
    return corpus.where(corpus != "", from_path)


# ----------------------------------------------------------------------------- child identity
#
# A by-child cross-validation is only by child if its groups are children. The folder is not: Bates keeps
# the same children in Free20/Free28/Snack28/Story28 (amy.cha, amy28.cha, amyst.cha), Demetras2 splits
# each child into father/ and mother/ folders, Braunwald and Lara put one child's diary in a subfolder,
# and cross-sectional corpora hold many children in one folder (Champaign/24P/57B.cha is child 57B, who
# is also in 21P ... 36X). The rules below were read off each corpus's file names and @Participants / @ID
# headers in the shared TalkBank zips (childes/talkbank/CATALOGUE.tsv lists the folders). Where a rule
# cannot tell two children apart it merges them (McMillan's triplets, MacWhinney's whole corpus): a merged
# group is conservative for cross-validation (never the same child on both sides), a split one leaks.

# One child per corpus: Braunwald (Laura, incl. 0diary/), Demetras1, Lara (incl. Lara-Diary/), MacWhinney
# (CHI is always Ross; Mark is MAR), Nelson (Emily), Peters (Seth), Thomas, Feldman; McMillan's three files
# are triplets whose CHI differs and cannot be told apart: merged.
ONE_CHILD_CORPORA = frozenset({"Braunwald", "Demetras1", "Lara", "MacWhinney", "Nelson", "Peters", "Thomas",
                               "Feldman", "McMillan"})
# The child is a folder: its depth below the corpus folder (Brown/Adam/..., Bernstein/Children/Alice/...,
# Demetras2/Jimmy/father/..., Bohannon/Nat/elliott.cha: the files are named after the visitors).
FOLDER_CHILD_CORPORA = {"Belfast": 1, "Bloom": 1, "Bohannon": 1, "Brent": 1, "Brown": 1, "Demetras2": 1,
                        "Higginson": 1, "Manchester": 1, "McCune": 1, "Post": 1, "Providence": 1, "Sekali": 1,
                        "Bernstein": 2}
# The child is read off the file stem (regex group `c`), across all folders of the corpus unless the corpus
# is in STUDY_SCOPED (then within its first folder, a separate study).
STEM_CHILD_RULES: dict[str, str] = {
    "Bates": r"^(?P<c>[a-z]+?)(?:28|_snack)?$",     # amy, amy28, ed_snack; Story28's 'st' suffix below
    "HSLLD": r"^(?P<c>[a-z]{3})",                   # nedmd7: child ned, task md, visit 7 (HV1..HV7)
    "Garvey": r"^(?P<c>[a-z]{3})",                  # halpat: CHI is hal (the other child is PAT)
    "VanHouten": r"^(?P<c>[a-z]+?)[flt]$",          # marshf / marshl / marsht: free play, lunch, teaching
    "VanKleeck": r"^(?P<c>[a-z]+)",                 # nikki1a, nikki2b
    "Morisset": r"^(?P<c>\d+)",                     # 101m30t, 101m36: child 101 at 30 and 36 months
    "Gelman": r"^(?P<c>\d+)",                       # 2014-IndDiff/01C-P1, 01P-R2: child 01 of that study
    "Tardif": r"^(?P<c>[a-z]\d+)",                  # e26book
    "TD": r"-(?P<c>[a-z]+)$",                       # nh36f-lorraine
    "Rollins": r"^(?P<c>[a-z]+)",                   # af06, af12: child af at 6 and 12 months
    "Tommerdahl": r"^(?P<c>[a-z]+)",                # megan1, ajc2
    "Howe": r"^(?P<c>[a-z]+)",                      # faye1, faye2
    "Edinburgh": r"^(?P<c>[a-z]+)",                 # alistair1507
    "Champaign": r"^(?P<c>.+)$", "NewEngland": r"^(?P<c>.+)$", "NewmanRatner": r"^(?P<c>.+)$",
    "OCSC": r"^(?P<c>.+)$", "Hall": r"^(?P<c>.+)$", "Gleason": r"^(?P<c>.+)$", "Warren": r"^(?P<c>.+)$",
    "Bliss": r"^(?P<c>.+)$", "KellyQuigley": r"^(?P<c>.+)$", "Nuffield": r"^(?P<c>.+)$",
    "Gathercole": r"^(?P<c>.+)$", "Gathburn": r"^(?P<c>.+)$",
}
STUDY_SCOPED = frozenset({"Gelman", "KellyQuigley"})
_GENERIC_CHILD = frozenset({"", "target_child", "child", "chi"})
_DATE_STEM = re.compile(r"^\d{4,8}[a-z]?$", re.I)


def _inside_corpus(file: str, corpus: str) -> list[str]:
    """The path parts of `file` below its corpus folder (the whole relative path when none is named so)."""
    parts = [p for p in Path(str(file).replace("\\", "/")).parts if p not in ("/", "")]
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == corpus and i < len(parts) - 1:
            return parts[i + 1:]
    return parts[1:] if len(parts) > 1 and parts[0] == corpus else parts


def real_child_id(file: str, corpus: str, name: str = "") -> str:
    """`corpus/child` of one transcript: by the corpus's rule (ONE_CHILD_CORPORA, FOLDER_CHILD_CORPORA,
    STEM_CHILD_RULES); for a corpus without a rule, the @Participants name of CHI when it is a name
    (not Target_Child, not the folder), else the folder holding the file (merging rather than splitting),
    else (a file in the corpus folder itself) the corpus for date-named files, else the file stem without
    trailing digits. Lower case, except a folder name keeps its spelling."""
    corpus = str(corpus or Path(str(file)).parts[0])
    name = str(name or "")
    inner = _inside_corpus(file, corpus)
    folders, stem = inner[:-1], Path(inner[-1]).stem if inner else ""
    if corpus in ONE_CHILD_CORPORA:
        return f"{corpus}/{corpus}"
    if corpus in FOLDER_CHILD_CORPORA:
        if len(folders) >= FOLDER_CHILD_CORPORA[corpus]:
            return f"{corpus}/{folders[FOLDER_CHILD_CORPORA[corpus] - 1]}"
        if name and name.lower() not in _GENERIC_CHILD:  # the child's folder given as input: its CHI name
            return f"{corpus}/{name}"
    rule = STEM_CHILD_RULES.get(corpus)
    if rule is not None:
        low = stem.lower()
        if corpus == "Bates" and folders and folders[-1].lower().startswith("story") and low.endswith("st"):
            low = low[:-2]
        m = re.search(rule, low)
        child = m.group("c") if m else low
        scope = f"{folders[0]}/" if corpus in STUDY_SCOPED and folders else ""
        return f"{corpus}/{scope}{child}"
    parent = folders[-1] if folders else ""
    if name.lower() not in _GENERIC_CHILD and name != parent:
        return f"{corpus}/{name.lower()}"
    if parent:  # unknown layout: the folder (merges the children of a cross-sectional folder: conservative)
        return f"{corpus}/{parent}"
    if _DATE_STEM.match(stem):  # date-named files in the corpus folder: one child's diary
        return f"{corpus}/{corpus}"
    return f"{corpus}/{(stem.rstrip('0123456789_-') or stem).lower()}"


def child_id(frame: pd.DataFrame) -> pd.Series:
    """A child's identity across transcripts (`real_child_id` of each row's file, corpus and child name)."""
    corpus = corpus_of(frame)
    names = frame["child"] if "child" in frame else pd.Series("", index=frame.index)
    files = frame["file"] if "file" in frame else pd.Series("", index=frame.index)
    if not files.astype(str).str.len().any():  # no file paths (synthetic tables): corpus + child name
        return corpus + "/" + names.astype(str)
    return pd.Series([real_child_id(f, c, n) for f, c, n in zip(files, corpus, names, strict=True)],
                     index=frame.index, dtype=object)


def training_table(docs: pd.DataFrame, config: AgeFitConfig) -> pd.DataFrame:
    """Transcripts usable for fitting: an age in range, enough utterances, an MLU and an AoA."""
    need = {"age_months", "child", "n_utterances", *FEATURES}
    missing = need - set(docs.columns)
    if missing:
        raise UserError(f"transcript features lack column(s): {', '.join(sorted(missing))}")
    ok = (docs["age_months"].between(config.min_age_months, config.max_age_months)
          & (docs["n_utterances"] >= config.min_utterances) & docs["mlu_m"].notna() & docs["mean_aoa"].notna() & docs["ndw_100"].notna())
    table = docs[ok].copy()
    table["child_id"] = child_id(table)
    if "corpus_key" not in table:
        table["corpus_key"] = corpus_of(table)
    return table.reset_index(drop=True)


# Raw document features a model may use (age_features.document_features computes them); derived inputs
# (log_mlu_m, the missing flags) are made by _design. Rates that are NaN (no irregular context, no %mor)
# are filled with the training median and flagged.
RATE_FEATURES: tuple[str, ...] = ("overreg_rate", *MOR_FEATURES)


@dataclass(frozen=True)
class ModelSpec:
    """One pre-declared candidate: its inputs and whether it predicts age or log age (months)."""

    name: str
    inputs: tuple[str, ...]
    target: str = "age"  # "age" or "log_age"
    kind: str = "ridge"  # "ridge" (alpha chosen inside) or "gbm" (GBM_PARAMS, fixed a priori)


BASE_INPUTS = ("mlu_m", "log_mlu_m", "mean_aoa", "ndw_100", "overreg_rate", "overreg_missing")
FULL_INPUTS = (*BASE_INPUTS, "content_aoa", "late_word_rate", "len_p90_m", "question_rate", "one_word_rate",
               "art_omission_rate", "plural_rate", "past_rate", "s3_rate", "prog_rate", "aux_per_utt", "verbs_per_utt",
               "sconj_per_utt")
# squares of the three strongest graded measures: a bend in the age curve without a black box
QUAD_INPUTS = (*FULL_INPUTS, "mlu_m_sq", "ndw_100_sq", "mean_aoa_sq")
# measures that keep growing after 4 years (issue 13): vocabulary diversity over the whole transcript
# (MATTR), spread of utterance length, subordinators in the text, and clause markers on %mor (relatives,
# complementisers, infinitival to, utterances with two or more verbs)
GROWTH_INPUTS = (*TEXT_FEATURES, "rel_per_utt", "comp_per_utt", "inf_per_utt", "multi_verb_rate")
RICH_INPUTS = (*QUAD_INPUTS, *GROWTH_INPUTS)
# the trees need no log or squares; mor_missing tells them which documents had their %mor rates filled
GBM_INPUTS = (*(i for i in FULL_INPUTS if i != "log_mlu_m"), *GROWTH_INPUTS, "mor_missing")
# Gradient boosting (sklearn GradientBoostingRegressor, squared error), fixed before any CV: 300 trees of
# depth 3, learning rate 0.05, >= 40 transcripts per leaf, each tree on half the transcripts and each split
# on half the inputs (stochastic boosting, Friedman 2002; it also halves the fit time). Not tuned.
GBM_PARAMS: dict[str, float | int] = {"n_estimators": 300, "max_depth": 3, "learning_rate": 0.05,
                                      "min_samples_leaf": 40, "subsample": 0.5, "max_features": 0.5}
# The candidates, declared before any cross-validation; which one a fit uses is chosen by an inner
# by-child CV on its training part only (select_spec), so an outer test fold never picks it.
SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("base_age", BASE_INPUTS, "age"),
    ModelSpec("base_log_age", BASE_INPUTS, "log_age"),
    ModelSpec("full_age", FULL_INPUTS, "age"),
    ModelSpec("full_log_age", FULL_INPUTS, "log_age"),
    ModelSpec("full_quad_log_age", QUAD_INPUTS, "log_age"),
    # added for issue 13 (declared before their CV): the growth measures, in a ridge and in boosted trees
    ModelSpec("rich_quad_log_age", RICH_INPUTS, "log_age"),
    ModelSpec("gbm_log_age", GBM_INPUTS, "log_age", "gbm"),
)
INPUTS = tuple(dict.fromkeys(i for spec in SPECS for i in spec.inputs))  # every input any spec uses
# the raw document features behind INPUTS that are not range-checked FEATURES (written beside predictions)
MODEL_RAW_FEATURES: tuple[str, ...] = ("content_aoa", "late_word_rate", "len_p90_m", "question_rate", "one_word_rate",
                                        *TEXT_FEATURES, *MOR_FEATURES)
ALPHAS = np.logspace(-2, 3, 11)
INNER_SPLITS = 5


def _design(docs: pd.DataFrame, inputs: tuple[str, ...], fill: dict[str, float]) -> np.ndarray:
    """The input matrix: raw features, log MLU-m, rates with NaN filled by `fill`, missing flags."""
    cols = []
    for name in inputs:
        if name == "log_mlu_m":
            cols.append(np.log(docs["mlu_m"].to_numpy(dtype=float)))
        elif name == "overreg_missing":
            cols.append(docs["overreg_rate"].isna().to_numpy(dtype=float))
        elif name == "mor_missing":
            cols.append(docs["art_omission_rate"].isna().to_numpy(dtype=float) if "art_omission_rate" in docs
                        else np.ones(len(docs)))
        else:
            base = name[:-3] if name.endswith("_sq") else name
            values = docs[base].to_numpy(dtype=float) if base in docs else np.full(len(docs), np.nan)
            values = np.where(np.isnan(values), fill.get(base, 0.0), values)
            cols.append(values ** 2 if name.endswith("_sq") else values)
    return np.column_stack(cols) if cols else np.zeros((len(docs), 0))


def _fills(train: pd.DataFrame) -> dict[str, float]:
    out = {}
    for name in (*RATE_FEATURES, "content_aoa", "late_word_rate", "len_p90_m", "question_rate", "one_word_rate",
                 *TEXT_FEATURES):
        values = train[name].to_numpy(dtype=float) if name in train else np.array([np.nan])
        out[name] = float(np.nanmedian(values)) if np.isfinite(values).any() else 0.0
    return out


def _to_target(age: np.ndarray, target: str) -> np.ndarray:
    return np.log(age) if target == "log_age" else age


def _from_target(value: np.ndarray, target: str) -> np.ndarray:
    return np.exp(value) if target == "log_age" else value


def export_gbm(model) -> dict:
    """A fitted sklearn GradientBoostingRegressor (squared error, one output) as plain numbers: the initial
    prediction, the learning rate and, per tree, the public arrays of `estimators_[i, 0].tree_`
    (children_left/right, feature, threshold, leaf value). `tree_ensemble_predict` applies them."""
    init = float(np.asarray(model.init_.constant_, dtype=float).ravel()[0])
    trees = []
    for est in model.estimators_[:, 0]:
        t = est.tree_
        trees.append({"children_left": t.children_left.astype(int).tolist(),
                      "children_right": t.children_right.astype(int).tolist(),
                      "feature": t.feature.astype(int).tolist(), "threshold": t.threshold.astype(float).tolist(),
                      "value": t.value[:, 0, 0].astype(float).tolist()})
    return {"init": init, "learning_rate": float(model.learning_rate), "trees": trees}


def tree_ensemble_predict(ensemble: dict, x: np.ndarray) -> np.ndarray:
    """The raw prediction of an exported ensemble (`export_gbm`): init + learning_rate * sum of the leaf
    values. Inputs are cast to float32 and a row goes left when x[feature] <= threshold, as sklearn's trees
    do, so the result equals sklearn's `predict` (tests/test_childes_age_gbm.py)."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    rows = np.arange(n)
    out = np.full(n, float(ensemble["init"]))
    rate = float(ensemble["learning_rate"])
    for tree in ensemble["trees"]:
        left, right = np.asarray(tree["children_left"]), np.asarray(tree["children_right"])
        feature, threshold = np.asarray(tree["feature"]), np.asarray(tree["threshold"], dtype=float)
        value = np.asarray(tree["value"], dtype=float)
        node = np.zeros(n, dtype=np.int64)
        while True:
            inner = left[node] != -1
            if not inner.any():
                break
            go_left = x[rows, np.where(inner, feature[node], 0)] <= threshold[node]
            node = np.where(inner, np.where(go_left, left[node], right[node]), node)
        out += rate * value[node]
    return out


@dataclass
class AgeModel:
    """A fitted model in plain numbers (saved as JSON, no pickle). kind "ridge": fill, clip to the training
    range, standardise, dot, add; kind "gbm": fill, then the exported trees (`trees`, applied by
    `tree_ensemble_predict`); exp when the target is log age. Ridge-only fields are empty for a gbm."""

    inputs: tuple[str, ...]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    alpha: float
    fill: dict[str, float]
    clip_low: list[float]
    clip_high: list[float]
    feature_min: dict[str, float]
    feature_max: dict[str, float]
    age_range: tuple[float, float]
    min_utterances: int
    target: str = "age"
    spec: str = ""
    interval_halfwidth: float = math.nan
    coverage: float = 0.95
    training_children: list[str] = field(default_factory=list)
    n_transcripts: int = 0
    extra: dict = field(default_factory=dict)
    kind: str = "ridge"
    trees: dict = field(default_factory=dict)
    importance: list[float] = field(default_factory=list)

    def predict_point(self, docs: pd.DataFrame) -> np.ndarray:
        if self.kind == "gbm":
            return _from_target(tree_ensemble_predict(self.trees, _design(docs, self.inputs, self.fill)), self.target)
        x = np.clip(_design(docs, self.inputs, self.fill), self.clip_low, self.clip_high)
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return _from_target(z @ np.asarray(self.coef) + self.intercept, self.target)

    def outside(self, docs: pd.DataFrame) -> list[str]:
        """Per document: ';'-joined reasons it gets no age ('' = in range)."""
        reasons = []
        for _, row in docs.iterrows():
            why = [f"{f} {row[f]:.3g} outside [{self.feature_min[f]:.3g}, {self.feature_max[f]:.3g}]"
                   for f in self.feature_min if f in row and row[f] == row[f]
                   and not self.feature_min[f] <= row[f] <= self.feature_max[f]]
            if row["mlu_m"] != row["mlu_m"] or row["mean_aoa"] != row["mean_aoa"]:
                why.append("no MLU or no rated word")
            if row["ndw_100"] != row["ndw_100"]:
                why.append("fewer than 100 words")
            if row["n_utterances"] < self.min_utterances:
                why.append(f"{int(row['n_utterances'])} utterances < {self.min_utterances}")
            reasons.append("; ".join(why))
        return reasons

    def predict(self, docs: pd.DataFrame) -> pd.DataFrame:
        """predicted_age_months, ci_low, ci_high, in_range, out_of_range_reason; no number when out of range."""
        reasons = self.outside(docs)
        ok = np.array([r == "" for r in reasons], dtype=bool)
        point = np.full(len(docs), np.nan)
        if ok.any():
            point[ok] = self.predict_point(docs[ok])
        lo_age, hi_age = self.age_range
        for i in np.flatnonzero(ok):
            if not lo_age <= point[i] <= hi_age:
                reasons[i] = f"prediction {point[i]:.1f} outside the training ages [{lo_age:.1f}, {hi_age:.1f}]"
                ok[i] = False
        point[~ok] = np.nan
        h = self.interval_halfwidth
        return pd.DataFrame({
            "predicted_age_months": point, "ci_low": point - h, "ci_high": point + h, "in_range": ok,
            "out_of_range_reason": reasons,
        }, index=docs.index)

    def coefficients(self) -> pd.DataFrame:
        if self.kind == "gbm":  # no coefficients: each input's share of the trees' squared-error reduction
            return pd.DataFrame({"input": list(self.inputs), "coefficient": self.importance,
                                 "unit": "share_of_impurity_decrease"})
        unit = "log_months_per_sd" if self.target == "log_age" else "months_per_sd"
        return pd.DataFrame({"input": list(self.inputs), "coefficient": self.coef, "unit": unit,
                             "mean": self.mean, "sd": self.scale})

    def save(self, directory: str | os.PathLike, children: pd.DataFrame | None = None) -> list[Path]:
        from evalsuite.results import write_table, write_text_atomic

        directory = Path(directory)
        payload = _finite({"schema": SCHEMA, **asdict(self), "trees": "@TREES@"})
        text = json.dumps(payload, indent=2)
        if self.trees:  # one line per tree, not one per number
            trees = ",\n      ".join(json.dumps(_finite(t), separators=(",", ":")) for t in self.trees["trees"])
            head = {k: v for k, v in self.trees.items() if k != "trees"}
            text = text.replace('"@TREES@"', json.dumps(_finite(head))[:-1] + ', "trees": [\n      ' + trees + "\n  ]}")
        else:
            text = text.replace('"@TREES@"', "{}")
        written = [write_text_atomic(directory / MODEL_FILE, text + "\n")]
        if children is not None:
            written += write_table(children, directory / CHILDREN_FILE)
        return written


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item"):
        return _finite(value.item())
    return value


# the name of the class before gradient boosting joined the ridge (kept for callers and old pickles of code)
LinearAgeModel = AgeModel


def load_model(directory: str | os.PathLike) -> AgeModel:
    path = Path(directory).expanduser()
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"no age model at {path}: fit one with `evalsuite childes-age --fit CHAT... --model DIR`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not an age model (bad JSON: {err})") from err
    schema = data.pop("schema", None)
    if schema != SCHEMA and schema not in OLD_RIDGE_SCHEMAS:
        raise UserError(f"{path} is not an age model of schema {SCHEMA} (found {schema!r}; refit it with "
                        "`evalsuite childes-age --fit`)")
    if schema in OLD_RIDGE_SCHEMAS:
        data["kind"] = "ridge"
    known = set(AgeModel.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown or data.get("kind", "ridge") not in ("ridge", "gbm"):
        raise UserError(f"{path}: unknown age-model field(s) {', '.join(unknown) or data.get('kind')!s} "
                        "(written by a newer evalsuite? refit it with `evalsuite childes-age --fit`)")
    if data.get("kind") == "gbm" and not (data.get("trees") or {}).get("trees"):
        raise UserError(f"{path}: a gradient-boosting age model without trees")
    data["inputs"] = tuple(data["inputs"])
    data["age_range"] = tuple(data["age_range"])
    data["interval_halfwidth"] = math.nan if data.get("interval_halfwidth") is None else data["interval_halfwidth"]
    return AgeModel(**data)


def _inner_folds(groups: np.ndarray, n_splits: int = INNER_SPLITS) -> list:
    from sklearn.model_selection import GroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < 3:
        return []
    return list(GroupKFold(n_splits=min(n_splits, n_groups)).split(groups, groups=groups))


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    return (x - mean) / scale, mean, scale


def ridge_path(z: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression with an intercept for every alpha at once, from one SVD of the centred inputs:
    coef = V diag(s / (s^2 + alpha)) U' (y - mean y), intercept = mean y - mean z . coef (the same
    minimiser as sklearn's Ridge, without its per-fit overhead). Returns (coefs [alphas x inputs], intercepts)."""
    z_mean, y_mean = z.mean(axis=0), y.mean()
    u, sing, vt = np.linalg.svd(z - z_mean, full_matrices=False)
    uty = u.T @ (y - y_mean)
    shrink = sing[None, :] / (sing[None, :] ** 2 + np.asarray(alphas, dtype=float)[:, None])
    coefs = (shrink * uty[None, :]) @ vt
    return coefs, y_mean - coefs @ z_mean


def _ridge_path_errors(x: np.ndarray, age: np.ndarray, target: str, folds: list,
                       return_predictions: bool = False):
    """Summed absolute error in months, per alpha of ALPHAS, over the inner folds (standardised per fold);
    with return_predictions, also the out-of-fold predictions [transcripts x alphas]."""
    y = _to_target(age, target)
    errors = np.zeros(len(ALPHAS))
    preds = np.full((len(age), len(ALPHAS)), np.nan)
    for tr, te in folds:
        lo, hi = np.quantile(x[tr], RANGE_QUANTILES[0], axis=0), np.quantile(x[tr], RANGE_QUANTILES[1], axis=0)
        z_tr, mean, scale = _standardise(np.clip(x[tr], lo, hi))
        z_te = (np.clip(x[te], lo, hi) - mean) / scale
        coefs, intercepts = ridge_path(z_tr, y[tr], ALPHAS)
        pred = _from_target(z_te @ coefs.T + intercepts[None, :], target)
        errors += np.abs(pred - age[te][:, None]).sum(axis=0)
        preds[te] = pred
    return (errors, preds) if return_predictions else errors


def _fit_gbm(x: np.ndarray, age: np.ndarray, target: str, seed: int):
    """sklearn's GradientBoostingRegressor with GBM_PARAMS on (x, target of age)."""
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(**GBM_PARAMS, random_state=seed).fit(x, _to_target(age, target))


def _inner_oof(train: pd.DataFrame, spec: ModelSpec, folds: list, seed: int) -> tuple[np.ndarray, float]:
    """Out-of-fold predictions (months) of `spec` over the inner by-child folds of `train`, and ridge's alpha
    (the one with the lowest summed error over these folds; NaN for a gbm). Medians and ranges per fold."""
    age = train["age_months"].to_numpy(dtype=float)
    pred = np.full(len(train), np.nan)
    if spec.kind == "gbm":
        for tr, te in folds:
            fill = _fills(train.iloc[tr])
            model = _fit_gbm(_design(train.iloc[tr], spec.inputs, fill), age[tr], spec.target, seed)
            pred[te] = _from_target(tree_ensemble_predict(export_gbm(model), _design(train.iloc[te], spec.inputs, fill)),
                                    spec.target)
        return pred, math.nan
    x = _design(train, spec.inputs, _fills(train))
    errors, preds = _ridge_path_errors(x, age, spec.target, folds, return_predictions=True)
    best = int(np.argmin(errors))
    return preds[:, best], float(ALPHAS[best])


def select_spec(train: pd.DataFrame, specs: tuple[ModelSpec, ...] = SPECS,
                seed: int = 0) -> tuple[ModelSpec, pd.DataFrame]:
    """The spec with the lowest inner by-child CV MAE on `train` (a ridge at its best alpha, a gbm with its
    fixed GBM_PARAMS), and the table of all specs' inner MAEs. Uses the training part only: an outer test
    fold never chooses. The chosen spec's inner out-of-fold predictions are in table.attrs["oof"]."""
    groups = train["child_id"].to_numpy()
    folds = _inner_folds(groups)
    if not folds or len(specs) == 1:
        return specs[0], pd.DataFrame()
    age = train["age_months"].to_numpy(dtype=float)
    rows, oof = [], {}
    for spec in specs:
        pred, alpha = _inner_oof(train, spec, folds, seed)
        oof[spec.name] = pred
        rows.append({"spec": spec.name, "kind": spec.kind, "inner_mae": float(np.mean(np.abs(pred - age))),
                     "alpha": alpha})
    table = pd.DataFrame(rows)
    chosen = specs[int(table["inner_mae"].idxmin())]
    table.attrs["oof"] = oof[chosen.name]
    return chosen, table


def fit_linear(train: pd.DataFrame, config: AgeFitConfig, with_interval: bool = True,
               spec: ModelSpec | None = None) -> AgeModel:
    """The age model on `train`: the spec chosen by select_spec on `train` when not given (nested: the
    training part only); a ridge on the spec's standardised inputs with alpha from an inner grouped CV over
    the training children, or gradient boosting (GBM_PARAMS). (The name predates the trees: fit_model.)
    Interval half-width: split-conformal by child, the `coverage` quantile of |out-of-fold residual| over
    the training children (a ridge: GroupKFold(n_splits) refits; a gbm: the inner CV's 5-fold predictions,
    which need no refit as nothing was tuned on them)."""
    selection = pd.DataFrame()
    if spec is None:
        spec, selection = select_spec(train, seed=config.seed)
    fill = _fills(train)
    x = _design(train, spec.inputs, fill)
    age = train["age_months"].to_numpy(dtype=float)
    groups = train["child_id"].to_numpy()
    checked = [f for f in RANGE_FEATURES if f in train and train[f].notna().any()]
    common = dict(inputs=spec.inputs, fill=fill,
                  feature_min={f: float(train[f].quantile(RANGE_QUANTILES[0])) for f in checked},
                  feature_max={f: float(train[f].quantile(RANGE_QUANTILES[1])) for f in checked},
                  age_range=(float(age.min()), float(age.max())), min_utterances=config.min_utterances,
                  target=spec.target, spec=spec.name, coverage=config.coverage,
                  training_children=sorted(set(groups)), n_transcripts=len(train))
    if spec.kind == "gbm":
        gbm = _fit_gbm(x, age, spec.target, config.seed)
        model = AgeModel(mean=[], scale=[], coef=[], intercept=math.nan, alpha=math.nan, clip_low=[], clip_high=[],
                         kind="gbm", trees=export_gbm(gbm), importance=[float(v) for v in gbm.feature_importances_],
                         **common)
        model.extra["gbm_params"] = dict(GBM_PARAMS)
    else:
        folds = _inner_folds(groups)
        alpha = float(ALPHAS[int(np.argmin(_ridge_path_errors(x, age, spec.target, folds)))]) if folds else 1.0
        lo, hi = np.quantile(x, RANGE_QUANTILES[0], axis=0), np.quantile(x, RANGE_QUANTILES[1], axis=0)
        z, mean, scale = _standardise(np.clip(x, lo, hi))
        coefs, intercepts = ridge_path(z, _to_target(age, spec.target), np.array([alpha]))
        model = AgeModel(mean=mean.tolist(), scale=scale.tolist(), coef=[float(c) for c in coefs[0]],
                         intercept=float(intercepts[0]), alpha=alpha, clip_low=lo.tolist(), clip_high=hi.tolist(),
                         **common)
    if not selection.empty:
        model.extra["spec_selection"] = selection.to_dict("records")
    if with_interval and len(np.unique(groups)) >= 3:
        if spec.kind == "gbm":
            oof = selection.attrs.get("oof") if not selection.empty else None
            if oof is None:
                oof, _ = _inner_oof(train, spec, _inner_folds(groups), config.seed)
        else:
            oof = _oof_predictions(train, config, min(config.n_splits, len(np.unique(groups))), spec)
        resid = np.abs(oof - age)
        model.interval_halfwidth = float(np.quantile(resid[np.isfinite(resid)], config.coverage))
    return model


fit_model = fit_linear


def _oof_predictions(table: pd.DataFrame, config: AgeFitConfig, n_splits: int, spec: ModelSpec) -> np.ndarray:
    from sklearn.model_selection import GroupKFold

    pred = np.full(len(table), np.nan)
    for tr, te in GroupKFold(n_splits=n_splits).split(table, groups=table["child_id"]):
        m = fit_linear(table.iloc[tr], config, with_interval=False, spec=spec)
        pred[te] = m.predict_point(table.iloc[te])
    return pred


def _mlu_only(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    slope, intercept = np.polyfit(train["mlu_m"].to_numpy(float), train["age_months"].to_numpy(float), 1)
    return intercept + slope * test["mlu_m"].to_numpy(float)


METHODS = ("age_model", "mlu_only", "miller_chapman", "constant")
# what each method is, for tables (cv_summary's method_label)
METHOD_LABELS = {"age_model": "age model (spec chosen by inner by-child CV)", "mlu_only": "MLU-m only (linear fit)",
                 "miller_chapman": "Miller & Chapman (1981), inverted",
                 "constant": "constant (training-fold mean age)"}


def cross_validate(table: pd.DataFrame, config: AgeFitConfig) -> pd.DataFrame:
    """Out-of-fold predictions of all METHODS on the same folds, for both schemes (by child, by corpus).
    One row per scheme x transcript: fold, child_id, corpus_key, age_months, pred_<method>, and the
    age model's interval (its half-width from an inner by-child CV of the training part) and in_range."""
    from sklearn.model_selection import GroupKFold, LeaveOneGroupOut

    n_children = table["child_id"].nunique()
    schemes = []
    if n_children >= 2:
        gkf = GroupKFold(n_splits=min(config.n_splits, n_children))
        schemes.append(("by_child", list(gkf.split(table, groups=table["child_id"]))))
    if table["corpus_key"].nunique() >= 2:
        schemes.append(("by_corpus", list(LeaveOneGroupOut().split(table, groups=table["corpus_key"]))))
    rows = []
    for scheme, folds in schemes:
        for k, (tr, te) in enumerate(folds):
            train, test = table.iloc[tr], table.iloc[te]
            model = fit_linear(train, config, with_interval=train["child_id"].nunique() >= 3)
            pred = model.predict(test)
            point = model.predict_point(test)
            out = test[["file", "child_id", "corpus_key", "age_months", "mlu_m"]].copy() if "file" in test else \
                test[["child_id", "corpus_key", "age_months", "mlu_m"]].copy()
            out.insert(0, "scheme", scheme)
            out.insert(1, "fold", k if scheme == "by_child" else str(test["corpus_key"].iloc[0]))
            out["pred_age_model"] = point
            out["spec"] = model.spec
            out["pred_mlu_only"] = _mlu_only(train, test)
            out["pred_miller_chapman"] = miller_chapman_age(test["mlu_m"])
            out["pred_constant"] = float(train["age_months"].mean())  # the negative control
            out["ci_low"] = point - model.interval_halfwidth
            out["ci_high"] = point + model.interval_halfwidth
            out["in_range"] = pred["in_range"].to_numpy()
            rows.append(out)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def cv_summary(predictions: pd.DataFrame, config: AgeFitConfig) -> pd.DataFrame:
    """MAE per scheme x method with a cluster bootstrap CI over children (evalsuite.stats.bootstrap_ci,
    groups = child), the mean of per-child MAEs, and the paired difference to the age model."""
    from evalsuite.stats import bootstrap_ci

    rows = []
    for scheme, g in predictions.groupby("scheme", sort=False):
        y = g["age_months"].to_numpy(float)
        groups = g["child_id"].to_numpy()
        err_model = np.abs(g["pred_age_model"].to_numpy(float) - y)
        for method in METHODS:
            err = np.abs(g[f"pred_{method}"].to_numpy(float) - y)
            mae = bootstrap_ci(err, groups=groups, n_boot=config.n_boot, seed=config.seed)
            diff = bootstrap_ci(err - err_model, groups=groups, n_boot=config.n_boot, seed=config.seed)
            per_child = pd.Series(err).groupby(groups).mean()
            row = {"scheme": scheme, "method": method, "method_label": METHOD_LABELS[method],
                   "n_transcripts": len(g), "n_children": int(len(per_child)),
                   "n_folds": int(g["fold"].nunique()), "mae_months": mae.estimate, "mae_ci_low": mae.ci_low,
                   "mae_ci_high": mae.ci_high, "mae_mean_over_children": float(per_child.mean()),
                   "bias_months": float(np.mean(g[f"pred_{method}"].to_numpy(float) - y)),
                   "mae_minus_age_model": diff.estimate, "diff_ci_low": diff.ci_low, "diff_ci_high": diff.ci_high}
            if method == "age_model":
                inside = (y >= g["ci_low"].to_numpy(float)) & (y <= g["ci_high"].to_numpy(float))
                row["interval_coverage"] = float(np.mean(inside))
                row["share_in_range"] = float(g["in_range"].mean())
                ok = g["in_range"].to_numpy(bool)
                row["mae_in_range_only"] = float(np.mean(err[ok])) if ok.any() else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def children_table(table: pd.DataFrame) -> pd.DataFrame:
    """The children the model was trained on (saved beside it)."""
    return (table.groupby("child_id").agg(corpus=("corpus_key", "first"), n_transcripts=("age_months", "size"),
                                          age_min=("age_months", "min"), age_max=("age_months", "max"))
            .reset_index())


@dataclass
class AgeFitResult:
    model: AgeModel
    table: pd.DataFrame
    predictions: pd.DataFrame
    summary: pd.DataFrame
    children: pd.DataFrame


def fit_and_validate(docs: pd.DataFrame, config: AgeFitConfig | None = None) -> AgeFitResult:
    """Training table -> cross-validated comparison with the baselines -> final model on all children."""
    config = config or AgeFitConfig()
    table = training_table(docs, config)
    if table["child_id"].nunique() < 3:
        raise UserError(f"the age model needs transcripts of at least 3 children aged {config.min_age_months:g}-"
                        f"{config.max_age_months:g} months with >= {config.min_utterances} utterances; "
                        f"got {table['child_id'].nunique()}")
    predictions = cross_validate(table, config)
    summary = cv_summary(predictions, config)
    model = fit_linear(table, config)
    model.extra.update({"cv": summary.to_dict("records"), "config": asdict(config),
                        "specs": [asdict(spec) for spec in SPECS], "gbm_params": dict(GBM_PARAMS),
                        "spec_chosen_per_fold": predictions.groupby(["scheme", "fold"])["spec"].first()
                        .value_counts().to_dict() if "spec" in predictions else {}})
    return AgeFitResult(model, table, predictions, summary, children_table(table))


# ----------------------------------------------------------------------------- applying the model


def documents_from_paths(
    paths, *, clan_unintelligible: bool = True, skipped: list[dict] | None = None, n_workers: int = 2
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(transcript features, checkpoint features) of CHAT sources (.cha, folders, zips) and samples.jsonl
    files: one row per transcript (`file`, `child`, `age_months` ...) and one per checkpoint (`checkpoint_id`,
    `val_loss`, `val_bpc`, `run` ...); either may be empty. With a `skipped` list, a CHAT source that
    holds no child (CHI) utterance is recorded there ({path, reason}) instead of stopping the run
    (some TalkBank corpora transcribe only adults); any other problem still raises."""
    from evalsuite.childes.age_features import document_features, sentences_frame

    if not paths:
        raise UserError("no inputs given: pass .cha files, folders, TalkBank zips or samples.jsonl")
    chat, samples = [], []
    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise UserError(f"no such file or folder: {path}")
        (samples if path.suffix.lower() == ".jsonl" else chat).append(path)
    transcripts = pd.DataFrame()
    if chat:
        from evalsuite.childes.parse_cache import load_child_utterances

        # through the parse cache: CHAT is read once, and the frame carries %mor for the %mor features
        utterances = load_child_utterances(chat, n_workers=n_workers).utterances
        given = set(utterances["source"].astype(str)) if len(utterances) else set()
        for p in chat:
            if str(p) not in given:
                reason = f"no utterances of the target child (CHI) in {p}"
                if skipped is None:
                    raise UserError(reason)
                skipped.append({"path": str(p), "reason": reason})
        if len(utterances):
            transcripts = document_features(utterances, "file", clan_unintelligible=clan_unintelligible)
    checkpoints = pd.DataFrame()
    if samples:
        from evalsuite.childes.samples_frame import read_samples

        table = read_samples(samples)
        table["run"] = [run_of(c, f) for c, f in zip(table["checkpoint"], table["samples_file"], strict=True)]
        checkpoints = document_features(sentences_frame(table), "checkpoint_id", clan_unintelligible=False)
    return transcripts, checkpoints


def run_of(checkpoint: str, samples_file: str) -> str:
    """The training run a checkpoint belongs to: the folder above a `best`/`latest`/`step_*` checkpoint
    directory, else the checkpoint's parent folder, else the samples file it came from."""
    path = Path(str(checkpoint))
    if path.name in ("best", "latest") or path.name.startswith("step_"):
        return str(path.parent)
    if len(path.parts) > 1:
        return str(path.parent)
    return str(samples_file)


def apply_model(model: AgeModel, transcripts: pd.DataFrame, checkpoints: pd.DataFrame) -> pd.DataFrame:
    """One row per transcript or checkpoint: file / checkpoint_id, child, age_months (empty for model
    text), predicted_age_months, ci_low, ci_high, in_range, then the features and the reason for no age."""
    frames = []
    for docs, key in ((transcripts, "file"), (checkpoints, "checkpoint_id")):
        if docs.empty:
            continue
        pred = model.predict(docs)
        out = pd.DataFrame({
            "file": docs["file"] if key == "file" else None,
            "checkpoint_id": docs["checkpoint_id"] if key == "checkpoint_id" else None,
            "child": docs.get("child", None),
            "child_id": child_id(docs) if key == "file" and "file" in docs else None,
            "age_months": docs.get("age_months", math.nan),
        })
        out = pd.concat([out, pred], axis=1)
        for col in ("run", "val_loss", "val_bpc", "n_utterances", *FEATURES, *MODEL_RAW_FEATURES, "mlu_w",
                    "brown_stage"):
            if col in docs:
                out[col] = docs[col]
        frames.append(out)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

"""The age model: transcript features -> child age in months, fit on many children, tested on unseen ones.

Features come from `evalsuite.childes.age_features.document_features` (MLU in morphemes, over-
regularisations per opportunity, mean age of acquisition of the words used). The model is a ridge
regression on standardised inputs [MLU-m, log MLU-m, mean AoA, NDW in 100 words, over-regularisation
rate] (the
rate is imputed with the training median where a transcript has no irregular context, and that
is an input too). The specification was fixed before the cross-validation was run; nothing is
tuned on test folds (ridge's alpha is chosen by an inner CV on the training part only).

Validation, on the same folds for every method:
- by child: GroupKFold over children (no child in both train and test),
- by corpus: leave one corpus out,
against two baselines: a linear fit of age on MLU-m alone (fit on the same training folds), and
the Miller & Chapman (1981) MLU-for-age norm inverted (no fitting).

Prediction intervals: split-conformal by child: the 95 % quantile of the absolute out-of-fold
residuals of the by-child CV on the training children, added either side (`interval_halfwidth`).
`in_range`: a document whose features lie outside the training transcripts' range (the central
99 % of each feature, RANGE_QUANTILES), or with too
few utterances, or whose point prediction falls outside the training ages, gets no age: the
model never returns an extrapolated number.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from corpora.errors import UserError
from evalsuite.childes.age_features import FEATURES

SCHEMA = "evalsuite.childes.age_model/2"
MODEL_FILE = "age_model.json"
CHILDREN_FILE = "training_children.csv"
# The training range of a feature is its central 99 % over the training transcripts: one odd
# transcript (an MLU of 15 in a monologue) must not stretch the range in which ages are given.
RANGE_QUANTILES = (0.005, 0.995)
INPUTS: tuple[str, ...] = ("mlu_m", "log_mlu_m", "mean_aoa", "ndw_100", "overreg_rate", "overreg_missing")

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


def child_id(frame: pd.DataFrame) -> pd.Series:
    """A child's identity across transcripts: corpus + child name from corpora.chat (never the file path,
    which for a folder of one child's files is the file itself). Folder-named children, e.g. all of
    Bates/Free20, form one group: conservative for CV (never the same child on both sides)."""
    return corpus_of(frame) + "/" + frame["child"].astype(str)


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


def _design(docs: pd.DataFrame, overreg_fill: float) -> np.ndarray:
    mlu = docs["mlu_m"].to_numpy(dtype=float)
    rate = docs["overreg_rate"].to_numpy(dtype=float)
    missing = np.isnan(rate)
    return np.column_stack([mlu, np.log(mlu), docs["mean_aoa"].to_numpy(dtype=float),
                            docs["ndw_100"].to_numpy(dtype=float), np.where(missing, overreg_fill, rate), missing.astype(float)])


@dataclass
class LinearAgeModel:
    """A fitted model in plain numbers (saved as JSON, no pickle): standardise, dot, add."""

    inputs: tuple[str, ...]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    alpha: float
    overreg_fill: float
    feature_min: dict[str, float]
    feature_max: dict[str, float]
    age_range: tuple[float, float]
    min_utterances: int
    interval_halfwidth: float = math.nan
    coverage: float = 0.95
    training_children: list[str] = field(default_factory=list)
    n_transcripts: int = 0
    extra: dict = field(default_factory=dict)

    def predict_point(self, docs: pd.DataFrame) -> np.ndarray:
        x = _design(docs, self.overreg_fill)
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.coef) + self.intercept

    def outside(self, docs: pd.DataFrame) -> list[str]:
        """Per document: ';'-joined reasons it gets no age ('' = in range)."""
        reasons = []
        for _, row in docs.iterrows():
            why = [f"{f} {row[f]:.3g} outside [{self.feature_min[f]:.3g}, {self.feature_max[f]:.3g}]"
                   for f in FEATURES if row[f] == row[f] and not self.feature_min[f] <= row[f] <= self.feature_max[f]]
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
        ok = np.array([r == "" for r in reasons])
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
        return pd.DataFrame({"input": list(self.inputs), "coefficient_months_per_sd": self.coef,
                             "mean": self.mean, "sd": self.scale})

    def save(self, directory: str | os.PathLike, children: pd.DataFrame | None = None) -> list[Path]:
        from evalsuite.results import write_table, write_text_atomic

        directory = Path(directory)
        payload = {"schema": SCHEMA, **asdict(self)}
        written = [write_text_atomic(directory / MODEL_FILE, json.dumps(_finite(payload), indent=2) + "\n")]
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


def load_model(directory: str | os.PathLike) -> LinearAgeModel:
    path = Path(directory).expanduser()
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"no age model at {path}: fit one with `evalsuite childes-age --fit CHAT... --model DIR`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not an age model (bad JSON: {err})") from err
    if data.pop("schema", None) != SCHEMA:
        raise UserError(f"{path} is not an age model of schema {SCHEMA}")
    data["inputs"] = tuple(data["inputs"])
    data["age_range"] = tuple(data["age_range"])
    data["interval_halfwidth"] = math.nan if data.get("interval_halfwidth") is None else data["interval_halfwidth"]
    return LinearAgeModel(**data)


def fit_linear(train: pd.DataFrame, config: AgeFitConfig, with_interval: bool = True) -> LinearAgeModel:
    """Ridge on standardised INPUTS; alpha by an inner grouped CV over the training children only."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold

    rate = train["overreg_rate"].to_numpy(dtype=float)
    fill = float(np.nanmedian(rate)) if np.isfinite(rate).any() else 0.0
    x = _design(train, fill)
    y = train["age_months"].to_numpy(dtype=float)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    groups = train["child_id"].to_numpy()
    n_groups = len(np.unique(groups))
    alphas = np.logspace(-2, 3, 11)
    if n_groups >= 3:
        cv = list(GroupKFold(n_splits=min(5, n_groups)).split(z, y, groups))
        ridge = _ridge_grouped(z, y, alphas, cv)
    else:
        ridge = RidgeCV(alphas=alphas).fit(z, y)  # too few children for a grouped inner CV
        ridge.alpha = float(ridge.alpha_)
    model = LinearAgeModel(
        inputs=INPUTS, mean=mean.tolist(), scale=scale.tolist(), coef=[float(c) for c in ridge.coef_],
        intercept=float(ridge.intercept_), alpha=float(ridge.alpha), overreg_fill=fill,
        feature_min={f: float(train[f].quantile(RANGE_QUANTILES[0])) for f in FEATURES},
        feature_max={f: float(train[f].quantile(RANGE_QUANTILES[1])) for f in FEATURES},
        age_range=(float(y.min()), float(y.max())), min_utterances=config.min_utterances, coverage=config.coverage,
        training_children=sorted(set(groups)), n_transcripts=len(train),
    )
    if with_interval and n_groups >= 3:
        resid = np.abs(_oof_predictions(train, config, n_splits=min(config.n_splits, n_groups)) - y)
        model.interval_halfwidth = float(np.quantile(resid[np.isfinite(resid)], config.coverage))
    return model


def _ridge_grouped(z: np.ndarray, y: np.ndarray, alphas: np.ndarray, cv: list):
    from sklearn.linear_model import Ridge

    errors = []
    for a in alphas:
        err = 0.0
        for tr, te in cv:
            err += float(np.abs(Ridge(alpha=a).fit(z[tr], y[tr]).predict(z[te]) - y[te]).sum())
        errors.append(err)
    best = Ridge(alpha=float(alphas[int(np.argmin(errors))])).fit(z, y)
    best.alpha = float(alphas[int(np.argmin(errors))])
    return best


def _oof_predictions(table: pd.DataFrame, config: AgeFitConfig, n_splits: int) -> np.ndarray:
    from sklearn.model_selection import GroupKFold

    pred = np.full(len(table), np.nan)
    for tr, te in GroupKFold(n_splits=n_splits).split(table, groups=table["child_id"]):
        m = fit_linear(table.iloc[tr], config, with_interval=False)
        pred[te] = m.predict_point(table.iloc[te])
    return pred


def _mlu_only(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    slope, intercept = np.polyfit(train["mlu_m"].to_numpy(float), train["age_months"].to_numpy(float), 1)
    return intercept + slope * test["mlu_m"].to_numpy(float)


METHODS = ("age_model", "mlu_only", "miller_chapman")


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
            out["pred_mlu_only"] = _mlu_only(train, test)
            out["pred_miller_chapman"] = miller_chapman_age(test["mlu_m"])
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
            row = {"scheme": scheme, "method": method, "n_transcripts": len(g), "n_children": int(len(per_child)),
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
    model: LinearAgeModel
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
    model.extra = {"cv": summary.to_dict("records"), "config": asdict(config)}
    return AgeFitResult(model, table, predictions, summary, children_table(table))


# ----------------------------------------------------------------------------- applying the model


def documents_from_paths(
    paths, *, clan_unintelligible: bool = True, skipped: list[dict] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(transcript features, checkpoint features) of CHAT sources (.cha, folders, zips) and samples.jsonl
    files: one row per transcript (`file`, `child`, `age_months` ...) and one per checkpoint (`checkpoint_id`,
    `val_loss`, `val_bpc`, `run` ...); either may be empty. With a `skipped` list, a CHAT source that
    holds no child (CHI) utterance is recorded there ({path, reason}) instead of stopping the run
    (some TalkBank corpora transcribe only adults); any other problem still raises."""
    from corpora.chat import read_chat
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
        frames = []
        for p in chat:
            try:
                utterances = read_chat(p)
            except UserError as err:
                if skipped is None or not str(err).startswith("no utterances of"):
                    raise
                skipped.append({"path": str(p), "reason": str(err)})
                continue
            frames.append(document_features(utterances, "file", clan_unintelligible=clan_unintelligible))
        if frames:
            transcripts = pd.concat(frames, ignore_index=True)
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


def apply_model(model: LinearAgeModel, transcripts: pd.DataFrame, checkpoints: pd.DataFrame) -> pd.DataFrame:
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
            "age_months": docs.get("age_months", math.nan),
        })
        out = pd.concat([out, pred], axis=1)
        for col in ("run", "val_loss", "val_bpc", "n_utterances", *FEATURES, "mlu_w", "brown_stage"):
            if col in docs:
                out[col] = docs[col]
        frames.append(out)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

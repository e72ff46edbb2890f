"""Age model: transcript features -> child age in months; cross-validated by child; applied to stories.

Features of a document set (a transcript, or all stories of one checkpoint) are computed from
per-document sufficient statistics, so a bootstrap over stories only re-adds sums:
MLU in morphemes and in words, clause density (clauses per unit), MATTR (mean over documents),
and the rate per 100 units of each error type.

The model is a ridge regression on standardised features (alpha by internal CV). Cross-validation
is by child: train on every child but one, test on the held-out child. With Brown's Adam
(27-62 months) and Eve (18-27 months) the age ranges barely overlap, so each fold extrapolates;
the fold table says so next to its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from evalsuite.childes.detectors import ERROR_TYPES
from evalsuite.childes.measures import mattr
from evalsuite.stats import spearman

FEATURES: tuple[str, ...] = (
    "mlu_morphemes", "mlu_words", "clause_density", "mattr", *(f"rate_{t}" for t in ERROR_TYPES),
)


def document_stats(units: pd.DataFrame, doc_key: str, mattr_window: int = 50) -> pd.DataFrame:
    """Sums per document (transcript or story) from which features are recomputed for any resample."""
    flags = [f"has_{t}" for t in ERROR_TYPES]
    agg = units.groupby(doc_key, sort=False).agg(
        n_units=("text", "size"), words=("n_words", "sum"), morphemes=("n_morphemes", "sum"),
        clauses=("n_clauses", "sum"), **{f: (f, "sum") for f in flags},
    )
    words = units.groupby(doc_key, sort=False)["words"].agg(lambda s: [w for ws in s for w in ws])
    agg["mattr"] = [mattr(w, mattr_window) for w in words.loc[agg.index]]
    return agg.reset_index()


def features_from_stats(stats_frame: pd.DataFrame) -> dict[str, float]:
    n = stats_frame["n_units"].sum()
    out = {
        "mlu_morphemes": stats_frame["morphemes"].sum() / n,
        "mlu_words": stats_frame["words"].sum() / n,
        "clause_density": stats_frame["clauses"].sum() / n,
        "mattr": float(np.nanmean(stats_frame["mattr"])) if len(stats_frame) else float("nan"),
    }
    for t in ERROR_TYPES:
        out[f"rate_{t}"] = 100.0 * stats_frame[f"has_{t}"].sum() / n
    return out


def transcript_features(child_units: pd.DataFrame, min_units: int = 50, mattr_window: int = 50) -> pd.DataFrame:
    """One row per transcript with >= min_units analysable utterances: child, age, features."""
    docs = document_stats(child_units, "file", mattr_window)
    meta = child_units.groupby("file", sort=False).agg(child=("child", "first"), age_months=("age_months", "first"))
    rows = []
    for _, row in docs.iterrows():
        if row["n_units"] < min_units or pd.isna(meta.loc[row["file"], "age_months"]):
            continue  # too short, or no age to learn from
        feats = features_from_stats(pd.DataFrame([row]))
        rows.append({"file": row["file"], "child": meta.loc[row["file"], "child"],
                     "age_months": meta.loc[row["file"], "age_months"], "n_units": int(row["n_units"]), **feats})
    return pd.DataFrame(rows)


def make_model(seed: int = 0):
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    del seed  # ridge is deterministic
    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 26)))


@dataclass
class AgeModel:
    model: object
    features: tuple[str, ...]
    train_min: dict[str, float]
    train_max: dict[str, float]
    age_range: tuple[float, float]
    n_transcripts: int

    def predict(self, feats: dict[str, float]) -> float:
        x = np.array([[feats[f] for f in self.features]])
        return float(self.model.predict(x)[0])

    def outside_range(self, feats: dict[str, float]) -> list[str]:
        return [f for f in self.features if not (self.train_min[f] <= feats[f] <= self.train_max[f])]

    def coefficients(self) -> pd.DataFrame:
        ridge = self.model[-1]
        return pd.DataFrame({"feature": list(self.features), "coefficient_per_sd": ridge.coef_,
                             "alpha": ridge.alpha_})


def fit_age_model(train: pd.DataFrame, features: tuple[str, ...] = FEATURES) -> AgeModel:
    x = train[list(features)].to_numpy(dtype=float)
    y = train["age_months"].to_numpy(dtype=float)
    model = make_model().fit(x, y)
    return AgeModel(model, features, train[list(features)].min().to_dict(), train[list(features)].max().to_dict(),
                    (float(y.min()), float(y.max())), len(train))


def cross_validate_by_child(table: pd.DataFrame, features: tuple[str, ...] = FEATURES) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leave-one-child-out folds (needs >= 2 children) plus pooled leave-one-transcript-out for contrast."""
    children = sorted(table["child"].unique())
    folds, predictions = [], []
    for child in children if len(children) >= 2 else []:
        train, test = table[table.child != child], table[table.child == child]
        model = fit_age_model(train, features)
        pred = model.model.predict(test[list(features)].to_numpy(dtype=float))
        folds.append(_fold_row(f"train {'+'.join(sorted(train.child.unique()))} -> test {child}", train, test, pred))
        predictions.append(test.assign(predicted_age=pred, fold=f"leave out {child}"))
    if len(table) >= 5:
        pred = np.empty(len(table))
        for i in range(len(table)):
            model = fit_age_model(table.drop(table.index[i]), features)
            pred[i] = model.model.predict(table.iloc[[i]][list(features)].to_numpy(dtype=float))[0]
        folds.append(_fold_row("pooled leave-one-transcript-out (optimistic: same child in train and test)",
                               table, table, pred))
        predictions.append(table.assign(predicted_age=pred, fold="pooled LOTO"))
    return pd.DataFrame(folds), (pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame())


def _fold_row(name: str, train: pd.DataFrame, test: pd.DataFrame, pred: np.ndarray) -> dict:
    y = test["age_months"].to_numpy(dtype=float)
    err = pred - y
    corr = spearman(pred, y)  # exact permutation p for a small test child
    rho, p = corr.rho, corr.p
    tr_lo, tr_hi = train.age_months.min(), train.age_months.max()
    te_lo, te_hi = test.age_months.min(), test.age_months.max()
    overlap = max(0.0, min(tr_hi, te_hi) - max(tr_lo, te_lo))
    return {
        "fold": name, "n_train": len(train), "n_test": len(test),
        "train_age_range": f"{tr_lo:.1f}-{tr_hi:.1f}", "test_age_range": f"{te_lo:.1f}-{te_hi:.1f}",
        "age_range_overlap_months": round(float(overlap), 1),
        "mae_months": float(np.mean(np.abs(err))), "rmse_months": float(np.sqrt(np.mean(err**2))),
        "bias_months": float(np.mean(err)), "spearman_rho": float(rho), "spearman_p": float(p),
    }


def bootstrap_age(
    model: AgeModel, doc_stats: pd.DataFrame, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float, dict[str, float]]:
    """Predicted age for a set of documents with a percentile CI from resampling the documents."""
    feats = features_from_stats(doc_stats)
    point = model.predict(feats)
    rng = np.random.default_rng(seed)
    n = len(doc_stats)
    numeric = doc_stats.select_dtypes(include=["number", "bool"])
    arr = numeric.to_numpy(dtype=float)
    cols = list(numeric.columns)
    preds = np.empty(n_boot)
    for b in range(n_boot):
        sample = pd.DataFrame(arr[rng.integers(0, n, size=n)], columns=cols)
        preds[b] = model.predict(features_from_stats(sample))
    return point, float(np.quantile(preds, 0.025)), float(np.quantile(preds, 0.975)), feats

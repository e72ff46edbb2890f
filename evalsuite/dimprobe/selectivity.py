"""Selectivity of linear probes per component (Hewitt & Liang 2019, "Designing and Interpreting
Probes with Control Tasks").

For each model, layer, component e_k and category c, a logistic-regression probe (sklearn,
L2, C = 1) reads the component's slice of the per-token normalised hidden vector, h_k / ||h||
(the whole vector's norm divided out, as in the probe's shares), and predicts whether the token
belongs to the category. Its accuracy is compared with the same probe trained on a control task:
every word type (lower-cased spaCy word) gets one random label, so the control labels are as learnable from word identity as the
real ones but carry no linguistic property. selectivity = accuracy - control accuracy: high when
the component encodes the category beyond memorising word identity. Accuracies are out-of-fold,
with folds grouped by document (sklearn GroupKFold), so no document is in both train and test.
`majority` is the accuracy of always answering the more frequent class in the test folds; the control
labels are matched to the category's token-level positive rate (see `control_labels`), so both tasks
have about the same majority baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def control_labels(types: Sequence[str], rate: float, seed: int) -> np.ndarray:
    """One random binary label per distinct word type, broadcast to its tokens. Types are visited in
    a seeded random order and labelled positive while the positive tokens stay within `rate` of all
    tokens, so the control task has (about) the real task's token-level positive rate: a plain
    Bernoulli draw per type would give frequent types' tokens a different majority baseline."""
    uniq, inverse, counts = np.unique(np.asarray(types, dtype=object).astype(str), return_inverse=True,
                                      return_counts=True)
    rng = np.random.default_rng([seed, 4241])
    order = rng.permutation(len(uniq))
    target = rate * len(inverse)
    positive = np.zeros(len(uniq), dtype=bool)
    total = 0
    for t in order:
        if total + counts[t] <= target:
            positive[t] = True
            total += counts[t]
    return positive[inverse]


def _cv_accuracy(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int) -> tuple[float, float]:
    """(out-of-fold accuracy, majority accuracy); NaN when a class is missing."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    if len(np.unique(y)) < 2 or len(np.unique(groups)) < folds:
        return np.nan, np.nan
    correct = majority = 0
    for train, test in GroupKFold(n_splits=folds).split(x, y, groups):
        if len(np.unique(y[train])) < 2:
            pred = np.full(len(test), y[train][0])
        else:
            # newton-cholesky: the same L2 logistic objective as lbfgs, exact Newton steps (fast for D/n features)
            model = LogisticRegression(solver="newton-cholesky", max_iter=100)
            pred = model.fit(x[train].astype(np.float64), y[train]).predict(x[test].astype(np.float64))
        correct += int((pred == y[test]).sum())
        majority += int(max(y[test].sum(), len(test) - y[test].sum()))
    return correct / len(y), majority / len(y)


def selectivity_table(
    store: Mapping[str, list[dict[str, Any]]],
    categories: Sequence[str],
    n_components: Mapping[str, int],
    *,
    folds: int = 3,
    seed: int = 0,
    only: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (model, layer, component, category): accuracy, control accuracy, selectivity."""
    rows = []
    for model, docs in store.items():
        if not docs:
            continue
        feats = np.concatenate([d["features"] for d in docs])  # (N, Lf, D)
        labels = np.concatenate([d["labels"] for d in docs]).astype(bool)  # (N, C)
        types = [t for d in docs for t in d["types"]]
        groups = np.concatenate([np.full(len(d["types"]), d["doc"]) for d in docs])
        layers = docs[0]["layers"]
        k = n_components[model]
        width = feats.shape[-1] // k
        for ci, cat in enumerate(categories):
            if only is not None and cat not in only:
                continue
            y = labels[:, ci]
            rate = float(y.mean()) if len(y) else 0.0
            y_ctrl = control_labels(types, rate, seed + ci)
            for li, layer in enumerate(layers):
                for comp in range(k):
                    x = feats[:, li, comp * width : (comp + 1) * width]
                    acc, majority = _cv_accuracy(x, y, groups, folds)
                    ctrl, ctrl_majority = _cv_accuracy(x, y_ctrl, groups, folds)
                    rows.append({
                        "model": model, "layer": layer, "layer_kind": "embedding" if layer == 0 else "block",
                        "component": f"e{comp}", "category": cat, "accuracy": acc, "majority": majority,
                        "control_accuracy": ctrl, "control_majority": ctrl_majority,
                        "selectivity": acc - ctrl, "n_tokens": int(len(y)), "n_positive": int(y.sum()),
                        "n_types": int(len(set(types))), "n_docs": int(len(np.unique(groups))), "folds": folds,
                    })
    return pd.DataFrame(rows)

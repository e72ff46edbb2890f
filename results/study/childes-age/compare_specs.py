"""Exploration table for issue 13 items 1-2: every candidate age model and both baselines on the same
folds (by-child GroupKFold(10) over real children, leave-one-corpus-out), plus the folder-as-child grouping
of the previous model (leaky) and a small gradient-boosting model that is not shipped.

Each candidate's own row is NOT nested (the spec is fixed, only ridge's alpha is chosen inside the training
part), so the best row here is optimistic; the shipped number is the nested one in
evalsuite/childes/data/age_model/cv_summary.csv (the spec chosen by an inner CV of each training part).

    PYTHONPATH=. python results/study/childes-age/compare_specs.py TRAINING_TABLE.csv OUT.csv

TRAINING_TABLE.csv: the training_table.csv that `evalsuite childes-age --fit` writes beside the model.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut

from evalsuite.childes import developmental_age as dev
from evalsuite.stats import bootstrap_ci

GBM_COLUMNS = ["mlu_m", "mean_aoa", "ndw_100", "overreg_rate", *dev.MODEL_RAW_FEATURES]


def gbm(train: pd.DataFrame, test: pd.DataFrame, log: bool) -> np.ndarray:
    """Fixed, a-priori hyper-parameters (no tuning): depth 3, 300 trees, learning rate 0.05, leaves >= 40."""
    model = HistGradientBoostingRegressor(max_depth=3, learning_rate=0.05, max_iter=300, min_samples_leaf=40,
                                          random_state=0)
    y = train["age_months"].to_numpy(float)
    model.fit(train[GBM_COLUMNS].to_numpy(float), np.log(y) if log else y)
    pred = model.predict(test[GBM_COLUMNS].to_numpy(float))
    return np.exp(pred) if log else pred


def main(table_path: str, out_path: str) -> None:
    table = pd.read_csv(table_path)
    cfg = dev.AgeFitConfig()
    y = table["age_months"].to_numpy(float)
    folder_child = dev.corpus_of(table) + "/" + table["child"].astype(str)  # the previous model's "child"
    methods = {s.name: (lambda tr, te, s=s: dev.fit_linear(tr, cfg, with_interval=False, spec=s).predict_point(te))
               for s in dev.SPECS}
    methods["nested_selection (shipped)"] = lambda tr, te: dev.fit_linear(tr, cfg, with_interval=False).predict_point(te)
    methods["gbm_age (not shipped)"] = lambda tr, te: gbm(tr, te, False)
    methods["gbm_log_age (not shipped)"] = lambda tr, te: gbm(tr, te, True)
    methods["mlu_only"] = lambda tr, te: dev._mlu_only(tr, te)
    methods["miller_chapman"] = lambda tr, te: dev.miller_chapman_age(te["mlu_m"])
    schemes = {"by_child": list(GroupKFold(10).split(table, groups=table["child_id"])),
               "by_corpus": list(LeaveOneGroupOut().split(table, groups=table["corpus_key"])),
               "by_folder_as_child (previous, leaky)": list(GroupKFold(10).split(table, groups=folder_child))}
    rows = []
    for scheme, folds in schemes.items():
        for name, fit_predict in methods.items():
            if scheme.startswith("by_folder") and name not in ("base_age", "nested_selection (shipped)", "mlu_only"):
                continue
            start = time.time()
            pred = np.full(len(table), np.nan)
            for tr, te in folds:
                pred[te] = fit_predict(table.iloc[tr], table.iloc[te])
            err = np.abs(pred - y)
            ci = bootstrap_ci(err, groups=table["child_id"].to_numpy(), n_boot=1000, seed=0)
            rows.append({"scheme": scheme, "method": name, "n_transcripts": len(table),
                         "n_children": table["child_id"].nunique(), "mae_months": ci.estimate, "mae_ci_low": ci.ci_low,
                         "mae_ci_high": ci.ci_high,
                         "mae_mean_over_children": float(pd.Series(err).groupby(table["child_id"]).mean().mean()),
                         "median_abs_error": float(np.median(err)), "seconds": round(time.time() - start, 1)})
            print(rows[-1], flush=True)
    pd.DataFrame(rows).to_csv(out_path, index=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

"""Exploration table for issue 13 items 1-2: every pre-declared candidate age model (developmental_age.SPECS:
five ridge specs, the ridge with the growth measures, the gradient-boosting model), the shipped nested
selection among them, both baselines and the constant negative control, on the same folds (by-child
GroupKFold(10) over real children, leave-one-corpus-out).

Each candidate's own row is NOT nested (the spec is fixed; only ridge's alpha is chosen inside the training
part), so the best single row here is optimistic; the shipped number is the nested one (the spec chosen by
an inner by-child CV of each training part), read here from the fit's cv_predictions.csv so that it is the
same number as evalsuite/childes/data/age_model/cv_summary.csv.

    PYTHONPATH=. python results/study/childes-age/compare_specs.py TRAINING_TABLE.csv CV_PREDICTIONS.csv OUT.csv

An optional 4th argument (by_child or by_corpus) runs one scheme only.
TRAINING_TABLE.csv, CV_PREDICTIONS.csv: what `evalsuite childes-age --fit` writes beside the model.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut

from evalsuite.childes import developmental_age as dev
from evalsuite.stats import bootstrap_ci


def main(table_path: str, predictions_path: str, out_path: str, only: str = "") -> None:
    table = pd.read_csv(table_path)
    shipped = pd.read_csv(predictions_path)
    cfg = dev.AgeFitConfig()
    y = table["age_months"].to_numpy(float)
    methods = {f"{s.name} (not nested)": (lambda tr, te, s=s: dev.fit_linear(tr, cfg, with_interval=False, spec=s)
                                          .predict_point(te)) for s in dev.SPECS}
    methods["mlu_only"] = lambda tr, te: dev._mlu_only(tr, te)
    methods["miller_chapman"] = lambda tr, te: dev.miller_chapman_age(te["mlu_m"])
    methods["constant (training-fold mean age)"] = lambda tr, te: np.full(len(te), tr["age_months"].mean())
    schemes = {"by_child": list(GroupKFold(cfg.n_splits).split(table, groups=table["child_id"])),
               "by_corpus": list(LeaveOneGroupOut().split(table, groups=table["corpus_key"]))}
    rows = []

    def add(scheme: str, name: str, pred: np.ndarray, seconds: float) -> None:
        err = np.abs(pred - y)
        ci = bootstrap_ci(err, groups=table["child_id"].to_numpy(), n_boot=cfg.n_boot, seed=cfg.seed)
        rows.append({"scheme": scheme, "method": name, "n_transcripts": len(table),
                     "n_children": table["child_id"].nunique(), "mae_months": ci.estimate, "mae_ci_low": ci.ci_low,
                     "mae_ci_high": ci.ci_high,
                     "mae_mean_over_children": float(pd.Series(err).groupby(table["child_id"]).mean().mean()),
                     "median_abs_error": float(np.median(err)), "seconds": round(seconds, 1)})
        print(rows[-1], flush=True)

    for scheme, folds in schemes.items():
        if only and scheme != only:  # one scheme per process (run both at once on a machine with cores)
            continue
        nested = shipped[shipped["scheme"] == scheme].set_index("file").reindex(table["file"])
        add(scheme, "nested selection among the specs (shipped)", nested["pred_age_model"].to_numpy(float), 0.0)
        for name, fit_predict in methods.items():
            start = time.time()
            pred = np.full(len(table), np.nan)
            for tr, te in folds:
                pred[te] = fit_predict(table.iloc[tr], table.iloc[te])
            add(scheme, name, pred, time.time() - start)
    pd.DataFrame(rows).to_csv(out_path, index=False)


if __name__ == "__main__":
    main(*sys.argv[1:5])

"""Register-matched comparisons: model text against children speaking in the same register.

A story is not a conversation: sentences of written stories are longer and more often past tense
than a two-year-old's turns at play. So each comparison names its pair, and only like is set
beside like:
(a) a model trained on child-directed speech ("cds") -> its utterances vs children's conversation;
(b) a model trained on stories ("stories") -> its sentences vs children's narratives where corpora
    have them: HSLLD's elicited narratives (ER, ages 3;06-6;01) and book reading (BR), Bates'
    story task (Story28, 2;04); every other transcript counts as conversation.
Children are grouped by age bins and, beside them, by Brown's MLU stages (an MLU-matched
comparison does not pool children at different stages). Child values are means over transcripts
with a cluster-bootstrap CI over children (evalsuite.stats.bootstrap_ci, groups = child).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from corpora.errors import UserError

CONVERSATION = "conversation"
NARRATIVE_REGISTERS = ("elicited narrative", "book reading", "story task")
MODEL_REGISTERS = {"cds": (CONVERSATION,), "stories": NARRATIVE_REGISTERS}
COMPARISON_LABEL = {
    "cds": "(a) model trained on child-directed speech: its utterances vs children's {register}",
    "stories": "(b) story model: its sentences vs children's {register}",
}
_RULES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"(^|/)HSLLD/[^/]+/ER/"), "elicited narrative"),
    (re.compile(r"(^|/)HSLLD/[^/]+/BR/"), "book reading"),
    (re.compile(r"(^|/)Bates/Story28/"), "story task"),
)
COMPARED = ("mlu_m", "mlu_w", "mean_aoa", "ndw_100", "overreg_rate")


def register_of(file: str) -> str:
    """The register of a transcript from its corpus path (see the module docstring)."""
    for pattern, register in _RULES:
        if pattern.search(str(file)):
            return register
    return CONVERSATION


def _child_groups(child_docs: pd.DataFrame, bin_months: int) -> list[tuple[str, str, pd.DataFrame]]:
    groups = []
    ages = child_docs["age_months"].astype(float)
    bins = (ages // bin_months * bin_months)
    for start, g in child_docs[ages.notna()].groupby(bins[ages.notna()]):
        groups.append(("age", f"{int(start)}-{int(start) + bin_months} months", g))
    for stage, g in child_docs.groupby("brown_stage"):
        if stage:
            groups.append(("brown_stage", f"stage {stage}", g))
    return groups


def register_comparison(
    child_docs: pd.DataFrame, model_docs: pd.DataFrame, model_register: str, *,
    bin_months: int = 6, n_boot: int = 1000, seed: int = 0,
) -> pd.DataFrame:
    """One row per checkpoint x matched child register x binning x bin x feature: the child mean with
    its CI, the model's value, and the difference; `comparison` says which pair it is."""
    from evalsuite.stats import bootstrap_ci

    if model_register not in MODEL_REGISTERS:
        raise UserError(f"model register must be one of {', '.join(MODEL_REGISTERS)}; got {model_register!r}")
    if child_docs.empty or model_docs.empty:
        return pd.DataFrame()
    child_docs = child_docs.assign(register=[register_of(f) for f in child_docs["file"]])
    rows = []
    for register in MODEL_REGISTERS[model_register]:
        matched = child_docs[child_docs["register"] == register]
        if matched.empty:
            continue
        label = COMPARISON_LABEL[model_register].format(register=register)
        for binning, bin_label, g in _child_groups(matched, bin_months):
            kids = g["corpus"].astype(str) + "/" + g["child"].astype(str) if "corpus" in g else g["child"]
            for feature in COMPARED:
                if feature not in g:
                    continue
                ci = bootstrap_ci(g[feature].to_numpy(float), groups=kids.to_numpy(), n_boot=n_boot, seed=seed)
                for _, m in model_docs.iterrows():
                    value = float(m.get(feature, math.nan))
                    rows.append({
                        "comparison": label, "model_register": model_register, "child_register": register,
                        "binning": binning, "bin": bin_label, "feature": feature,
                        "checkpoint_id": m["checkpoint_id"], "model_value": value,
                        "model_brown_stage": m.get("brown_stage", ""),
                        "child_mean": ci.estimate, "child_ci_low": ci.ci_low, "child_ci_high": ci.ci_high,
                        "n_transcripts": ci.n, "n_children": ci.n_groups,
                        "difference": value - ci.estimate if np.isfinite(value) else math.nan,
                        "model_inside_child_ci": bool(np.isfinite(value) and ci.ci_low <= value <= ci.ci_high),
                    })
    return pd.DataFrame(rows)

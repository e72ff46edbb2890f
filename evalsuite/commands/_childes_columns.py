"""meta.json `columns` of childes-compare's tables: what each column is and which function computed it.

Kept beside the command (the command writes the files); the functions named are in
evalsuite.childes (compare, validation, developmental_age) and evalsuite.stats.
"""

from __future__ import annotations

_C = "evalsuite.childes.compare"
_V = "evalsuite.childes.validation"
_WILSON = "evalsuite.stats.wilson_ci"
_BOOT = "evalsuite.stats.bootstrap_ci"

_GROUP = {
    "source": ("childes (a child's transcripts) or model (a checkpoint's stories)", f"{_C}.rate_table"),
    "child": ("child name (CHILDES)", "corpora.chat.read_chat"),
    "age_bin": ("child age bin in months (bin_months wide), or 'age unknown'", f"{_C}.age_bin_label"),
    "age_bin_start": ("first month of the age bin", f"{_C}.age_bin_label"),
    "checkpoint": ("model checkpoint (samples' checkpoint_id)", "evalsuite.samples.read_samples"),
    "checkpoint_id": ("samples' checkpoint_id (one defaulting rule)", "evalsuite.samples.read_samples"),
    "model_family": ("spinnet or baseline", "evalsuite.samples.read_samples"),
    "val_loss": ("checkpoint's validation loss, nats/token", "evalsuite.samples.read_samples"),
    "val_bpc": ("checkpoint's validation loss, bits per character", "evalsuite.samples.read_samples"),
    "unit": ("unit of analysis (utterance for children, sentence for stories)", f"{_C}.rate_table"),
    "file": ("CHAT transcript file", "corpora.chat.read_chat"),
    "age_months": ("child age in months from the transcript header", "corpora.chat.read_chat"),
    "doc_id": ("document: transcript file or checkpoint#sample", f"{_C}.analyze_stories"),
    "text": ("the unit's text", f"{_C}.analyze_stories"),
}
def _error_columns(prefix: str, definition: str, computed_by: str) -> dict[str, tuple[str, str]]:
    from evalsuite.childes.detectors import ERROR_TYPES

    return {f"{prefix}{t}": (definition.format(t=t), computed_by) for t in ERROR_TYPES}


def _tables() -> dict[str, dict[str, tuple[str, str]]]:
    rates = {"error_type": ("detector error type (type/kind for a sub-kind)", f"{_C}.rate_table"),
             "rate": ("units with >= 1 hit of the type, per 100 units", f"{_C}.rate_table"),
             "ci_low": ("Wilson 95% lower bound of rate (units independent)", _WILSON),
             "ci_high": ("Wilson 95% upper bound of rate", _WILSON),
             "n": ("units in the group", f"{_C}.rate_table"),
             "count": ("units with >= 1 hit", f"{_C}.rate_table"),
             "hits": ("hits of the type (a unit can have several)", f"{_C}.rate_table")}
    measures = {"measure": ("mlu_morphemes, mlu_words, clause_density (per unit), mattr, ttr (per document)",
                            f"{_C}.measure_table"),
                "value": ("mean of the measure over units (or documents)", _BOOT),
                "ci_low": ("percentile bootstrap 95% lower bound (units, or documents)", _BOOT),
                "ci_high": ("percentile bootstrap 95% upper bound", _BOOT),
                "n": ("units (or documents) averaged", f"{_C}.measure_table"),
                "ci_method": ("what was resampled", f"{_C}.measure_table")}
    return {
        "rates.csv": {**_GROUP, **rates},
        "measures.csv": {**_GROUP, **measures},
        "validation.csv": {
            "target": ("detector target checked against human codes", f"{_V}.validate_detectors"),
            "detector": ("detector error type", f"{_V}.validate_detectors"),
            "codes": ("CHAT error codes that count as this target", f"{_V}.validate_detectors"),
            "n_codes": ("human codes of the target on the CHI tier", f"{_V}.validate_detectors"),
            "n_hits": ("detector hits", f"{_V}.validate_detectors"),
            "tp_codes": ("codes overlapped by a hit", f"{_V}.validate_detectors"),
            "tp_hits": ("hits overlapping a code", f"{_V}.validate_detectors"),
            "precision": ("tp_hits / n_hits (a lower bound: coding is not exhaustive)", f"{_V}.validate_detectors"),
            "precision_ci_low": ("95% lower bound of precision, cluster bootstrap over transcripts", _BOOT),
            "precision_ci_high": ("95% upper bound of precision, cluster bootstrap over transcripts", _BOOT),
            "recall": ("tp_codes / n_codes", f"{_V}.validate_detectors"),
            "recall_ci_low": ("95% lower bound of recall, cluster bootstrap over transcripts", _BOOT),
            "recall_ci_high": ("95% upper bound of recall, cluster bootstrap over transcripts", _BOOT),
            "hits_on_other_codes": ("hits overlapping codes of other targets", f"{_V}.validate_detectors"),
            "precision_any_code": ("hits overlapping any human code / n_hits (any error type coded there)",
                                   f"{_V}.validate_detectors"),
            "n_transcripts": ("transcripts scored (the bootstrap's clusters)", f"{_V}.validate_by_split"),
            "ci_method": ("how the intervals were computed (cluster bootstrap over transcripts)", _BOOT),
            "split": ("development (Brown, used while writing the rules) or scoring (every other corpus)",
                      f"{_V}.validate_by_split"),
            "corpora": ("corpora in the split", f"{_V}.validate_by_split"),
            "note": ("caveat for this target", f"{_V}.validate_detectors")},
        "validation_disagreements.csv": {
            "target": ("detector target", f"{_V}.validate_detectors"),
            "unit": ("unit row", f"{_V}.validate_detectors"),
            "text": ("unit text", f"{_V}.validate_detectors"),
            "missed": ("code without hit, or hit without code", f"{_V}.validate_detectors"),
            "span": ("character span of the code or hit", f"{_V}.validate_detectors"),
            "code": ("the human code", f"{_V}.validate_detectors"),
            "file": ("CHAT transcript of the unit", "corpora.chat.read_chat"),
            "on_other_code": ("the hit overlaps a human code of another target", f"{_V}.validate_detectors"),
            "split": ("development (Brown) or scoring split", f"{_V}.validate_by_split")},
        "human_codes.csv": {"code": ("CHAT error code on the CHI tier", f"{_V}.code_inventory"),
                            "count": ("occurrences", f"{_V}.code_inventory")},
        "mlu_agreement.csv": {
            "file": _GROUP["file"], "child": _GROUP["child"], "age_months": _GROUP["age_months"],
            "n_utterances": ("CHI utterances", f"{_V}.mlu_agreement"),
            "mlu_m_text": ("MLU in morphemes from our parse of the text", f"{_V}.mlu_agreement"),
            "mlu_m_mor": ("MLU in morphemes from the %mor tier (CLAN)", f"{_V}.mlu_agreement"),
            "mlu_w_text": ("MLU in words from our tokenisation", f"{_V}.mlu_agreement"),
            "mlu_w_chat": ("MLU in words as CLAN counts them", f"{_V}.mlu_agreement"),
            "diff_m": ("mlu_m_text - mlu_m_mor", f"{_V}.mlu_agreement"),
            "diff_w": ("mlu_w_text - mlu_w_chat", f"{_V}.mlu_agreement")},
        "hits.csv": {
            **_GROUP,
            "unit_row": ("row of the unit in units.parquet", f"{_C}.hits_table"),
            "error_type": ("detector error type", f"{_C}.hits_table"),
            "kind": ("sub-kind of the error", f"{_C}.hits_table"),
            "start": ("character start of the hit in the unit", f"{_C}.hits_table"),
            "end": ("character end", f"{_C}.hits_table"),
            "unit_text": ("the unit's text", f"{_C}.hits_table")},
        "units.parquet": {
            **_GROUP,
            **_error_columns("has_", "whether the unit has a {t} hit", "evalsuite.childes.detectors.iter_detect"),
            "unit_index": ("unit number within its document", f"{_C}.analyze_stories"),
            "n_words": ("words of the unit", "evalsuite.childes.measures"),
            "n_morphemes": ("morphemes of the unit", "evalsuite.childes.measures"),
            "n_clauses": ("clauses of the unit", "evalsuite.childes.measures"),
            "hits": ("detector hits (JSON list)", "evalsuite.childes.detectors.iter_detect"),
            "corpus": ("CHILDES corpus", "corpora.chat.read_chat"),
            "utt_index": ("utterance index in the transcript", "corpora.chat.read_chat"),
            "annotations": ("human error codes with spans (JSON list)", "corpora.chat.read_chat"),
            "mor_morphemes": ("morphemes from the %mor tier", "evalsuite.childes.measures.mor_morphemes"),
            "mor_n_items": ("%mor items", "corpora.chat.read_chat"),
            "clan_words": ("words as CLAN counts them", "corpora.chat.read_chat"),
            "sample_index": ("row of the sample in the samples files", f"{_C}.analyze_stories"),
            "samples_file": ("samples.jsonl the story came from", "evalsuite.samples.read_samples"),
            "line": ("its line", "evalsuite.samples.read_samples")},
    }

_D = "evalsuite.childes.developmental_age"


def _dev_age_tables() -> dict[str, dict[str, tuple[str, str]]]:
    from evalsuite.commands.childes_age import COLUMN_DEFS

    summary = {
        "scheme": ("cross-validation scheme: by child (grouped K-fold) or by corpus (leave one corpus out)",
                   f"{_D}.cross_validate"),
        "method": ("age_model, mlu_only (MLU-m alone), miller_chapman (the 1981 MLU-for-age norm) or constant (the "
                   "negative control: every test transcript gets the training fold's mean age)", f"{_D}.cv_summary"),
        "method_label": ("the method in words (developmental_age.METHOD_LABELS)", f"{_D}.cv_summary"),
        "n_transcripts": ("test transcripts", f"{_D}.cv_summary"),
        "n_children": ("test children (groups)", f"{_D}.cv_summary"),
        "n_folds": ("folds", f"{_D}.cv_summary"),
        "mae_months": ("mean |predicted - true age| over test transcripts", _BOOT),
        "mae_ci_low": ("95% CI of the MAE, children resampled", _BOOT),
        "mae_ci_high": ("95% CI of the MAE, children resampled", _BOOT),
        "mae_mean_over_children": ("mean of the per-child MAEs", f"{_D}.cv_summary"),
        "bias_months": ("mean predicted - true age", f"{_D}.cv_summary"),
        "mae_minus_age_model": ("paired MAE difference (method - age model)", _BOOT),
        "diff_ci_low": ("95% CI of the paired difference, children resampled", _BOOT),
        "diff_ci_high": ("95% CI of the paired difference, children resampled", _BOOT),
        "interval_coverage": ("share of test transcripts whose true age lies in the interval", f"{_D}.cv_summary"),
        "share_in_range": ("share of test transcripts given an age (in_range)", f"{_D}.cv_summary"),
        "mae_in_range_only": ("MAE over the in-range test transcripts", f"{_D}.cv_summary"),
    }
    ages = {c: (d, f"{_D}.apply_model") for c, d in COLUMN_DEFS.items()}
    ages |= {"run": ("training run of the checkpoint (samples' run, else checkpoint folder)", f"{_D}.apply_model"),
             "val_loss": ("checkpoint's validation loss, nats/token", "evalsuite.samples.read_samples"),
             "val_bpc": ("checkpoint's validation loss, bits per character", "evalsuite.samples.read_samples"),
             "n_utterances": ("utterances (sentences of model text) the features rest on", f"{_D}.apply_model"),
             "mlu_w": ("mean length of utterance in words", "evalsuite.childes.age_features.document_features"),
             "words": ("word tokens counted", "evalsuite.childes.age_features.document_features"),
             "morphemes": ("morphemes counted (MLU-m numerator)", "evalsuite.childes.age_features.document_features"),
             "n_overreg": ("over-regularised forms found", "evalsuite.childes.age_features.document_features"),
             "n_irregular_context": ("irregular past/plural contexts (the rate's denominator)",
                                     "evalsuite.childes.age_features.document_features"),
             "aoa_sum": ("sum of the rated words' AoA (mean_aoa numerator)", "evalsuite.aoa.mean_aoa"),
             "n_aoa": ("word tokens with an AoA rating", "evalsuite.aoa.mean_aoa"),
             "model_family": ("spinnet or baseline", "evalsuite.samples.read_samples")}
    return {"dev_age_cv_summary.csv": summary, "checkpoint_dev_ages.csv": ages}


def childes_columns(frames: dict) -> dict[str, dict[str, dict[str, str]]]:
    """`columns` for the written tables ({file name: DataFrame}); every column must be defined."""
    from evalsuite.childes.compare import CHAT_ISSUE_DEFS
    from evalsuite.results import column, describe_columns

    tables = _tables() | _dev_age_tables() | {"chat_issues.csv": CHAT_ISSUE_DEFS}
    return {name: describe_columns(frame.columns, {c: column(*e) for c, e in tables[name].items()}, name)
            for name, frame in frames.items()}

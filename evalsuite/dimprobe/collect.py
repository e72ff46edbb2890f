"""Run models over tagged text and accumulate per-component magnitudes by category, streaming.

The unit of analysis is a model token in an analysed part of a document; the unit of resampling is
the document. For every model, layer l (hidden index: 0 = embedding output, i = after block i) and
component k, a token's value is (statistic "share", the default) ||h_l[t, k]|| / ||h_l[t]||, the
component's share of the token's whole hidden-vector norm (the n shares of a token have squares
summing to 1), or (statistic "norm") the raw L2 norm ||h_l[t, k*D/n:(k+1)*D/n]||_2. Raw norms move
together whenever the whole vector's norm changes from token to token (a shift shared by all n
components that says nothing about any one of them); the share divides that shift out per token.

Memory is O(layers x components x categories), plus small per-document sums that the document
bootstrap needs (O(documents x layers x components x categories) float32, never per token):

- per document: token count N_d, category counts n_dc, sums of values over all tokens and over the
  tokens of each category, and the sum of squares over all tokens;
- over all documents: per-category sums of squares, and the label-permutation null (below).

Within-document label permutation, vectorised. Labels belong to words (spaCy tokens), so the
exchangeable units are the words of a document: the null shuffles the words' label vectors among
the document's words, and every model token keeps the word it belongs to. (Shuffling single model
tokens would treat the characters of one word as independent draws and make p-values too small for
a character-level model.) A word's value is the sum of its tokens' magnitudes and its weight their
count; the permuted category sum S* and token count n* of document d are those of a uniformly random
subset of W_dc words, independent across documents. For each document and replicate we draw one
random permutation of its words and read every category's subset off its prefixes (a subset of size
W is the first W words; when W > U/2 we use the total minus the first U - W): per block of
replicates, one fused gather-and-sum (`embedding_bag`) gives the sums of the words between
consecutive prefix sizes (segments), and one GEMM with a signed (categories x segments) selection
turns them into every category's permuted sums. Each category's null distribution is
exactly the within-document permutation distribution; replicates are shared across categories,
layers and components, which keeps the cost at about P x U/2 x (layers x components) additions per
document. The permutation of document d, replicate p depends only on (seed, d), so models that
share a tokenizer are tested against the same permutations (a paired design). Model tokens that
belong to no word (whitespace) carry no label and are no unit; they count only in the overall mean.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from corpora.errors import UserError
from evalsuite.dimprobe.align import align_tokens, token_labels

# --- documents ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeText:
    """A text to probe. Only characters from `analyse_from` on are analysed (a sample's completion
    after its prompt); the whole text is tagged and fed to the model as context."""

    text: str
    analyse_from: int = 0
    source: str = ""


@dataclass
class PreparedDoc:
    """One document tokenized for one tokenizer, with category labels per model token."""

    index: int
    ids: np.ndarray  # (T,) int64, the whole text
    labels: np.ndarray  # (T, C) bool
    analysed: np.ndarray  # (T,) bool: tokens that start at or after analyse_from
    n_chars: int  # characters of the analysed part (for bits per character)
    n_unaligned: int  # analysed tokens that belong to no spaCy word (whitespace)
    units: np.ndarray | None = None  # (N_analysed,) word unit of each analysed token, -1 = none
    unit_labels: np.ndarray | None = None  # (U, C) labels of the units (words)
    unit_words: np.ndarray | None = None  # (U,) index of each unit's spaCy word in the document

    @property
    def n_analysed(self) -> int:
        return int(self.analysed.sum())

    def analysed_units(self) -> tuple[np.ndarray, np.ndarray]:
        """(units, unit_labels) of the analysed tokens; every token its own unit when not aligned
        to words (synthetic documents)."""
        if self.units is not None and self.unit_labels is not None:
            return self.units, self.unit_labels
        lab = self.labels[self.analysed]
        return np.arange(len(lab)), lab


def prepare_doc(
    index: int,
    text: ProbeText,
    word_starts: np.ndarray,
    word_ends: np.ndarray,
    word_labels: np.ndarray,
    tokenizer: Any,
) -> PreparedDoc:
    """Tokenize with offsets, align tokens to spaCy words, give tokens their words' labels."""
    ids, offsets = tokenizer.encode_with_offsets(text.text)
    offs = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    word_index = align_tokens(offs, word_starts, word_ends, text.text)
    labels = token_labels(word_index, word_labels)
    analysed = offs[:, 0] >= text.analyse_from if len(offs) else np.zeros(0, dtype=bool)
    words = word_index[analysed]
    aligned = words >= 0
    unit_words, inverse = np.unique(words[aligned], return_inverse=True)
    units = np.full(len(words), -1, dtype=np.int64)
    units[aligned] = inverse
    return PreparedDoc(
        index=index,
        ids=np.asarray(ids, dtype=np.int64),
        labels=labels,
        analysed=analysed,
        n_chars=len(text.text) - text.analyse_from,
        n_unaligned=int((~aligned).sum()),
        units=units,
        unit_labels=word_labels[unit_words],
        unit_words=unit_words,
    )


# --- models -------------------------------------------------------------------------------------


@dataclass
class ModelUnderProbe:
    """A model plus what the probe needs to run it."""

    name: str  # "probe", "untrained", "baseline", ...
    model: torch.nn.Module
    tokenizer: Any
    block_size: int  # window length the model was trained with
    n_components: int
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return len(self.model.blocks)


class _StopForward(Exception):
    """Raised by a hook once the last needed residual state is captured (skips later blocks and the
    vocabulary head, about half the cost of a GPT-2-vocabulary model)."""


@contextmanager
def capture_residuals(model: torch.nn.Module, layers: Sequence[int], stop: bool) -> Iterator[dict[int, Any]]:
    """Record residual states at hidden indices `layers` (0 = input of block 0 = embedding output,
    i = output of block i) with hooks on `model.blocks`. Hooks registered earlier (ablation, planted
    signals) act first, so the captured states include their edits."""
    store: dict[int, Any] = {}
    handles = []
    last = max(layers)
    blocks = model.blocks
    if 0 in layers:
        def pre_hook(module: Any, args: tuple) -> None:
            store[0] = args[0]
            if stop and last == 0:
                raise _StopForward

        handles.append(blocks[0].register_forward_pre_hook(pre_hook))
    for i, block in enumerate(blocks):
        if i + 1 not in layers:
            continue

        def hook(module: Any, args: tuple, out: Any, layer: int = i + 1) -> None:
            store[layer] = out
            if stop and layer == last:
                raise _StopForward

        handles.append(block.register_forward_hook(hook))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


STATISTICS = ("share", "norm")


@dataclass
class DocOutputs:
    """Per analysed token of one document: component values, next-token loss, feature vectors."""

    mags: np.ndarray | None  # (N, L, K) float32: shares or norms (see `statistic`)
    nll: np.ndarray | None  # (N,) float32, nats: loss of predicting the NEXT token from this position
    features: np.ndarray | None = None  # (N, Lf, D) float32: h / ||h|| at the feature layers
    state_sum: np.ndarray | None = None  # (Ls, D) float64: sum of h over the analysed tokens


def plan_windows(n_tokens: int, block_size: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows over seq = [eot] + tokens (length n_tokens + 1): (start, end, first_credited).

    Token i sits at seq position i + 1. Each seq position j >= 1 is credited to exactly one window
    (the first that reaches it); after the first window every credited position has at least
    block_size - stride positions of context inside its window.
    """
    length = n_tokens + 1
    if length <= block_size:
        return [(0, length, 1)]
    windows = []
    start, credited_to = 0, 1
    while True:
        end = min(start + block_size, length)
        windows.append((start, end, credited_to))
        if end == length:
            return windows
        credited_to = end
        start += stride


def forward_docs(
    run: ModelUnderProbe,
    docs: Sequence[PreparedDoc],
    layers: Sequence[int],
    *,
    need_mags: bool = True,
    need_nll: bool = False,
    batch_tokens: int = 4096,
    stride: int | None = None,
    statistic: str = "share",
    feature_layers: Sequence[int] = (),
    sum_layers: Sequence[int] = (),
) -> list[DocOutputs]:
    """Run `run.model` over the documents in windows and return per-analysed-token outputs.

    Position convention (shared by the probe and the ablation): everything reported for token i
    comes from the residual state AT token i: its component values, and its loss, which is the loss
    of predicting token i + 1 (the end-of-text id after the last token) from that state. An
    ablation's loss change on a NOUN token is thus measured where the probe reads the NOUN state.
    `feature_layers`: also return h / ||h|| per analysed token there (selectivity probes);
    `sum_layers`: also return the sum of h over the analysed tokens (for mean-ablation)."""
    if statistic not in STATISTICS:
        raise UserError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    model = run.model
    block = run.block_size
    if stride is None:
        stride = max(1, block // 2)
    elif not 0 < stride < block:
        raise UserError(f"window stride must be in 1..{block - 1} for block size {block}, got {stride}")
    eot = run.tokenizer.eot_id
    k = run.n_components
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or 50_000
    if need_nll:  # full logits are materialised: cap them at ~256 MB per forward
        batch_tokens = max(block, min(batch_tokens, (1 << 26) // vocab))
    # seq = [eot] + ids + [eot]: the model reads seq[:-1]; the trailing eot is only a target
    seqs = [np.concatenate([[eot], d.ids, [eot]]).astype(np.int64) for d in docs]
    mags = [np.zeros((len(d.ids), len(layers), k), dtype=np.float32) if need_mags else None for d in docs]
    nll = [np.zeros(len(d.ids), dtype=np.float32) if need_nll else None for d in docs]
    feat_layers, sum_layer_list = list(feature_layers), list(sum_layers)
    width_d = getattr(getattr(model, "config", None), "d_model", 0)
    feats = [np.zeros((len(d.ids), len(feat_layers), width_d), dtype=np.float32) if feat_layers else None
             for d in docs]
    sums = [np.zeros((len(sum_layer_list), width_d)) if sum_layer_list else None for d in docs]
    capture = sorted(set(layers) | set(feat_layers) | set(sum_layer_list)) if (need_mags or feat_layers
                                                                             or sum_layer_list) else []
    windows = [
        (di, a, b, c) for di, d in enumerate(docs) if len(d.ids) for (a, b, c) in plan_windows(len(d.ids), block, stride)
    ]
    windows.sort(key=lambda w: w[2] - w[1], reverse=True)
    batches: list[list[tuple[int, int, int, int]]] = []
    for w in windows:  # widest first, so a batch's first window sets its padded width
        if batches and (len(batches[-1]) + 1) * (batches[-1][0][2] - batches[-1][0][1]) <= batch_tokens:
            batches[-1].append(w)
        else:
            batches.append([w])
    layer_list = list(layers)
    with torch.inference_mode():
        for batch in batches:
            width = batch[0][2] - batch[0][1]
            idx = torch.full((len(batch), width), eot, dtype=torch.long)
            for row, (di, a, b, _c) in enumerate(batch):
                idx[row, : b - a] = torch.from_numpy(seqs[di][a:b])
            logits = None
            store: dict[int, Any] = {}
            if capture:
                with capture_residuals(model, capture, stop=not need_nll) as store, suppress(_StopForward):
                    logits = model(idx).logits
            else:
                logits = model(idx).logits
            if need_mags:
                states = torch.stack([store[layer] for layer in layer_list], dim=2).float()  # (B, T, L, D)
                bsz, t, n_l, d = states.shape
                comp = torch.linalg.vector_norm(states.view(bsz, t, n_l, k, d // k), dim=-1)
                if statistic == "share":  # ||h_k|| / ||h||, from the component norms (sum of squares)
                    comp = comp / comp.square().sum(dim=-1, keepdim=True).sqrt().clamp_min(1e-30)
                comp_np = comp.numpy()
            if feat_layers:
                fstates = torch.stack([store[layer] for layer in feat_layers], dim=2).float()
                fstates = (fstates / torch.linalg.vector_norm(fstates, dim=-1, keepdim=True).clamp_min(1e-30)).numpy()
            if need_nll:  # one loss call per batch: the state at seq position j predicts seq[j + 1]
                assert logits is not None
                rows = torch.cat([torch.full((b - c,), r) for r, (_, a, b, c) in enumerate(batch)])
                cols = torch.cat([torch.arange(c - a, b - a) for _, a, b, c in batch])
                targets = torch.from_numpy(np.concatenate([seqs[di][c + 1 : b + 1] for di, _a, b, c in batch]))
                flat = F.cross_entropy(logits[rows, cols].float(), targets, reduction="none").numpy()
            at = 0
            for row, (di, a, b, c) in enumerate(batch):
                # seq positions c..b-1 are tokens c-1..b-2
                if need_mags:
                    mags[di][c - 1 : b - 1] = comp_np[row, c - a : b - a]
                if feat_layers:
                    feats[di][c - 1 : b - 1] = fstates[row, c - a : b - a]
                if sum_layer_list:
                    keep = docs[di].analysed[c - 1 : b - 1]
                    for si, layer in enumerate(sum_layer_list):
                        sums[di][si] += store[layer][row, c - a : b - a][torch.from_numpy(keep)].double().sum(0).numpy()
                if need_nll:
                    nll[di][c - 1 : b - 1] = flat[at : at + b - c]
                at += b - c
    out = []
    for di, d in enumerate(docs):
        keep = d.analysed
        out.append(DocOutputs(
            mags=mags[di][keep] if need_mags else None,
            nll=nll[di][keep] if need_nll else None,
            features=feats[di][keep] if feat_layers else None,
            state_sum=sums[di],
        ))
    return out


# --- permutations -------------------------------------------------------------------------------


@dataclass
class PermutationPlan:
    """Random word prefixes for one batch of documents (shared by every model with the same tokenizer).

    For document j: `cuts[j]` (sorted distinct subset sizes needed), `cat_cols[j]` (categories with
    0 < W < U words), `cat_cut[j]` (which cut each of those categories reads), `cat_complement[j]`
    (read total minus prefix), `full_cols[j]` (categories holding every word). `chunks` holds, per
    block of replicates, the `indices`/`offsets` of one `embedding_bag` over the batch's concatenated
    unit rows, its bags in (segment, replicate) order (see `_segment_major`)."""

    n_permutations: int
    cuts: list[np.ndarray]
    cat_cols: list[np.ndarray]
    cat_cut: list[np.ndarray]
    cat_complement: list[np.ndarray]
    full_cols: list[np.ndarray]
    chunks: list[tuple[int, int, torch.Tensor, torch.Tensor]]  # (first replicate, replicates, indices, offsets)
    out_rows: list[tuple[int, int]]  # per doc: (first segment within a replicate's R segments, count)
    _selection: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def selection(self, n_categories: int) -> np.ndarray:
        """(C, R) float32 signed selection of the batch's segment sums: +1 where category c's prefix
        in its document holds segment r, -1 for a complement (total minus prefix). It depends on the
        documents' words only, so every model with this plan uses the one matrix (made once)."""
        if n_categories not in self._selection:
            n_segments = sum(n for _, n in self.out_rows)
            select = np.zeros((n_categories, n_segments), dtype=np.float32)
            for j, (first, n_seg) in enumerate(self.out_rows):
                if n_seg == 0:
                    continue
                comp = self.cat_complement[j]
                upto = (np.arange(n_seg)[None, :] <= self.cat_cut[j][:, None]).astype(np.float32)
                np.add.at(select, (self.cat_cols[j][:, None], first + np.arange(n_seg)[None, :]),
                          upto * np.where(comp, -1.0, 1.0).astype(np.float32)[:, None])
            self._selection[n_categories] = select
        return self._selection[n_categories]


def _partial_permutations(rng: np.random.Generator, n: int, p: int, m: int) -> np.ndarray:
    """(p, m): the first m entries of p independent uniform permutations of range(n) (a partial
    Fisher-Yates shuffle, vectorised over the p rows)."""
    perm = np.tile(np.arange(n, dtype=np.int64), p)
    base = np.arange(p, dtype=np.int64) * n
    draws = rng.random((m, p))
    for i in range(m):
        here = base + i
        there = here + (draws[i] * (n - i)).astype(np.int64)
        swap = perm[here]
        perm[here] = perm[there]
        perm[there] = swap
    return perm.reshape(p, n)[:, :m]


def _batched_partial_permutations(shuffles: Sequence[tuple[int, int, np.ndarray, int]], p: int) -> list[np.ndarray]:
    """[_partial_permutations(rng_j, U_j, p, m_j) + row_j for each document], from each document's
    draws (rng_j.random((m_j, p)), drawn as _partial_permutations draws them), with the Fisher-Yates
    steps of all the batch's documents run together: step i swaps in every document with m_j > i,
    the same swaps with the same draws (each document's swaps touch only its own rows), so the
    permutations are identical; the Python loop runs max m_j times instead of sum m_j."""
    if not shuffles:
        return []
    order = sorted(range(len(shuffles)), key=lambda j: -shuffles[j][1])  # longest prefix first
    sizes = [shuffles[j][0] * p for j in order]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    # the unit ids in the smallest integer type that holds them (the swaps move P x U entries per document)
    most = max(shuffles[j][0] for j in order)
    dtype = np.int16 if most < 2**15 else (np.int32 if most < 2**31 else np.int64)
    perm = np.empty(int(sum(sizes)), dtype=dtype)
    for start, j in zip(starts, order, strict=True):
        n_units = shuffles[j][0]
        perm[start : start + n_units * p].reshape(p, n_units)[:] = np.arange(n_units, dtype=dtype)
    base = np.concatenate([start + np.arange(p, dtype=np.int64) * shuffles[j][0]
                           for start, j in zip(starts, order, strict=True)])  # (docs * p,)
    steps = np.asarray([shuffles[j][1] for j in order])
    # the swap distances of every step, one document at a time (the same product and truncation as
    # step by step); step i reads only the documents with m_j > i, so the rest stays unset
    jumps = np.empty((int(steps[0]), len(order) * p), dtype=np.int64)
    for slot, j in enumerate(order):
        n_units, n_steps, draws = shuffles[j][0], shuffles[j][1], shuffles[j][2]
        left = n_units - np.arange(n_steps, dtype=np.int64)  # units not yet placed at step i
        jumps[:n_steps, slot * p : (slot + 1) * p] = (draws * left[:, None]).astype(np.int64)
    for i in range(int(steps[0])):
        width = int((steps > i).sum()) * p  # the documents still shuffling: a prefix of `order`
        here = base[:width] + i
        there = here + jumps[i, :width]
        swap = perm.take(here)
        perm[here] = perm.take(there)
        perm[there] = swap
    out: list[np.ndarray] = [np.empty(0)] * len(shuffles)
    for start, j in zip(starts, order, strict=True):
        n_units, m, _draws, row = shuffles[j]
        out[j] = perm[start : start + n_units * p].reshape(p, n_units)[:, :m].astype(np.int64) + row
    return out


def plan_permutations(
    unit_labels: Sequence[np.ndarray], doc_indices: Sequence[int], n_permutations: int, seed: int
) -> PermutationPlan:
    """Draw the permutations of a batch of documents (`unit_labels[j]`: (U_j, C) word labels)."""
    p = n_permutations
    cuts_l, cols_l, cut_l, comp_l, full_l = [], [], [], [], []
    seg_parts: list[np.ndarray] = []  # segment starts of document j within one replicate's index run
    out_rows: list[tuple[int, int]] = []
    shuffles: list[tuple[int, int, np.ndarray, int]] = []  # (U_j, m_j, draws, first unit row) per document
    row, pos, out_row = 0, 0, 0
    for lab, doc_index in zip(unit_labels, doc_indices, strict=True):
        n_units = lab.shape[0]
        counts = lab.sum(axis=0)
        cols = np.flatnonzero((counts > 0) & (counts < n_units))
        need = np.minimum(counts[cols], n_units - counts[cols])
        cuts = np.unique(need)
        cuts_l.append(cuts)
        cols_l.append(cols)
        cut_l.append(np.searchsorted(cuts, need))
        comp_l.append(counts[cols] > n_units - counts[cols])
        full_l.append(np.flatnonzero((counts == n_units) & (n_units > 0)))
        if len(cuts):
            m = int(cuts[-1])
            rng = np.random.default_rng([seed, doc_index])
            shuffles.append((n_units, m, rng.random((m, p)), row))  # _partial_permutations' draws
            seg_parts.append(pos + np.concatenate([[0], cuts[:-1]]))
            pos += m
            out_rows.append((out_row, len(cuts)))
            out_row += len(cuts)
        else:
            out_rows.append((out_row, 0))
        row += n_units
    perm_parts = _batched_partial_permutations(shuffles, p)
    chunks = []
    if perm_parts:
        # (P, M): replicate p's permuted unit rows, doc after doc; int32 indices where they fit (embedding_bag
        # reads them faster; the same sums)
        index_type = np.int32 if row < 2**31 else np.int64
        flat = np.concatenate(perm_parts, axis=1, dtype=index_type)
        lengths = np.diff(np.append(np.concatenate(seg_parts), pos))  # (R,) segment lengths
        step = max(1, min(p, CHUNK_BAGS // len(lengths)))
        patterns: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per block height: the same gather
        for first in range(0, p, step):
            block = flat[first : first + step]
            if block.shape[0] not in patterns:
                where, offsets = _segment_major(block.shape[0], lengths)
                patterns[block.shape[0]] = where, offsets.astype(index_type)
            where, offsets = patterns[block.shape[0]]
            chunks.append((first, block.shape[0], torch.from_numpy(block.ravel()[where]), torch.from_numpy(offsets)))
    return PermutationPlan(p, cuts_l, cols_l, cut_l, comp_l, full_l, chunks, out_rows)


# Bags per embedding_bag call: about CHUNK_BAGS x (LK + 1) float32 segment sums (~2.4 MB at 73 columns,
# so the GEMM reads them from cache) live at once, instead of all P x R of the batch (hundreds of MB).
CHUNK_BAGS = 1 << 13


def _segment_major(n: int, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a block (n, M) of replicates' permuted unit rows, whose segment r is the columns
    [start_r, start_r + lengths[r]) of every row: the positions in block.ravel() of the bags'
    entries and the bags' offsets, for the bags (segment r, replicate p), bag r * n + p summing
    block[p, segment r]. Segment-major bags make the embedding_bag output an (R, n x (LK + 1))
    matrix, so one GEMM with the (C, R) selection gives every replicate's category sums, and
    consecutive bags read the same document's rows (they stay in cache)."""
    m_total = int(lengths.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    sizes = lengths * n  # entries of segment r's n bags
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    local = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(first, sizes)
    rep_len = np.repeat(lengths, sizes)
    rows, within = np.divmod(local, rep_len)
    where = rows * m_total + np.repeat(starts, sizes) + within
    bag_len = np.repeat(lengths, n)
    offsets = np.concatenate([[0], np.cumsum(bag_len)[:-1]]).astype(np.int64)
    return where, offsets


# --- accumulation -------------------------------------------------------------------------------


@dataclass
class Accumulated:
    """Everything the statistics need, for one model. Values are flattened as (L*K) = layer-major.

    Token level (all analysed tokens): doc_n_total, doc_sum, doc_sumsq, and per category doc_n_cat,
    doc_cat_sum, cat_sumsq. Word-unit level (the permutation units): doc_units, doc_units_cat,
    doc_unit_n (tokens in units), doc_unit_n2 (sum of squared unit token counts), doc_unit_sum,
    doc_unit_s2 (sum of squared unit sums), doc_unit_sn (sum of unit sum x unit count)."""

    layers: list[int]
    n_components: int
    categories: list[str]
    doc_ids: np.ndarray  # (D,) document indices
    doc_n_total: np.ndarray  # (D,) analysed tokens
    doc_n_cat: np.ndarray  # (D, C) tokens per category
    doc_sum: np.ndarray  # (D, LK) float64
    doc_sumsq: np.ndarray  # (D, LK) float64
    doc_cat_sum: np.ndarray  # (D, C, LK) float32
    cat_sumsq: np.ndarray  # (C, LK) float64, over all documents
    doc_units: np.ndarray  # (D,) words
    doc_units_cat: np.ndarray  # (D, C) words per category
    doc_unit_n: np.ndarray  # (D,)
    doc_unit_n2: np.ndarray  # (D,)
    doc_unit_sum: np.ndarray  # (D, LK)
    doc_unit_s2: np.ndarray  # (D, LK)
    doc_unit_sn: np.ndarray  # (D, LK)
    perm_sum: np.ndarray | None  # (C, P, LK) float64: permuted category sums over all documents
    perm_n: np.ndarray | None  # (C, P) float64: permuted category token counts over all documents

    @property
    def n_lk(self) -> int:
        return len(self.layers) * self.n_components


def _segment_sums(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sums of consecutive runs of `counts[j]` rows of `values` (empty runs sum to 0)."""
    out = np.zeros((len(counts), *values.shape[1:]), dtype=values.dtype)
    nonempty = counts > 0
    if nonempty.any():
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        out[nonempty] = np.add.reduceat(values, starts[nonempty], axis=0)
    return out


def _unit_starts(unit: np.ndarray) -> np.ndarray | None:
    """Where each unit's run of tokens starts, when unit ids arrive sorted (tokens of a word are
    consecutive); None otherwise."""
    if len(unit) == 0 or not np.all(np.diff(unit) >= 0):
        return None
    return np.flatnonzero(np.concatenate([[True], np.diff(unit) > 0]))


def _unit_sums(
    values: np.ndarray, unit: np.ndarray, n_units: int, starts: np.ndarray | None | bool = True
) -> np.ndarray:
    """(n_units, LK) sums of token rows per unit. Tokens of a word are consecutive, so unit ids
    arrive sorted and one reduceat does it; np.add.at covers anything else. `starts`: the
    `_unit_starts(unit)` already known (True: find them here)."""
    out = np.zeros((n_units, values.shape[1]))
    if len(unit) == 0:
        return out
    if starts is True:
        starts = _unit_starts(unit)
    if isinstance(starts, np.ndarray):
        out[unit[starts]] = np.add.reduceat(values, starts, axis=0)
    else:
        np.add.at(out, unit, values)
    return out


@dataclass
class BatchLayout:
    """What `Accumulator.add_batch` derives from a batch's words alone, not from a model's values:
    the same for every model of a tokenizer, so `batch_layout` makes it once per batch and tokenizer
    (like the PermutationPlan) and each model's accumulator reads it. Per-document arrays are
    segment sums in document order."""

    n_tok: np.ndarray  # (D,) analysed tokens per document
    n_units: np.ndarray  # (D,) words per document
    first_unit: np.ndarray  # (D,) first unit row of each document in the batch
    aligned: np.ndarray  # (N,) bool: tokens that belong to a word
    unit: np.ndarray  # (N_aligned,) batch unit row of each aligned token
    starts: np.ndarray | None  # _unit_starts(unit)
    ulab: np.ndarray  # (U, C) bool word labels, document after document
    ulab_f: np.ndarray  # (U, C) float64
    unit_n: np.ndarray  # (U,) float64 tokens per word
    tok_lab: np.ndarray  # (N, C) float64 labels per token (0 for tokens of no word)
    n_cat: np.ndarray  # (D, C) int64 tokens per category
    units_cat: np.ndarray  # (D, C) int64 words per category
    doc_unit_n: np.ndarray  # (D,) tokens in words
    doc_unit_n2: np.ndarray  # (D,) sum of squared word token counts


def batch_layout(units: Sequence[np.ndarray], unit_labels: Sequence[np.ndarray], n_categories: int) -> BatchLayout:
    """The BatchLayout of documents with units[j] (N_j,) word unit per analysed token (-1 = none) and
    unit_labels[j] (U_j, C)."""
    n_docs = len(units)
    n_tok = np.fromiter((u.shape[0] for u in units), dtype=np.int64, count=n_docs)
    n_units = np.fromiter((lab.shape[0] for lab in unit_labels), dtype=np.int64, count=n_docs)
    first_unit = np.concatenate([[0], np.cumsum(n_units)[:-1]]).astype(np.int64)
    unit = np.concatenate([np.where(u >= 0, u + start, -1) for u, start in zip(units, first_unit, strict=True)])
    ulab = np.concatenate(unit_labels)  # (U, C): the batch's units, document after document
    aligned = unit >= 0
    unit_n = np.bincount(unit[aligned], minlength=int(n_units.sum())).astype(np.float64)
    ulab_f = ulab.astype(np.float64)
    tok_lab = np.zeros((len(unit), n_categories))
    tok_lab[aligned] = ulab_f[unit[aligned]]
    return BatchLayout(
        n_tok=n_tok, n_units=n_units, first_unit=first_unit, aligned=aligned, unit=unit[aligned],
        starts=_unit_starts(unit[aligned]), ulab=ulab, ulab_f=ulab_f, unit_n=unit_n, tok_lab=tok_lab,
        n_cat=_segment_sums(tok_lab, n_tok).astype(np.int64),
        units_cat=_segment_sums(ulab.astype(np.int64), n_units),
        doc_unit_n=_segment_sums(unit_n, n_units), doc_unit_n2=_segment_sums(unit_n**2, n_units),
    )


class Accumulator:
    """Streaming sums for one model (see the module docstring)."""

    def __init__(self, layers: Sequence[int], n_components: int, categories: Sequence[str], n_permutations: int):
        self.layers = list(layers)
        self.k = n_components
        self.categories = list(categories)
        self.c = len(self.categories)
        self.lk = len(self.layers) * n_components
        self.p = n_permutations
        self._doc: dict[str, list[Any]] = defaultdict(list)
        self.cat_sumsq = np.zeros((self.c, self.lk))
        self._perm_sum = np.zeros((self.c, self.p, self.lk)) if self.p else None  # (C, P, LK)
        self._perm_n = np.zeros((self.c, self.p)) if self.p else None  # (C, P)

    def add_batch(
        self,
        doc_indices: Sequence[int],
        values: Sequence[np.ndarray],
        units: Sequence[np.ndarray],
        unit_labels: Sequence[np.ndarray],
        plan: PermutationPlan | None,
        layout: BatchLayout | None = None,
    ) -> None:
        """Document j: values[j] (N_j, L, K) magnitudes of its analysed tokens, units[j] (N_j,) the
        word unit of each token (-1 = none), unit_labels[j] (U_j, C). The batch's documents are summed
        together: one token matrix, one unit matrix, and every per-document sum a segment sum.
        `layout`: `batch_layout(units, unit_labels, C)`, shared by the models of a tokenizer (made
        here when absent)."""
        n_docs = len(doc_indices)
        if n_docs == 0:
            return
        lay = batch_layout(units, unit_labels, self.c) if layout is None else layout
        n_tok, n_units, unit_n = lay.n_tok, lay.n_units, lay.unit_n
        v64 = np.concatenate([v.reshape(v.shape[0], self.lk) for v in values]).astype(np.float64)  # (N, LK)
        unit_sum = _unit_sums(v64[lay.aligned], lay.unit, int(n_units.sum()), lay.starts)  # (U, LK)
        squares = v64 * v64
        d = self._doc
        d["ids"].append(np.asarray(doc_indices, dtype=np.int64))
        d["n"].append(n_tok)
        d["n_cat"].append(lay.n_cat)
        d["sum"].append(_segment_sums(v64, n_tok))
        d["sumsq"].append(_segment_sums(squares, n_tok))
        d["cat_sum"].append(np.stack([lay.ulab_f[a : a + n].T @ unit_sum[a : a + n]
                                      for a, n in zip(lay.first_unit, n_units, strict=True)]).astype(np.float32))
        d["units"].append(n_units)
        d["units_cat"].append(lay.units_cat)
        d["unit_n"].append(lay.doc_unit_n)
        d["unit_n2"].append(lay.doc_unit_n2)
        d["unit_sum"].append(_segment_sums(unit_sum, n_units))
        d["unit_s2"].append(_segment_sums(unit_sum * unit_sum, n_units))
        d["unit_sn"].append(_segment_sums(unit_sum * unit_n[:, None], n_units))
        self.cat_sumsq += lay.tok_lab.T @ squares
        if self.p and plan is not None:
            rows = np.column_stack([unit_sum, unit_n])  # (U, LK + 1): each word's sums and token count
            self._add_permutations(rows, _segment_sums(rows, n_units), plan)

    def _add_permutations(self, rows: np.ndarray, totals: np.ndarray, plan: PermutationPlan) -> None:
        """rows (U, LK + 1): the batch's word rows (sums, token count); totals (D, LK + 1): per document."""
        assert self._perm_sum is not None and self._perm_n is not None
        # A category's permuted sum in document j is its prefix (the first `cut` segments summed) or
        # the total minus it (complement). Over the batch that is a signed (C, R) selection of the
        # segment sums: per block of replicates, one embedding_bag gives the (R, n x (LK + 1)) segment
        # sums and one GEMM their (C, n x (LK + 1)) category sums, added to the float64 running sums;
        # the totals (complements, categories holding every word) are float64 constants.
        const = np.zeros((self.c, self.lk + 1))
        for j, total in enumerate(totals):
            full = plan.full_cols[j]
            if len(full):  # a category holding every word is constant under permutation
                const[full] += total[None, :]
            if plan.out_rows[j][1] == 0:
                continue
            cols = plan.cat_cols[j]
            const[cols[plan.cat_complement[j]]] += total[None, :]
        if plan.chunks:
            select = torch.from_numpy(plan.selection(self.c))
            weight = torch.from_numpy(rows.astype(np.float32))
            n_segments = select.shape[1]
            for first, n, indices, offsets in plan.chunks:
                seg = F.embedding_bag(indices, weight, offsets, mode="sum").view(n_segments, -1)
                perm = torch.matmul(select, seg).numpy().reshape(self.c, n, self.lk + 1)
                # the block's permuted sums, then the batch's constants while the block is in cache:
                # per element (running + permuted) + constant, the order of a pass after the loop
                block_sum, block_n = self._perm_sum[:, first : first + n], self._perm_n[:, first : first + n]
                block_sum += perm[:, :, : self.lk]
                block_sum += const[:, None, : self.lk]
                block_n += perm[:, :, self.lk]
                block_n += const[:, None, self.lk]
        if sum(n for _, n, _, _ in plan.chunks) != self.p:  # no blocks (no category to permute)
            self._perm_sum += const[:, None, : self.lk]
            self._perm_n += const[:, None, self.lk]

    def finalize(self) -> Accumulated:
        d = self._doc

        def stack(key: str, shape: tuple[int, ...] = (), dtype: Any = np.float64) -> np.ndarray:  # per-batch arrays
            return np.concatenate(d[key]).astype(dtype, copy=False) if d[key] else np.zeros((0, *shape), dtype=dtype)

        return Accumulated(
            layers=self.layers,
            n_components=self.k,
            categories=self.categories,
            doc_ids=stack("ids", (), np.int64),
            doc_n_total=stack("n", (), np.int64),
            doc_n_cat=stack("n_cat", (self.c,), np.int64),
            doc_sum=stack("sum", (self.lk,)),
            doc_sumsq=stack("sumsq", (self.lk,)),
            doc_cat_sum=stack("cat_sum", (self.c, self.lk), np.float32),
            cat_sumsq=self.cat_sumsq,
            doc_units=stack("units", (), np.int64),
            doc_units_cat=stack("units_cat", (self.c,), np.int64),
            doc_unit_n=stack("unit_n", (), np.float64),
            doc_unit_n2=stack("unit_n2", (), np.float64),
            doc_unit_sum=stack("unit_sum", (self.lk,)),
            doc_unit_s2=stack("unit_s2", (self.lk,)),
            doc_unit_sn=stack("unit_sn", (self.lk,)),
            perm_sum=self._perm_sum,
            perm_n=self._perm_n,
        )

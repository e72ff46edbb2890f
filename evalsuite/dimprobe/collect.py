"""Run models over tagged text and accumulate per-component magnitudes by category, streaming.

The unit of analysis is a model token in an analysed part of a document; the unit of resampling is
the document. For every model, layer l (hidden index: 0 = embedding output, i = after block i) and
component k, a token's value is ||h_l[t, k*D/n:(k+1)*D/n]||_2, the L2 norm of that component.

Memory is O(layers x components x categories), plus small per-document sums that the document
bootstrap needs (O(documents x layers x components x categories) float32, never per token):

- per document: token count N_d, category counts n_dc, sums of values over all tokens and over the
  tokens of each category, and the sum of squares over all tokens;
- over all documents: per-category sums of squares, and the label-permutation null (below).

Within-document label permutation, vectorised. Under the null, the labels of a document are a
random permutation of its labels, so the permuted sum of category c in document d is the sum of the
values of a uniformly random subset of size n_dc of the document's tokens, independent across
documents. For each document and replicate we draw one random permutation of its tokens and read
every category's subset off its prefixes (a subset of size n is the first n tokens; when n > N/2 we
use the total minus the first N - n), with one fused gather-and-sum (`embedding_bag`) per batch of
documents. Each category's null distribution is exactly the within-document permutation
distribution; replicates are shared across categories and layers/components, which keeps the cost
at about P x N/2 x (layers x components) additions per document instead of P x N x categories x ...
The permutation of document d, replicate p depends only on (seed, d), so models that share a
tokenizer are tested against the same permutations (a paired design).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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

    @property
    def n_analysed(self) -> int:
        return int(self.analysed.sum())


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
    return PreparedDoc(
        index=index,
        ids=np.asarray(ids, dtype=np.int64),
        labels=labels,
        analysed=analysed,
        n_chars=len(text.text) - text.analyse_from,
        n_unaligned=int(((word_index < 0) & analysed).sum()),
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


@dataclass
class DocOutputs:
    """Per analysed token of one document: component magnitudes and/or next-token loss."""

    mags: np.ndarray | None  # (N, L, K) float32
    nll: np.ndarray | None  # (N,) float32, nats


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
) -> list[DocOutputs]:
    """Run `run.model` over the documents in windows and return per-analysed-token outputs."""
    model = run.model
    block = run.block_size
    stride = stride or max(1, block // 2)
    if not 0 < stride < block:
        stride = max(1, block // 2)
    eot = run.tokenizer.eot_id
    k = run.n_components
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or 50_000
    if need_nll:  # full logits are materialised: cap them at ~256 MB per forward
        batch_tokens = max(block, min(batch_tokens, (1 << 26) // vocab))
    seqs = [np.concatenate([[eot], d.ids]).astype(np.int64) for d in docs]
    mags = [np.zeros((len(d.ids), len(layers), k), dtype=np.float32) if need_mags else None for d in docs]
    nll = [np.zeros(len(d.ids), dtype=np.float32) if need_nll else None for d in docs]
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
            if need_mags:
                with capture_residuals(model, layer_list, stop=not need_nll) as store, suppress(_StopForward):
                    logits = model(idx).logits
                states = torch.stack([store[layer] for layer in layer_list], dim=2)  # (B, T, L, D)
                bsz, t, n_l, d = states.shape
                comp = torch.linalg.vector_norm(states.float().view(bsz, t, n_l, k, d // k), dim=-1)
                comp_np = comp.numpy()
            else:
                logits = model(idx).logits
            for row, (di, a, b, c) in enumerate(batch):
                # seq positions c..b-1 are tokens c-1..b-2
                if need_mags:
                    mags[di][c - 1 : b - 1] = comp_np[row, c - a : b - a]
                if need_nll:
                    assert logits is not None
                    pred = logits[row, c - a - 1 : b - a - 1].float()
                    target = idx[row, c - a : b - a]
                    nll[di][c - 1 : b - 1] = F.cross_entropy(pred, target, reduction="none").numpy()
    out = []
    for di, d in enumerate(docs):
        keep = d.analysed
        out.append(DocOutputs(
            mags=mags[di][keep] if need_mags else None,
            nll=nll[di][keep] if need_nll else None,
        ))
    return out


# --- permutations -------------------------------------------------------------------------------


@dataclass
class PermutationPlan:
    """Random prefixes for one batch of documents (shared by every model with the same tokenizer).

    For document j: `cuts[j]` (sorted distinct subset sizes needed), `cat_cols[j]` (categories with
    0 < n < N), `cat_cut[j]` (which cut each of those categories reads), `cat_complement[j]` (read
    total minus prefix). `indices`/`offsets` feed one `embedding_bag` over the batch's values."""

    n_permutations: int
    row_offsets: list[int]  # first token row of each document in the concatenated values
    cuts: list[np.ndarray]
    cat_cols: list[np.ndarray]
    cat_cut: list[np.ndarray]
    cat_complement: list[np.ndarray]
    indices: torch.Tensor
    offsets: torch.Tensor
    out_rows: list[tuple[int, int]]  # per doc: (first output row, number of segments)


def plan_permutations(
    labels: Sequence[np.ndarray], doc_indices: Sequence[int], n_permutations: int, seed: int
) -> PermutationPlan:
    """Draw the permutations of a batch of documents (`labels[j]`: (N_j, C) analysed-token labels)."""
    p = n_permutations
    row_offsets, cuts_l, cols_l, cut_l, comp_l = [], [], [], [], []
    index_parts: list[np.ndarray] = []
    offset_parts: list[np.ndarray] = []
    out_rows: list[tuple[int, int]] = []
    row, pos, out_row = 0, 0, 0
    for lab, doc_index in zip(labels, doc_indices, strict=True):
        n_tok = lab.shape[0]
        counts = lab.sum(axis=0)
        cols = np.flatnonzero((counts > 0) & (counts < n_tok))
        need = np.minimum(counts[cols], n_tok - counts[cols])
        cuts = np.unique(need)
        row_offsets.append(row)
        cuts_l.append(cuts)
        cols_l.append(cols)
        cut_l.append(np.searchsorted(cuts, need))
        comp_l.append(counts[cols] > n_tok - counts[cols])
        if len(cuts):
            m = int(cuts[-1])
            rng = np.random.default_rng([seed, doc_index])
            perms = rng.permuted(np.tile(np.arange(n_tok, dtype=np.int64), (p, 1)), axis=1)[:, :m]
            index_parts.append((perms + row).ravel())
            seg_starts = np.concatenate([[0], cuts[:-1]])
            offset_parts.append((pos + np.arange(p)[:, None] * m + seg_starts[None, :]).ravel())
            pos += p * m
            out_rows.append((out_row, len(cuts)))
            out_row += p * len(cuts)
        else:
            out_rows.append((out_row, 0))
        row += n_tok
    indices = torch.from_numpy(np.concatenate(index_parts)) if index_parts else torch.zeros(0, dtype=torch.long)
    offsets = torch.from_numpy(np.concatenate(offset_parts)) if offset_parts else torch.zeros(0, dtype=torch.long)
    return PermutationPlan(p, row_offsets, cuts_l, cols_l, cut_l, comp_l, indices, offsets, out_rows)


# --- accumulation -------------------------------------------------------------------------------


@dataclass
class Accumulated:
    """Everything the statistics need, for one model. Values are flattened as (L*K) = layer-major."""

    layers: list[int]
    n_components: int
    categories: list[str]
    doc_ids: np.ndarray  # (D,) document indices
    doc_n_total: np.ndarray  # (D,) analysed tokens
    doc_n_cat: np.ndarray  # (D, C)
    doc_sum: np.ndarray  # (D, LK) float64
    doc_sumsq: np.ndarray  # (D, LK) float64
    doc_cat_sum: np.ndarray  # (D, C, LK) float32
    cat_sumsq: np.ndarray  # (C, LK) float64, over all documents
    perm_sum: np.ndarray | None  # (C, P, LK) float64: permuted category sums over all documents

    @property
    def n_lk(self) -> int:
        return len(self.layers) * self.n_components


class Accumulator:
    """Streaming sums for one model (see the module docstring)."""

    def __init__(self, layers: Sequence[int], n_components: int, categories: Sequence[str], n_permutations: int):
        self.layers = list(layers)
        self.k = n_components
        self.categories = list(categories)
        self.c = len(self.categories)
        self.lk = len(self.layers) * n_components
        self.p = n_permutations
        self._ids: list[int] = []
        self._n: list[int] = []
        self._n_cat: list[np.ndarray] = []
        self._sum: list[np.ndarray] = []
        self._sumsq: list[np.ndarray] = []
        self._cat_sum: list[np.ndarray] = []
        self.cat_sumsq = np.zeros((self.c, self.lk))
        self.perm_sum = np.zeros((self.c, self.p, self.lk)) if self.p else None

    def add_batch(
        self,
        doc_indices: Sequence[int],
        values: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        plan: PermutationPlan | None,
    ) -> None:
        """values[j]: (N_j, L, K) magnitudes of document j's analysed tokens; labels[j]: (N_j, C)."""
        flat = [v.reshape(v.shape[0], self.lk) for v in values]
        for doc_index, v, lab in zip(doc_indices, flat, labels, strict=True):
            v64 = v.astype(np.float64)
            lab_f = lab.astype(np.float64)
            self._ids.append(int(doc_index))
            self._n.append(v.shape[0])
            self._n_cat.append(lab.sum(axis=0).astype(np.int64))
            self._sum.append(v64.sum(axis=0))
            self._sumsq.append(np.einsum("nl,nl->l", v64, v64))
            self._cat_sum.append((lab_f.T @ v64).astype(np.float32))
            self.cat_sumsq += lab_f.T @ (v64 * v64)
        if self.p and plan is not None:
            self._add_permutations(flat, labels, plan)

    def _add_permutations(
        self, flat: Sequence[np.ndarray], labels: Sequence[np.ndarray], plan: PermutationPlan
    ) -> None:
        assert self.perm_sum is not None
        if plan.indices.numel():
            weight = torch.from_numpy(np.concatenate(flat).astype(np.float32, copy=False))
            seg = F.embedding_bag(plan.indices, weight, plan.offsets, mode="sum").numpy()  # (rows, LK)
        else:
            seg = np.zeros((0, self.lk), dtype=np.float32)
        for j, v in enumerate(flat):
            first, n_seg = plan.out_rows[j]
            if n_seg == 0:
                continue
            prefix = np.cumsum(seg[first : first + self.p * n_seg].reshape(self.p, n_seg, self.lk), axis=1,
                               dtype=np.float64)
            picked = prefix[:, plan.cat_cut[j], :]  # (P, c', LK)
            comp = plan.cat_complement[j]
            if comp.any():
                total = v.sum(axis=0, dtype=np.float64)
                picked[:, comp, :] = total[None, None, :] - picked[:, comp, :]
            self.perm_sum[plan.cat_cols[j]] += picked.transpose(1, 0, 2)
        for lab, v in zip(labels, flat, strict=True):
            # a category covering every token of a document is constant under permutation
            full = np.flatnonzero(lab.sum(axis=0) == v.shape[0]) if v.shape[0] else []
            if len(full):
                self.perm_sum[full] += v.sum(axis=0, dtype=np.float64)[None, None, :]

    def finalize(self) -> Accumulated:
        d = len(self._ids)
        return Accumulated(
            layers=self.layers,
            n_components=self.k,
            categories=self.categories,
            doc_ids=np.asarray(self._ids, dtype=np.int64),
            doc_n_total=np.asarray(self._n, dtype=np.int64),
            doc_n_cat=np.stack(self._n_cat) if d else np.zeros((0, self.c), dtype=np.int64),
            doc_sum=np.stack(self._sum) if d else np.zeros((0, self.lk)),
            doc_sumsq=np.stack(self._sumsq) if d else np.zeros((0, self.lk)),
            doc_cat_sum=np.stack(self._cat_sum) if d else np.zeros((0, self.c, self.lk), dtype=np.float32),
            cat_sumsq=self.cat_sumsq,
            perm_sum=self.perm_sum,
        )

"""Causal test: remove one algebra component of the residual stream at inference and measure the loss,
against a null of random subspaces of the same dimension.

`projected_out(model, basis, layers, means)` installs hooks on `model.blocks`: a pre-hook on block 0
edits the embedding output (hidden index 0), and a forward hook on block i edits that block's output
(hidden index i + 1): h <- h - ((h - m_l) Q) Q^T for an orthonormal basis Q (D x w) of the removed
subspace, with m_l = 0 (zero-ablation) or m_l = the mean clean state at that layer over the analysed
tokens (mean-ablation: the subspace keeps its average, loses its token-specific content). Component
e_k is the subspace of the standard basis vectors k*w .. (k+1)*w - 1 (`zeroed_components` is the
zero-ablation of those). With the default layers (all), the subspace is removed everywhere the
blocks read it and where the head reads it; blocks may still write into it, and the next hook
removes that again.

The null: zeroing ANY w = D/n dimensions of the residual stream costs loss, so e_k's cost alone says
nothing about e_k. Each run also removes `n_random` random w-dimensional subspaces (Q from the QR
decomposition of a seeded Gaussian D x w matrix, Haar-distributed), zero- and mean-ablated alike,
and reports e_k's change against that distribution: `p_vs_random` = (1 + #{random >= e_k}) / (N + 1)
(evalsuite.stats.permutation_p, one-sided: does e_k cost more than a random subspace?).

Position (the same as the probe's, see collect.forward_docs): a token's loss change is the change in
the loss of predicting the NEXT token from that token's residual state, so "NOUN loss change" is
measured at the NOUN positions whose states the probe reads. Loss is reported as nats/token and
bits per character of the analysed text (nats summed over tokens / (characters x ln 2)), with 95%
document-bootstrap intervals on the changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import torch

from corpora.errors import UserError


def parse_component(spec: str, n_components: int) -> int:
    """'e5' or '5' -> 5, checked against the model's component count."""
    text = spec.strip().lower()
    digits = text[1:] if text.startswith("e") else text
    if not digits.isdigit():
        raise UserError(f"--ablate expects a component like e5, got {spec!r}")
    k = int(digits)
    if not 0 <= k < n_components:
        raise UserError(f"--ablate {spec}: the model has components e0..e{n_components - 1}")
    return k


@contextmanager
def zeroed_components(
    model: torch.nn.Module, n_components: int, components: Sequence[int], layers: Sequence[int] | None = None
) -> Iterator[None]:
    """Zero the given components at the given hidden indices (default: 0..n_layer) while active."""
    blocks = model.blocks
    targets = list(range(len(blocks) + 1)) if layers is None else list(layers)
    bad = [layer for layer in targets if not 0 <= layer <= len(blocks)]
    if bad:
        raise UserError(f"ablation layers {bad} out of range 0..{len(blocks)}")

    def zero(x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1] // n_components
        x = x.clone()
        for k in components:
            x[..., k * width : (k + 1) * width] = 0
        return x

    handles = []
    if 0 in targets:
        def pre_hook(module: Any, args: tuple) -> tuple:
            return (zero(args[0]), *args[1:])

        handles.append(blocks[0].register_forward_pre_hook(pre_hook))
    for i, block in enumerate(blocks):
        if i + 1 in targets:
            def hook(module: Any, args: tuple, out: torch.Tensor) -> torch.Tensor:
                return zero(out)

            handles.append(block.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def random_orthonormal(d_model: int, width: int, seed: int) -> torch.Tensor:
    """(d_model, width) orthonormal columns spanning a uniformly random `width`-dim subspace."""
    gen = torch.Generator().manual_seed(int(seed))
    q, r = torch.linalg.qr(torch.randn(d_model, width, generator=gen, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))[None, :]).float()


def component_basis(d_model: int, n_components: int, k: int) -> torch.Tensor:
    """(d_model, w) standard basis of component e_k's slice."""
    width = d_model // n_components
    basis = torch.zeros(d_model, width)
    basis[k * width : (k + 1) * width] = torch.eye(width)
    return basis


@contextmanager
def projected_out(
    model: torch.nn.Module,
    basis: torch.Tensor,
    layers: Sequence[int] | None = None,
    means: dict[int, torch.Tensor] | None = None,
) -> Iterator[None]:
    """Remove span(basis) from the residual stream at the given hidden indices while active:
    h <- h - ((h - m) Q) Q^T, m = means[layer] (mean-ablation) or 0 (zero-ablation)."""
    blocks = model.blocks
    targets = list(range(len(blocks) + 1)) if layers is None else list(layers)
    bad = [layer for layer in targets if not 0 <= layer <= len(blocks)]
    if bad:
        raise UserError(f"ablation layers {bad} out of range 0..{len(blocks)}")
    q = basis

    def edit(x: torch.Tensor, layer: int) -> torch.Tensor:
        centred = x if means is None else x - means[layer].to(x.dtype)
        return x - (centred @ q.to(x.dtype)) @ q.T.to(x.dtype)

    handles = []
    if 0 in targets:
        def pre_hook(module: Any, args: tuple) -> tuple:
            return (edit(args[0], 0), *args[1:])

        handles.append(blocks[0].register_forward_pre_hook(pre_hook))
    for i, block in enumerate(blocks):
        if i + 1 in targets:
            def hook(module: Any, args: tuple, out: torch.Tensor, layer: int = i + 1) -> torch.Tensor:
                return edit(out, layer)

            handles.append(block.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def with_random_null(table: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Add the random-subspace null to each component ablation's rows (see the module docstring).
    Rows of `random:*` ablations are the null draws (kind `random_subspace`); `e_k` rows are compared
    with `random:*` rows, `e_k:mean` rows with `random:*:mean` rows, category by category."""
    from evalsuite.stats import permutation_p

    if table.empty:
        return table
    out = table.copy()
    is_random = out["ablation"].str.startswith("random:")
    is_mean = out["ablation"].str.endswith(":mean")
    out.insert(2, "kind", np.where(is_random, "random_subspace", "component"))
    out.insert(3, "method", np.where(is_mean, "mean", "zero"))
    for col in ("null_n", "null_mean", "null_low", "null_high", "p_vs_random", "exceeds_random"):
        out[col] = np.nan
    out["exceeds_random"] = out["exceeds_random"].astype(object)
    for (method, cat), rows in out[~is_random].groupby(["method", "category"]):
        null = out[is_random & (out["method"] == method) & (out["category"] == cat)]["delta_nats"].to_numpy()
        if not len(null):
            continue
        for i in rows.index:
            p = permutation_p(float(out.at[i, "delta_nats"]), null, alternative="greater")
            out.loc[i, ["null_n", "null_mean", "null_low", "null_high", "p_vs_random"]] = [
                len(null), float(null.mean()), float(np.percentile(null, 2.5)), float(np.percentile(null, 97.5)), p]
            out.at[i, "exceeds_random"] = bool(p < alpha)
    return out


class LossAccumulator:
    """Per-document loss sums by category for the clean model and each ablation."""

    def __init__(self, categories: Sequence[str], ablations: Sequence[str]):
        self.categories = list(categories)
        self.ablations = list(ablations)
        self._n: list[int] = []
        self._chars: list[int] = []
        self._n_cat: list[np.ndarray] = []
        self._clean: list[np.ndarray] = []  # (1 + C,) total then per category
        self._abl: list[np.ndarray] = []  # (A, 1 + C)

    def add(self, labels: np.ndarray, n_chars: int, clean: np.ndarray, ablated: Sequence[np.ndarray]) -> None:
        lab = labels.astype(np.float64)
        self._n.append(len(clean))
        self._chars.append(n_chars)
        self._n_cat.append(labels.sum(axis=0))
        self._clean.append(np.concatenate([[clean.sum(dtype=np.float64)], lab.T @ clean.astype(np.float64)]))
        self._abl.append(np.stack([
            np.concatenate([[a.sum(dtype=np.float64)], lab.T @ a.astype(np.float64)]) for a in ablated
        ]) if ablated else np.zeros((0, 1 + len(self.categories))))

    def table(self, weights: np.ndarray, model: str) -> pd.DataFrame:
        """Tidy loss table: per ablation and category (plus ALL), clean and ablated nats/token, the
        change with its bootstrap CI, and (for ALL) bits per character."""
        if not self._n:
            return pd.DataFrame()
        n = np.asarray(self._n, dtype=np.float64)
        chars = np.asarray(self._chars, dtype=np.float64)
        counts = np.column_stack([n, np.stack(self._n_cat)]).astype(np.float64)  # (D, 1 + C)
        clean = np.stack(self._clean)  # (D, 1 + C)
        abl = np.stack(self._abl)  # (D, A, 1 + C)
        names = ["ALL", *self.categories]
        boot_counts = weights @ counts  # (B, 1 + C)
        boot_clean = weights @ clean
        boot_chars = weights @ chars
        rows = []
        for a, ablation in enumerate(self.ablations):
            diff = abl[:, a, :] - clean
            boot_diff = weights @ diff
            with np.errstate(divide="ignore", invalid="ignore"):
                per_tok = boot_diff / boot_counts
                rel = boot_diff / boot_clean
            for ci, cat in enumerate(names):
                total = counts[:, ci].sum()
                if total == 0:
                    continue
                clean_loss = clean[:, ci].sum() / total
                abl_loss = abl[:, a, ci].sum() / total
                draws = per_tok[:, ci][np.isfinite(per_tok[:, ci])]
                rel_draws = rel[:, ci][np.isfinite(rel[:, ci])]
                row = {
                    "model": model, "ablation": ablation, "category": cat,
                    "clean_nats": clean_loss, "ablated_nats": abl_loss, "delta_nats": abl_loss - clean_loss,
                    "delta_ci_low": np.percentile(draws, 2.5) if len(draws) else np.nan,
                    "delta_ci_high": np.percentile(draws, 97.5) if len(draws) else np.nan,
                    "delta_rel": (abl_loss - clean_loss) / clean_loss if clean_loss else np.nan,
                    "delta_rel_ci_low": np.percentile(rel_draws, 2.5) if len(rel_draws) else np.nan,
                    "delta_rel_ci_high": np.percentile(rel_draws, 97.5) if len(rel_draws) else np.nan,
                    "n_tokens": int(total), "n_docs": int((counts[:, ci] > 0).sum()),
                }
                if cat != "ALL":
                    # does the ablation hurt this category more than the average token?
                    excess = per_tok[:, ci] - per_tok[:, 0]
                    excess = excess[np.isfinite(excess)]
                    row["excess_vs_all"] = row["delta_nats"] - (abl[:, a, 0].sum() - clean[:, 0].sum()) / n.sum()
                    row["excess_ci_low"] = np.percentile(excess, 2.5) if len(excess) else np.nan
                    row["excess_ci_high"] = np.percentile(excess, 97.5) if len(excess) else np.nan
                if cat == "ALL":
                    n_chars = chars.sum()
                    bpc_draws = boot_diff[:, 0] / (boot_chars * math.log(2))
                    row.update({
                        "clean_bpc": clean[:, 0].sum() / (n_chars * math.log(2)),
                        "ablated_bpc": abl[:, a, 0].sum() / (n_chars * math.log(2)),
                        "delta_bpc_ci_low": np.percentile(bpc_draws, 2.5),
                        "delta_bpc_ci_high": np.percentile(bpc_draws, 97.5),
                        "n_chars": int(n_chars),
                    })
                    row["delta_bpc"] = row["ablated_bpc"] - row["clean_bpc"]
                rows.append(row)
        return pd.DataFrame(rows)

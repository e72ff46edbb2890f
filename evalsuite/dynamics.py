"""Generalization and training-dynamics metrics, as tidy DataFrames.

From a run's `metrics_stream.jsonl` (no model needed):
- `metrics_frame`: one row per logged step, with train and val loss in nats/token and in bits per
  character (train: the train split's tokens/characters; val: the val split's, both as the run
  recorded them in trainer_state.json), so runs with different tokenizers compare in one unit.
- `train_val_gap`: at every evaluation, val loss minus train loss. The train loss the trainer logs is
  ONE batch's loss at that step, so it is noisy; `train_loss_smoothed` is the mean of the last
  `window` logged train losses up to and including the eval step, and the gap uses it.
- `loss_phases`: phases of the loss curve. Rule (documented, deterministic): fit a piecewise-linear
  model of loss against log10(tokens seen) by exact segmented least squares (dynamic programming,
  Bellman 1961), each segment >= `min_points` points, with the number of segments (1..max_segments)
  chosen by BIC = n ln(max(SSE/n, (1e-3 nats)^2)) + (4K-2) ln n (a breakpoint found by search counts
  as two parameters). Each segment is labelled by its fitted slope s in nats per decade of tokens:
  s > +plateau_tol "rising" (val: overfitting or divergence), |s| <= plateau_tol "plateau",
  s <= -rapid_slope "rapid-drop", otherwise "slow-decline"; adjacent segments with the same label
  are merged into one phase (and its line refitted).
  The step-0 evaluation (0 tokens seen) has no logarithm and is left out.

From a checkpoint (a model on the CPU):
- `component_weight_stats`: for every SpinNet HypercomplexLinear and algebra component k: the share
  of the ternary weights W_k that are 0, +1, -1, and the component's share of the layer's squared
  weight norm (for ternary weights: its share of the non-zero trits). A component is **dead** when
  at least `dead_threshold` (default 99%) of its ternary weights are zero (it passes almost nothing),
  and **dominant** when its norm share is at least `dominant_factor` (default 2) times the fair
  share 1/n. `component_summary` gives per layer (and over all layers) the ratio of dead and
  dominant components and the share of ternary weights at zero.
- `activation_component_stats`: on a batch of text, the inputs of every HypercomplexLinear under
  BitNet's per-token absmax 8-bit quantisation (the model's own when model.act_bits = 8, else as if
  it were on, flagged by `act_bits_active`): per component, the share of tokens whose absmax (the
  element mapped to the clamp bound 127) lies in this component (`scale_owner_share`), the share of
  its elements at the bound |q| = 127 (`at_bound_share`) and the share rounded to 0 (`zero_share`).
  A component is **saturated** when it owns the scale of at least `dominant_factor`/n of the tokens:
  it sets the quantisation step for the others and pushes their small values to zero. Layers that
  read the same input as an earlier one (k and v beside q) are reported once, under the first.
- `effective_rank` (Roy & Vetterli 2007): exp of the Shannon entropy of the normalised singular
  values, erank = exp(-sum p_i ln p_i), p_i = s_i / sum s. Equals k for a matrix with k equal non-zero
  singular values. Hidden states are centred (column means removed) first by default, so a shared
  offset direction does not count as a dimension.
- `hidden_state_ranks`: effective rank of the residual stream after the embedding (layer 0) and
  after each block, over all tokens of a batch, for the whole vector and for each component.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from corpora.errors import UserError
from trainers.metrics import METRICS_FILE, read_metrics

SCALAR_KEYS = (
    "step", "tokens_seen", "train_loss", "train_objective", "val_loss", "val_bpc", "lr", "grad_norm",
    "tokens_per_s", "article_loss", "other_loss", "article_other_ratio",
)
PHASE_LABELS = ("rapid-drop", "slow-decline", "plateau", "rising")
# Loss resolution for the phase fit: a residual variance below (1e-3 nats)^2 counts as a perfect fit,
# so noise-free (or rounded) curves do not buy extra segments with vanishing improvements.
RESOLUTION_NATS = 1e-3


@dataclass
class RunFacts:
    """What a run directory says about itself (for labels and bpc conversion)."""

    run: str
    model_family: str | None
    tokenizer: str | None
    train_bpc_per_nat: float | None
    val_bpc_per_nat: float | None
    config: dict[str, Any] | None


def run_facts(run_dir: str | os.PathLike, run: str | None = None) -> RunFacts:
    """Family, tokenizer and the nats->bpc factors of a run, from latest/ (or best/) and config.yaml."""
    import yaml

    from trainers.checkpoint import CONFIG_FILE, STATE_FILE, read_config_dict, read_state

    run_dir = Path(run_dir)
    state: dict[str, Any] = {}
    config: dict[str, Any] | None = None
    for name in ("latest", "best"):
        if (run_dir / name / STATE_FILE).is_file():  # read through the checkpoint format's owner
            state = read_state(run_dir / name)
            if (run_dir / name / CONFIG_FILE).is_file():
                config = read_config_dict(run_dir / name)
            break
    if config is None and (run_dir / "config.yaml").is_file():
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    data = state.get("data") or {}

    def factor(split: str) -> float | None:
        tokens, chars = data.get(f"{split}_tokens"), data.get(f"{split}_chars")
        return tokens / (chars * math.log(2)) if tokens and chars else None

    family = state.get("model_family") or ((config or {}).get("model") or {}).get("family")
    tokenizer = ((config or {}).get("train") or {}).get("tokenizer")
    return RunFacts(run or run_dir.name, family, tokenizer, factor("train"), factor("val"), config)


def metrics_frame(run_dir: str | os.PathLike, run: str | None = None) -> pd.DataFrame:
    """One row per logged step: run, model_family, tokenizer, the scalar metrics, train_bpc, val_bpc.

    train_bpc = train_loss * train_tokens / (train_chars ln 2) with the train split's counts; when
    the run did not record them, the val split's ratio (val_bpc / val_loss) is used and
    `train_bpc_source` says so.
    """
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    facts = run_facts(run_dir, run)
    frame = pd.DataFrame([{k: r.get(k) for k in SCALAR_KEYS} for r in records], columns=list(SCALAR_KEYS))
    frame = frame.astype({k: float for k in SCALAR_KEYS if k not in ("step", "tokens_seen")})
    frame.insert(0, "run", facts.run)
    frame.insert(1, "model_family", facts.model_family)
    frame.insert(2, "tokenizer", facts.tokenizer)
    val_factor = facts.val_bpc_per_nat
    if val_factor is None:
        ratios = (frame["val_bpc"] / frame["val_loss"]).dropna()
        val_factor = float(ratios.iloc[0]) if len(ratios) else None
    train_factor, source = facts.train_bpc_per_nat, "train split"
    if train_factor is None:
        train_factor, source = val_factor, "val split ratio"
    frame["train_bpc"] = frame["train_loss"] * train_factor if train_factor else np.nan
    frame["train_bpc_source"] = source if train_factor else None
    return frame


def component_grad_norms(run_dir: str | os.PathLike, run: str | None = None) -> pd.DataFrame:
    """Long table of SpinNet per-component gradient norms: run, step, tokens_seen, component, grad_norm."""
    rows = []
    name = run or Path(run_dir).name
    for record in read_metrics(run_dir):
        norms = record.get("component_grad_norms")
        if norms:
            rows += [{"run": name, "step": record["step"], "tokens_seen": record.get("tokens_seen"),
                      "component": k, "grad_norm": float(v)} for k, v in enumerate(norms)]
    return pd.DataFrame(rows, columns=["run", "step", "tokens_seen", "component", "grad_norm"])


def train_val_gap(frame: pd.DataFrame, window: int = 5) -> pd.DataFrame:
    """Per evaluation: train (one batch, and smoothed over `window` logged steps) and val loss, gap."""
    out = []
    for run, sub in frame.groupby("run", sort=False):
        sub = sub.sort_values("step")
        train = sub[sub["train_loss"].notna()]
        factors = (sub["train_bpc"] / sub["train_loss"]).dropna()
        factor_train = float(factors.iloc[0]) if len(factors) else math.nan  # one constant per run
        for _, row in sub[sub["val_loss"].notna()].iterrows():
            recent = train[train["step"] <= row["step"]].tail(window)
            smoothed = float(recent["train_loss"].mean()) if len(recent) else math.nan
            out.append({
                "run": run, "model_family": row["model_family"], "step": int(row["step"]),
                "tokens_seen": int(row["tokens_seen"]), "val_loss": row["val_loss"],
                "train_loss": row["train_loss"], "train_loss_smoothed": smoothed, "train_loss_n": len(recent),
                "gap_nats": row["val_loss"] - smoothed,
                "val_bpc": row["val_bpc"], "train_bpc_smoothed": smoothed * factor_train,
                "gap_bpc": row["val_bpc"] - smoothed * factor_train,
            })
    columns = ["run", "model_family", "step", "tokens_seen", "val_loss", "train_loss", "train_loss_smoothed",
               "train_loss_n", "gap_nats", "val_bpc", "train_bpc_smoothed", "gap_bpc"]
    return pd.DataFrame(out, columns=columns)


# ----------------------------------------------------------------------------------------------
# phases of the loss curve


def _segment_costs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSE of the least-squares line through points i..j (inclusive), for all i <= j."""
    n = len(x)
    cx, cy = np.concatenate([[0], np.cumsum(x)]), np.concatenate([[0], np.cumsum(y)])
    cxx, cxy, cyy = (np.concatenate([[0], np.cumsum(v)]) for v in (x * x, x * y, y * y))
    cost = np.full((n, n), np.inf)
    for i in range(n):
        j = np.arange(i, n)
        m = (j - i + 1).astype(float)
        sx, sy = cx[j + 1] - cx[i], cy[j + 1] - cy[i]
        sxx, sxy, syy = cxx[j + 1] - cxx[i], cxy[j + 1] - cxy[i], cyy[j + 1] - cyy[i]
        vxx = sxx - sx * sx / m
        vxy = sxy - sx * sy / m
        vyy = syy - sy * sy / m
        with np.errstate(divide="ignore", invalid="ignore"):
            sse = np.where(vxx > 1e-12, vyy - vxy * vxy / np.where(vxx > 1e-12, vxx, 1), vyy)
        cost[i, j] = np.maximum(sse, 0.0)
    return cost


def _best_segmentation(cost: np.ndarray, k: int, min_points: int) -> tuple[float, list[tuple[int, int]]]:
    """Exact minimum-SSE split of n points into k segments of >= min_points points (DP)."""
    n = cost.shape[0]
    best = np.full((k + 1, n + 1), np.inf)
    back = np.zeros((k + 1, n + 1), dtype=int)
    best[0, 0] = 0.0
    for seg in range(1, k + 1):
        for end in range(seg * min_points, n + 1):  # points [start, end) form the last segment
            starts = np.arange((seg - 1) * min_points, end - min_points + 1)
            if len(starts) == 0:
                continue
            totals = best[seg - 1, starts] + cost[starts, end - 1]
            pick = int(np.argmin(totals))
            best[seg, end], back[seg, end] = totals[pick], starts[pick]
    segments, end = [], n
    for seg in range(k, 0, -1):
        start = back[seg, end]
        segments.append((start, end - 1))
        end = start
    return float(best[k, n]), segments[::-1]


def _slope(x: np.ndarray, y: np.ndarray, i: int, j: int) -> float:
    return float(np.polyfit(x[i : j + 1], y[i : j + 1], 1)[0]) if j > i else 0.0


def _label(slope: float, plateau_tol: float, rapid_slope: float) -> str:
    if slope > plateau_tol:
        return "rising"
    if slope >= -plateau_tol:
        return "plateau"
    if slope <= -rapid_slope:
        return "rapid-drop"
    return "slow-decline"


def loss_phases(
    frame: pd.DataFrame,
    metric: str = "val_loss",
    *,
    max_segments: int = 4,
    min_points: int = 3,
    plateau_tol: float = 0.05,
    rapid_slope: float = 1.0,
) -> pd.DataFrame:
    """Phases of `metric` against log10(tokens_seen) per run (see the module docstring for the rule)."""
    rows = []
    for run, sub in frame.groupby("run", sort=False):
        pts = sub[(sub["tokens_seen"] > 0) & sub[metric].notna()].sort_values("tokens_seen")
        pts = pts.groupby("tokens_seen", as_index=False).agg({metric: "mean", "step": "first"})
        n = len(pts)
        if n < 2:
            continue
        x = np.log10(pts["tokens_seen"].to_numpy(dtype=float))
        y = pts[metric].to_numpy(dtype=float)
        cost = _segment_costs(x, y)
        min_pts = min(min_points, n)
        best_k, best_bic, best_segments = 1, math.inf, [(0, n - 1)]
        for k in range(1, max_segments + 1):
            if k * min_pts > n:
                break
            sse, segments = _best_segmentation(cost, k, min_pts)
            # residuals below RESOLUTION_NATS per point are below what a logged loss resolves
            # K lines (2 parameters each) and K-1 breakpoints counted as 2 parameters each: a location
            # chosen by search fits noise better than one free parameter would
            bic = n * math.log(max(sse / n, RESOLUTION_NATS**2)) + (4 * k - 2) * math.log(n)
            if bic < best_bic - 1e-9:
                best_k, best_bic, best_segments = k, bic, segments
        labelled = [(i, j, _label(_slope(x, y, i, j), plateau_tol, rapid_slope)) for i, j in best_segments]
        merged: list[list[Any]] = []
        for i, j, label in labelled:  # adjacent segments with one label are one phase
            if merged and merged[-1][2] == label:
                merged[-1][1] = j
            else:
                merged.append([i, j, label])
        for index, (i, j, label) in enumerate(merged):
            xs, ys = x[i : j + 1], y[i : j + 1]
            slope, intercept = np.polyfit(xs, ys, 1) if j > i else (0.0, ys[0])
            fit_start, fit_end = intercept + slope * xs[0], intercept + slope * xs[-1]
            rows.append({
                "run": run, "model_family": sub["model_family"].iloc[0], "metric": metric, "phase": index,
                "label": label,
                "start_step": int(pts["step"].iloc[i]), "end_step": int(pts["step"].iloc[j]),
                "start_tokens": int(pts["tokens_seen"].iloc[i]), "end_tokens": int(pts["tokens_seen"].iloc[j]),
                "n_points": j - i + 1, "slope_per_decade": float(slope),
                "fit_start": float(fit_start), "fit_end": float(fit_end), "observed_start": float(ys[0]),
                "observed_end": float(ys[-1]), "n_segments": best_k, "bic": best_bic,
            })
    columns = ["run", "model_family", "metric", "phase", "label", "start_step", "end_step", "start_tokens",
               "end_tokens", "n_points", "slope_per_decade", "fit_start", "fit_end", "observed_start",
               "observed_end", "n_segments", "bic"]
    return pd.DataFrame(rows, columns=columns)


# ----------------------------------------------------------------------------------------------
# dead, dominant and saturated components (SpinNet)


def _block_index(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def _hypercomplex_layers(model: Any) -> list[tuple[str, Any]]:
    from trainers.layers import HypercomplexLinear

    return [(name, m) for name, m in model.named_modules() if isinstance(m, HypercomplexLinear)]


def component_weight_stats(model: Any, *, dead_threshold: float = 0.99, dominant_factor: float = 2.0) -> pd.DataFrame:
    """Per HypercomplexLinear and component: ternary zero/+1/-1 shares, norm share, dead, dominant.

    A model without hypercomplex layers (the baseline) gives an empty table: it has no algebra
    components in its weights.
    """
    import torch

    rows = []
    with torch.no_grad():
        for name, layer in _hypercomplex_layers(model):
            n = layer.n
            if layer.ternary or layer.frozen_trits is not None:
                trits, gamma = layer.ternary_state()
                values = trits.float()
                energy = (values != 0).float().flatten(1).sum(1)  # |w| = gamma for every non-zero trit
                kind = "ternary"
            else:
                values = layer.weight.detach().float()
                energy = values.pow(2).flatten(1).sum(1)
                kind = "float"
            total_energy = float(energy.sum())
            for k in range(n):
                comp = values[k]
                zero = float((comp == 0).float().mean())
                share = float(energy[k]) / total_energy if total_energy > 0 else math.nan
                rows.append({
                    "layer": name, "block": _block_index(name), "component": k, "n_components": n,
                    "weights": kind, "n_weights": int(comp.numel()), "zero_share": zero,
                    "plus_share": float((comp > 0).float().mean()), "minus_share": float((comp < 0).float().mean()),
                    "norm_share": share, "dead": zero >= dead_threshold,
                    "dominant": bool(share >= dominant_factor / n) if not math.isnan(share) else False,
                })
    columns = ["layer", "block", "component", "n_components", "weights", "n_weights", "zero_share", "plus_share",
               "minus_share", "norm_share", "dead", "dominant"]
    return pd.DataFrame(rows, columns=columns)


def component_summary(stats: pd.DataFrame) -> pd.DataFrame:
    """Per layer and over all layers ("all"): dead and dominant component ratios, zero-weight share."""
    rows = []
    if stats.empty:
        return pd.DataFrame(columns=["layer", "block", "n_components", "dead_ratio", "dominant_ratio",
                                     "zero_weight_share"])
    groups = [(name, sub) for name, sub in stats.groupby("layer", sort=False)] + [("all", stats)]
    for name, sub in groups:
        weights = sub["n_weights"].to_numpy(dtype=float)
        rows.append({
            "layer": name, "block": sub["block"].iloc[0] if name != "all" else None, "n_components": len(sub),
            "dead_ratio": float(sub["dead"].mean()), "dominant_ratio": float(sub["dominant"].mean()),
            "zero_weight_share": float(np.average(sub["zero_share"], weights=weights)),
        })
    return pd.DataFrame(rows)


def activation_component_stats(model: Any, idx: Any, *, bits: int = 8, dominant_factor: float = 2.0) -> pd.DataFrame:
    """Per HypercomplexLinear input and component: absmax scale ownership, clamp-bound and zero shares."""
    import torch

    layers = _hypercomplex_layers(model)
    if not layers:
        return pd.DataFrame(columns=["layer", "block", "component", "n_components", "act_bits_active", "n_tokens",
                                     "scale_owner_share", "at_bound_share", "zero_share", "saturated"])
    qmax = 2 ** (bits - 1) - 1
    captured: dict[str, Any] = {}

    def hook(name: str):
        def fn(_module: Any, inputs: tuple[Any, ...]) -> None:
            captured[name] = inputs[0].detach().float()
        return fn

    handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in layers]
    try:
        with torch.no_grad():
            model.eval()
            model(idx)
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    seen: list[Any] = []
    for name, layer in layers:
        if any(captured[name] is other or torch.equal(captured[name], other) for other in seen):
            continue  # k and v (and a SwiGLU gate) read the very input of q (up): reported once
        seen.append(captured[name])
        x = captured[name].reshape(-1, captured[name].shape[-1])  # (tokens, D)
        n = layer.n
        absmax = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
        q = (x * (qmax / absmax)).round().clamp(-qmax - 1, qmax)
        owner = x.abs().argmax(dim=-1) // (x.shape[-1] // n)
        comps = q.reshape(q.shape[0], n, -1)
        for k in range(n):
            owner_share = float((owner == k).float().mean())
            rows.append({
                "layer": name, "block": _block_index(name), "component": k, "n_components": n,
                "act_bits_active": layer.act_bits is not None, "n_tokens": int(x.shape[0]),
                "scale_owner_share": owner_share,
                "at_bound_share": float((comps[:, k].abs() >= qmax).float().mean()),
                "zero_share": float((comps[:, k] == 0).float().mean()),
                "saturated": owner_share >= dominant_factor / n,
            })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# effective rank


def effective_rank(matrix: Any, *, center: bool = True) -> float:
    """Roy & Vetterli (2007) effective rank of a (samples x features) matrix: exp(entropy of s / sum s)."""
    x = np.asarray(matrix, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"effective_rank needs a 2-D matrix, got shape {x.shape}")
    if center:
        x = x - x.mean(axis=0, keepdims=True)
    s = np.linalg.svd(x, compute_uv=False)
    total = s.sum()
    if total <= 0 or not np.isfinite(total):
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def hidden_state_ranks(model: Any, idx: Any, *, center: bool = True) -> pd.DataFrame:
    """Effective rank per layer (0 = embedding output, i = after block i), whole vector and per component."""
    import torch

    from trainers.model import split_components

    with torch.no_grad():
        model.eval()
        hidden = model(idx, return_hidden=True).hidden
    n = int(getattr(model, "n_components", 1))
    rows = []
    for layer, h in enumerate(hidden):
        flat = h.detach().float().reshape(-1, h.shape[-1]).cpu().numpy()
        dim = flat.shape[1]
        rows.append({"layer": layer, "scope": "all", "component": None, "erank": effective_rank(flat, center=center),
                     "dim": dim, "n_vectors": flat.shape[0]})
        comps = split_components(torch.from_numpy(flat), n).numpy()
        for k in range(n):
            rows.append({"layer": layer, "scope": "component", "component": k,
                         "erank": effective_rank(comps[:, k, :], center=center), "dim": dim // n,
                         "n_vectors": flat.shape[0]})
    frame = pd.DataFrame(rows)
    frame["component"] = frame["component"].astype("Int64")
    frame["erank_ratio"] = frame["erank"] / frame[["dim", "n_vectors"]].min(axis=1)
    return frame


# ----------------------------------------------------------------------------------------------
# batches and whole runs


def token_batch(ids: Sequence[int] | np.ndarray, block_size: int, n_blocks: int) -> Any:
    """(B, T) int64 tensor of consecutive non-overlapping blocks from the start of `ids` (deterministic)."""
    import torch

    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        raise UserError("no tokens to build a batch from")
    t = min(block_size, len(ids))
    b = max(1, min(n_blocks, len(ids) // t))
    return torch.from_numpy(ids[: b * t].reshape(b, t).copy())


def checkpoint_names(run_dir: str | os.PathLike) -> list[str]:
    """Checkpoint directories of a run in training order: step_* snapshots, then latest, best."""
    from trainers.checkpoint import is_checkpoint_dir

    run_dir = Path(run_dir)
    steps = sorted(p.name for p in run_dir.glob("step_*") if is_checkpoint_dir(p))
    return steps + [n for n in ("latest", "best") if is_checkpoint_dir(run_dir / n)]


@dataclass
class DynamicsTables:
    curves: pd.DataFrame
    gap: pd.DataFrame
    phases: pd.DataFrame
    grad_norms: pd.DataFrame
    components: pd.DataFrame
    component_summary: pd.DataFrame
    activations: pd.DataFrame
    ranks: pd.DataFrame

    def as_dict(self) -> dict[str, pd.DataFrame]:
        return dict(self.__dict__)


def _eval_ids(run_dir: Path, ckpt: Any, n_tokens: int, texts: Sequence[str] | None) -> np.ndarray:
    """Held-out token ids: the run's validation array (no re-tokenizing), else `texts`."""
    from corpora.tokenized import open_tokenized

    val_path = (ckpt.state.get("data") or {}).get("val_path")
    if texts is None and val_path and Path(val_path).is_file():
        array, meta = open_tokenized(val_path)
        if meta.tokenizer_identity == ckpt.tokenizer.identity:
            return np.asarray(array[:n_tokens], dtype=np.int64)
    if texts is None:
        raise UserError(f"{run_dir}: its validation array is not available; pass texts for the hidden-state batch")
    ids: list[int] = []
    for text in texts:
        ids += ckpt.tokenizer.encode(text) + [ckpt.tokenizer.eot_id]
        if len(ids) >= n_tokens:
            break
    return np.asarray(ids[:n_tokens], dtype=np.int64)


def run_dynamics(
    run_dir: str | os.PathLike,
    *,
    run: str | None = None,
    checkpoints: str = "all",
    texts: Sequence[str] | None = None,
    n_blocks: int = 8,
    block_size: int | None = None,
    progress: bool = False,
) -> DynamicsTables:
    """Every dynamics table for one run. checkpoints: "all" (step_*, latest, best), "best" or "none"."""
    from tqdm.auto import tqdm

    from trainers.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    facts = run_facts(run_dir, run)
    curves = metrics_frame(run_dir, facts.run)
    phases = pd.concat([loss_phases(curves, m) for m in ("val_loss", "train_loss")], ignore_index=True)
    names = {"all": checkpoint_names(run_dir), "best": ["best"], "none": []}.get(checkpoints)
    if names is None:
        raise UserError(f"checkpoints must be all, best or none, got {checkpoints!r}")
    comp_frames, summ_frames, act_frames, rank_frames = [], [], [], []
    for name in tqdm(names, desc=f"dynamics {facts.run}", unit="ckpt", disable=not progress):
        ckpt = load_checkpoint(run_dir / name)
        label = {"run": facts.run, "model_family": ckpt.config.model.family, "checkpoint": name,
                 "step": ckpt.state.get("iter_num"), "tokens_seen": ckpt.state.get("tokens_seen"),
                 "val_loss": ckpt.state.get("val_loss"), "val_bpc": ckpt.state.get("val_bpc")}
        size = block_size or ckpt.config.train.block_size
        idx = token_batch(_eval_ids(run_dir, ckpt, size * n_blocks, texts), size, n_blocks)
        stats = component_weight_stats(ckpt.model)
        for frame, target in ((stats, comp_frames), (component_summary(stats), summ_frames),
                              (activation_component_stats(ckpt.model, idx), act_frames),
                              (hidden_state_ranks(ckpt.model, idx), rank_frames)):
            target.append(frame.assign(**label) if not frame.empty else frame)

    def cat(frames: list[pd.DataFrame]) -> pd.DataFrame:
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    return DynamicsTables(
        curves=curves, gap=train_val_gap(curves), phases=phases, grad_norms=component_grad_norms(run_dir, facts.run),
        components=cat(comp_frames), component_summary=cat(summ_frames), activations=cat(act_frames),
        ranks=cat(rank_frames),
    )


# ----------------------------------------------------------------------------------------------
# column definitions (meta.json `columns`): what each output column is and which function computed it

_M = "evalsuite.dynamics"
_COMMON = {
    "run": ("run directory name", f"{_M}.run_facts"),
    "model_family": ("spinnet or baseline", f"{_M}.run_facts"),
    "tokenizer": ("tokenizer name of the run", f"{_M}.run_facts"),
    "checkpoint": ("checkpoint folder analysed (step_*, latest, best)", f"{_M}.run_dynamics"),
    "step": ("training step", "trainers.metrics.read_metrics"),
    "tokens_seen": ("training tokens seen at that step", "trainers.metrics.read_metrics"),
    "val_loss": ("validation loss, nats/token", "trainers.metrics.read_metrics"),
    "val_bpc": ("validation loss, bits per character of the val split", "trainers.metrics.read_metrics"),
    "layer": ("layer name (HypercomplexLinear module path; for ranks: 0 = embedding, i = after block i)",
              f"{_M}.component_weight_stats"),
    "block": ("transformer block index of the layer (null for none / all layers)", f"{_M}.component_weight_stats"),
    "component": ("algebra component k (0..n-1), or 'all'", f"{_M}.component_weight_stats"),
    "n_components": ("n of the algebra (components per layer)", f"{_M}.component_weight_stats"),
}
_STREAM = {k: (f"{k} as logged in metrics_stream.jsonl", "trainers.metrics.read_metrics") for k in (
    "train_loss", "train_objective", "lr", "grad_norm", "tokens_per_s", "article_loss", "other_loss",
    "article_other_ratio")}
_TABLES: dict[str, dict[str, tuple[str, str]]] = {
    "curves": {**_STREAM,
               "train_bpc": ("train loss in bits per character of the train split", f"{_M}.metrics_frame"),
               "train_bpc_source": ("which split's tokens/characters converted train_bpc", f"{_M}.metrics_frame")},
    "gap": {"train_loss": ("one batch's train loss at the eval step, nats/token", "trainers.metrics.read_metrics"),
            "train_loss_smoothed": ("mean of the last `window` logged train losses up to the eval step",
                                    f"{_M}.train_val_gap"),
            "train_loss_n": ("train losses averaged into train_loss_smoothed", f"{_M}.train_val_gap"),
            "gap_nats": ("val_loss - train_loss_smoothed, nats/token", f"{_M}.train_val_gap"),
            "train_bpc_smoothed": ("train_loss_smoothed in bits per character", f"{_M}.train_val_gap"),
            "gap_bpc": ("val_bpc - train_bpc_smoothed", f"{_M}.train_val_gap")},
    "phases": {"metric": ("loss fitted (train_loss or val_loss)", f"{_M}.loss_phases"),
               "phase": ("phase number along the curve", f"{_M}.loss_phases"),
               "label": ("rapid-drop / slow-decline / plateau / rising, from the fitted slope", f"{_M}.loss_phases"),
               "start_step": ("first step of the phase", f"{_M}.loss_phases"),
               "end_step": ("last step of the phase", f"{_M}.loss_phases"),
               "start_tokens": ("tokens seen at its start", f"{_M}.loss_phases"),
               "end_tokens": ("tokens seen at its end", f"{_M}.loss_phases"),
               "n_points": ("logged points in the phase", f"{_M}.loss_phases"),
               "slope_per_decade": ("fitted slope, nats per decade of tokens", f"{_M}.loss_phases"),
               "fit_start": ("fitted loss at the start", f"{_M}.loss_phases"),
               "fit_end": ("fitted loss at the end", f"{_M}.loss_phases"),
               "observed_start": ("observed loss at the start", f"{_M}.loss_phases"),
               "observed_end": ("observed loss at the end", f"{_M}.loss_phases"),
               "n_segments": ("segments chosen by BIC (segmented least squares)", f"{_M}.loss_phases"),
               "bic": ("BIC of the chosen segmentation", f"{_M}.loss_phases")},
    "grad_norms": {"grad_norm": ("gradient norm of this algebra component's weights (SpinNet)",
                                 f"{_M}.component_grad_norms")},
    "components": {"weights": ("which weight tensor", f"{_M}.component_weight_stats"),
                   "n_weights": ("ternary weights in the component", f"{_M}.component_weight_stats"),
                   "zero_share": ("share of ternary weights that are 0", f"{_M}.component_weight_stats"),
                   "plus_share": ("share that are +1", f"{_M}.component_weight_stats"),
                   "minus_share": ("share that are -1", f"{_M}.component_weight_stats"),
                   "norm_share": ("component's share of the layer's squared weight norm",
                                  f"{_M}.component_weight_stats"),
                   "dead": ("zero_share >= dead_threshold (default 0.99)", f"{_M}.component_weight_stats"),
                   "dominant": ("norm_share >= dominant_factor / n (default 2/n)", f"{_M}.component_weight_stats")},
    "component_summary": {"dead_ratio": ("share of dead components", f"{_M}.component_summary"),
                          "dominant_ratio": ("share of dominant components", f"{_M}.component_summary"),
                          "zero_weight_share": ("share of ternary weights at zero", f"{_M}.component_summary")},
    "activations": {"act_bits_active": ("whether the model itself quantises activations to 8 bits",
                                        f"{_M}.activation_component_stats"),
                    "n_tokens": ("tokens in the batch", f"{_M}.activation_component_stats"),
                    "scale_owner_share": ("share of tokens whose absmax element lies in this component",
                                          f"{_M}.activation_component_stats"),
                    "at_bound_share": ("share of its elements at |q| = 127", f"{_M}.activation_component_stats"),
                    "zero_share": ("share of its elements rounded to 0", f"{_M}.activation_component_stats"),
                    "saturated": ("scale_owner_share >= dominant_factor / n", f"{_M}.activation_component_stats")},
    "ranks": {"scope": ("whole vector or one component", f"{_M}.hidden_state_ranks"),
              "erank": ("effective rank (Roy & Vetterli 2007) of the centred hidden states", f"{_M}.effective_rank"),
              "dim": ("dimensions of the vectors", f"{_M}.hidden_state_ranks"),
              "n_vectors": ("token vectors in the batch", f"{_M}.hidden_state_ranks"),
              "erank_ratio": ("erank / dim", f"{_M}.hidden_state_ranks")},
}


def column_definitions(table: str) -> dict[str, dict[str, str]]:
    """column -> {definition, computed_by} for one dynamics table (the shared columns included)."""
    from evalsuite.results import column

    return {name: column(*entry) for name, entry in {**_COMMON, **_TABLES[table]}.items()}


def stream_warnings(run_dir: str | os.PathLike) -> list[str]:
    """What a reader of the run's metrics stream should be told: a torn last line that
    `read_metrics` dropped (a crash mid-write), or a stream that ends before the run's latest/
    checkpoint (a file cut at a line boundary, or copied before training finished)."""
    import json

    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    warnings = []
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and not text.endswith("\n"):
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            warnings.append(f"{path}: its torn last line (cut mid-write) was dropped")
    records = read_metrics(run_dir) if lines else []
    state_file = run_dir / "latest" / "trainer_state.json"
    if records and state_file.is_file():
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
            config = json.loads((run_dir / "latest" / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return warnings
        iter_num = state.get("iter_num")
        log_interval = ((config.get("train") or {}).get("log_interval")) or 1
        last = max(r["step"] for r in records)
        if isinstance(iter_num, int) and iter_num - last >= log_interval:
            warnings.append(f"{path} ends at step {last} but latest/ is at step {iter_num}: "
                            "the file looks cut short, and its curves miss the last steps")
    return warnings


def write_dynamics(
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    checkpoints: str = "all",
    n_blocks: int = 8,
    progress: bool = False,
) -> list[Path]:
    """Dynamics tables of several runs, concatenated, as `<out_dir>/<table>.csv` plus `meta.json`."""
    if not run_dirs:
        raise UserError("no run directories given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[pd.DataFrame]] = {}
    runs_meta = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        if not (run_dir / METRICS_FILE).is_file():
            raise UserError(f"{run_dir} is not a run directory (no {METRICS_FILE})")
        if not read_metrics(run_dir):
            raise UserError(f"{run_dir / METRICS_FILE} holds no records: the run logged no step")
        result = run_dynamics(run_dir, checkpoints=checkpoints, n_blocks=n_blocks, progress=progress)
        for name, frame in result.as_dict().items():
            tables.setdefault(name, []).append(frame)
        facts = run_facts(run_dir)
        runs_meta.append({"run": facts.run, "path": str(run_dir.resolve()), "model_family": facts.model_family,
                          "tokenizer": facts.tokenizer, "config": facts.config,
                          "seed": ((facts.config or {}).get("train") or {}).get("seed")})
    from evalsuite.results import build_meta, describe_columns, write_meta, write_table

    written = []
    columns = {}
    for name, frames in tables.items():
        frames = [f for f in frames if not f.empty]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        written += write_table(frame, out / f"{name}.csv")
        columns[f"{name}.csv"] = describe_columns(frame.columns, column_definitions(name), f"{name}.csv")
    seeds = {f"train.seed[{r['run']}]": r["seed"] for r in runs_meta if r["seed"] is not None}
    meta = build_meta(
        "dynamics", config={"checkpoints": checkpoints, "n_blocks": n_blocks}, inputs=[Path(r["path"]) / METRICS_FILE for r in runs_meta],
        seeds=seeds, columns=columns, outputs=[p.name for p in written], extra={"runs": runs_meta},
    )
    written.append(write_meta(out, meta))
    return written

"""`evalsuite diagnose`: the checks a researcher runs when a model writes bad stories.

`diagnose(ckpt_path, samples=None, corpus=None) -> DataFrame` reads a checkpoint (directory, run
directory, or `.spinnet` file), the run it came from, the tokenized training data the run used and,
optionally, generated samples, and returns one row per check:

    check, status (pass/warn/fail/skip), value (a number or NaN), unit, detail (the numbers in words),
    expected (what a healthy run shows), advice (what to do), n, ci_low, ci_high, p_value

Every number is computed from files on disk: nothing is assumed or hard-coded. The thresholds are
rules of thumb and are stated in `expected`, so a reader can disagree with them; they are
module constants below. A check that cannot run (its input is absent) is a `skip` row with the
reason, never a silent omission.

Checks
- config_strict: config.json loads with the strict config loader (unknown or mistyped keys fail).
- vocab_size: model embedding rows vs tokenizer vocabulary (fewer rows than ids = broken model).
- embedding_share: share of parameters in the embedding table (tied head), from the weights file.
- vocab_coverage: training tokens per vocabulary entry, and the share of entries the training data
  never uses (from a bincount of the training array).
- training_progress: step reached vs train.max_iters.
- epochs: tokens seen / training tokens (from the run's data record and the train sidecar).
- tokens_per_parameter: tokens seen per non-embedding parameter (Chinchilla's ~20, Hoffmann et al. 2022).
- best_vs_latest: latest val loss minus best val loss, in nats/token and bits per character.
- train_val_gap: val minus train loss at the last evaluation (from metrics_stream.jsonl).
- lr_decay_iters, min_lr, warmup: cosine schedule consistency.
- tokenizer_identity: checkpoint tokenizer == the training data sidecar's tokenizer_identity
  (and == the identity the run recorded, and == the validation sidecar's).
- dataset_identity: the training array on disk still has the tokens/characters the run recorded.
- article_frequency (+ one row per article): share of article tokens in generated completions vs in
  the training corpus, with Wilson 95% CIs and a two-proportion z-test. Article ids come from
  `corpora.tokenizers.article_token_ids(tokenizer)`; a character-level tokenizer has no article
  tokens, so there the unit is articles per word (regex word split) on decoded text instead.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from corpora.errors import UserError
from evalsuite.stats import two_proportion_test, wilson_ci

COLUMNS = ["check", "status", "value", "unit", "detail", "expected", "advice", "n", "ci_low", "ci_high", "p_value"]
STATUSES = ("pass", "warn", "fail", "skip")

# Rules of thumb (stated in each row's `expected`).
EMBEDDING_SHARE_WARN = 0.5
MIN_TOKENS_PER_VOCAB_ENTRY = 100
UNUSED_VOCAB_WARN = 0.25
EPOCHS_WARN = 4.0
TOKENS_PER_PARAM_WARN = 20.0  # Chinchilla (Hoffmann et al. 2022): ~20 tokens per parameter
BEST_LATEST_GAP_WARN_NATS = 0.02
TRAIN_VAL_GAP_WARN_NATS = 0.1
MIN_LR_RATIO = 0.1  # min_lr = lr / 10 (Chinchilla / nanoGPT convention)
WARMUP_SHARE_WARN = 0.2
ARTICLE_RATIO_OK = (0.8, 1.25)
ARTICLE_RATIO_FAIL = (0.5, 2.0)
ALPHA = 0.05
# Characters of the corpus decoded for word-level article counting (char tokenizers, raw-text corpora).
MAX_CORPUS_CHARS = 20_000_000
# GPT-2's ids that a hard-coded "article" list once held: only 262 is an article.
GPT2_MISTAKEN_IDS = (262, 264, 389)
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


@dataclass
class _Context:
    """Everything the checks read, gathered once."""

    ckpt: Path
    run_dir: Path | None
    config: dict[str, Any]
    state: dict[str, Any]
    latest_state: dict[str, Any] | None
    tokenizer: Any
    param_counts: tuple[int, int] | None  # (total, embedding) or None
    embedding_rows: int | None
    metrics: list[dict[str, Any]] | None
    notes: list[str] = field(default_factory=list)


def _row(check: str, status: str, value: float | None = None, *, unit: str = "", detail: str = "",
         expected: str = "", advice: str = "", n: int | None = None, ci: tuple[float, float] | None = None,
         p_value: float | None = None) -> dict[str, Any]:
    assert status in STATUSES, status
    return {
        "check": check, "status": status, "value": math.nan if value is None else float(value), "unit": unit,
        "detail": detail, "expected": expected, "advice": advice,
        "n": n, "ci_low": ci[0] if ci else math.nan, "ci_high": ci[1] if ci else math.nan,
        "p_value": math.nan if p_value is None else float(p_value),
    }


def _skip(check: str, reason: str) -> dict[str, Any]:
    return _row(check, "skip", detail=reason)


# ----------------------------------------------------------------------------------------------
# reading the checkpoint and its run


def _param_counts(checkpoint_dir: Path) -> tuple[tuple[int, int], int | None]:
    """(total, embedding) parameter counts and the embedding's row count, from the file header only."""
    from trainers.checkpoint import model_tensor_shapes

    total = emb = 0
    rows = None
    for key, shape in model_tensor_shapes(checkpoint_dir).items():
        numel = int(np.prod(shape)) if shape else 1
        total += numel
        if key.endswith("wte.weight"):
            emb += numel
            rows = int(shape[0])
    return (total, emb), rows


def _load_context(ckpt_path: str | Path) -> _Context:
    from corpora.tokenizers import load_tokenizer
    from trainers.checkpoint import (
        TOKENIZER_DIR,
        read_config_dict,
        read_state,
        resolve_checkpoint,
        verify_model_file,
    )

    path = Path(ckpt_path).expanduser()
    if path.suffix == ".spinnet":
        return _load_spinnet_context(path)
    ckpt = resolve_checkpoint(path, prefer="best")
    run_dir: Path | None = None
    for candidate in (path, ckpt.parent):
        if candidate.is_dir() and ((candidate / "metrics_stream.jsonl").is_file() or (candidate / "latest").is_dir()):
            run_dir = candidate
            break
    config = read_config_dict(ckpt)
    state = read_state(ckpt)
    latest_state = None
    if run_dir is not None:
        try:
            latest = resolve_checkpoint(run_dir, prefer="latest")
            latest_state = read_state(latest)
        except UserError:
            latest_state = None
    tokenizer = load_tokenizer(ckpt / TOKENIZER_DIR)
    verify_model_file(ckpt)  # a damaged model.safetensors is one clear line (trainers.checkpoint)
    counts, rows = _param_counts(ckpt)
    metrics = None
    if run_dir is not None and (run_dir / "metrics_stream.jsonl").is_file():
        from trainers.metrics import read_metrics

        metrics = read_metrics(run_dir / "metrics_stream.jsonl")
    return _Context(ckpt, run_dir, config, state, latest_state, tokenizer, counts, rows, metrics)


def _load_spinnet_context(path: Path) -> _Context:
    import torch

    from trainers.checkpoint import load_checkpoint

    loaded = load_checkpoint(path)
    total = sum(p.numel() for p in loaded.model.parameters()) + sum(
        b.numel() for name, b in loaded.model.named_buffers() if name.endswith("frozen_trits")
    )
    emb = sum(m.weight.numel() for m in loaded.model.modules() if isinstance(m, torch.nn.Embedding))
    rows = next((m.weight.shape[0] for m in loaded.model.modules() if isinstance(m, torch.nn.Embedding)), None)
    return _Context(path, None, loaded.config.to_dict(), dict(loaded.state), None, loaded.tokenizer,
                    (int(total), int(emb)), rows, None, notes=[".spinnet file: no run directory beside it"])


# ----------------------------------------------------------------------------------------------
# checks: configuration and vocabulary


def _check_config_strict(ctx: _Context) -> dict[str, Any]:
    from trainers.config import config_from_dict

    try:
        config_from_dict(ctx.config)
    except UserError as err:
        return _row("config_strict", "fail", detail=f"config.json does not load strictly: {err}",
                    expected="the saved config loads with the strict loader",
                    advice="the checkpoint was written by another version or edited by hand; re-check every setting")
    return _row("config_strict", "pass", detail="config.json loads with the strict loader",
                expected="the saved config loads with the strict loader")


def _check_mixer(ctx: _Context) -> dict[str, Any]:
    """SpinNet's octonion head mixer must be on unless the run labelled it an ablation (issue 12:
    every study run had it off by a config bug while its README said "octonion")."""
    model = ctx.config.get("model", {})
    expected = "SpinNet trains with model.octonion_attention=true, or labels model.ablations=[mixer-off]"
    if model.get("family") != "spinnet":
        return _skip("octonion_mixer", "not a SpinNet checkpoint")
    if model.get("octonion_attention"):
        return _row("octonion_mixer", "pass", 1.0, detail="the octonion head mixer is on", expected=expected)
    if "mixer-off" in (model.get("ablations") or []):
        return _row("octonion_mixer", "pass", 0.0, detail="mixer off, as the run asked (ablations: mixer-off)",
                    expected=expected)
    return _row("octonion_mixer", "fail", 0.0, detail="the octonion head mixer is off and the run did not ask for that",
                expected=expected,
                advice="retrain with the mixer on (the SpinNet presets now default to it), or label the run an "
                       "ablation with model.ablations=[mixer-off]; do not call this model 'octonion attention'")


def _check_vocab_size(ctx: _Context) -> dict[str, Any]:
    model_vocab = ctx.config.get("model", {}).get("vocab_size")
    rows = ctx.embedding_rows if ctx.embedding_rows is not None else model_vocab
    tok_vocab = ctx.tokenizer.vocab_size
    expected = "embedding rows == tokenizer vocabulary (or a few padding rows more)"
    if rows is None:
        return _skip("vocab_size", "the model's vocabulary size is not recorded")
    detail = f"model {rows:,} rows (config vocab_size {model_vocab}), tokenizer {ctx.tokenizer.name} {tok_vocab:,} ids"
    if rows < tok_vocab:
        return _row("vocab_size", "fail", rows - tok_vocab, unit="rows", detail=detail, expected=expected,
                    advice="the tokenizer emits ids the model has no embedding for: this checkpoint and tokenizer "
                    "do not belong together")
    extra = rows - tok_vocab
    if extra > max(64, 0.02 * tok_vocab):
        return _row("vocab_size", "warn", extra, unit="rows", detail=detail + f": {extra:,} rows never used",
                    expected=expected, advice="unused embedding rows cost parameters and get only negative "
                    "gradient; size the model's vocabulary from the tokenizer (model.vocab_size: null)")
    return _row("vocab_size", "pass", extra, unit="rows", detail=detail, expected=expected)


def _check_embedding_share(ctx: _Context) -> dict[str, Any]:
    if ctx.param_counts is None:
        return _skip("embedding_share", "parameter counts unavailable")
    total, emb = ctx.param_counts
    share = emb / total if total else math.nan
    family = ctx.config.get("model", {}).get("family", "?")
    detail = f"{emb:,} of {total:,} parameters are the (tied) embedding table; model family {family}"
    expected = f"embedding share <= {EMBEDDING_SHARE_WARN:.0%}"
    if share > EMBEDDING_SHARE_WARN:
        advice = (
            "most of the model is its vocabulary table, so little capacity is left for the transformer blocks; "
            "a smaller vocabulary trained on the corpus (`evalsuite tokenizer train CORPUS --vocab-size 8000 -o DIR`) "
            "or a wider model moves capacity back into the blocks"
        )
        if family == "spinnet":
            advice += "; in SpinNet the blocks are ternary while the embedding stays full precision, so the imbalance in bits is larger still"
        return _row("embedding_share", "warn", share, unit="fraction", detail=detail, expected=expected, advice=advice)
    return _row("embedding_share", "pass", share, unit="fraction", detail=detail, expected=expected)


# ----------------------------------------------------------------------------------------------
# training data


@dataclass
class _TrainData:
    path: Path
    meta: Any
    counts: np.ndarray | None  # bincount of the ids over the whole array


def _train_data(ctx: _Context, corpus: Path | None) -> tuple[_TrainData | None, str]:
    """The tokenized training array: `corpus` if it is a .bin, else the one the run recorded."""
    from corpora.tokenized import read_meta

    recorded = (ctx.state.get("data") or {}).get("train_path")
    if corpus is not None and corpus.suffix == ".bin":
        candidate = corpus
    elif recorded:
        candidate = Path(recorded)
    else:
        return None, "the checkpoint records no training data path"
    if not candidate.is_file():
        return None, f"training array {candidate} not found (moved or deleted since training)"
    try:
        meta = read_meta(candidate)
    except UserError as err:
        return None, str(err)
    return _TrainData(candidate, meta, None), ""


def _bincount(data: _TrainData, vocab_size: int, chunk: int = 1 << 24) -> np.ndarray:
    """Count of every id in the training array, streamed in chunks (arrays can be GBs)."""
    from corpora.tokenized import open_tokenized

    if data.counts is None:
        array, _ = open_tokenized(data.path)
        counts = np.zeros(max(vocab_size, data.meta.vocab_size), dtype=np.int64)
        for start in range(0, len(array), chunk):
            part = np.asarray(array[start : start + chunk])
            binc = np.bincount(part, minlength=len(counts))
            if len(binc) > len(counts):
                counts = np.pad(counts, (0, len(binc) - len(counts)))
            counts += binc
        data.counts = counts
    return data.counts


def _check_vocab_coverage(ctx: _Context, data: _TrainData | None, why: str) -> dict[str, Any]:
    if data is None:
        return _skip("vocab_coverage", why)
    vocab = ctx.tokenizer.vocab_size
    per_entry = data.meta.n_tokens / vocab
    counts = _bincount(data, vocab)[:vocab]
    unused = float(np.mean(counts == 0))
    detail = (f"{data.meta.n_tokens:,} training tokens for {vocab:,} vocabulary entries = {per_entry:,.1f} per entry; "
              f"{unused:.1%} of the entries never occur in the training data")
    expected = f">= {MIN_TOKENS_PER_VOCAB_ENTRY} tokens per entry and <= {UNUSED_VOCAB_WARN:.0%} of entries unused"
    problems = []
    if per_entry < MIN_TOKENS_PER_VOCAB_ENTRY:
        problems.append(f"the training data is small for this vocabulary: each entry is seen {per_entry:,.1f} times "
                        "on average, so rare entries get few updates; use more text or a smaller vocabulary")
    if unused > UNUSED_VOCAB_WARN:
        problems.append(f"{unused:.0%} of the vocabulary never occurs in this corpus (a tokenizer made for other "
                        "text): those rows only ever get pushed down and still cost parameters; train a tokenizer "
                        "on this corpus (`evalsuite tokenizer train CORPUS --vocab-size 8000 -o DIR`)")
    if problems:
        return _row("vocab_coverage", "warn", per_entry, unit="tokens/entry", detail=detail, expected=expected,
                    n=int(data.meta.n_tokens), advice="; ".join(problems))
    return _row("vocab_coverage", "pass", per_entry, unit="tokens/entry", detail=detail, expected=expected,
                n=int(data.meta.n_tokens))


def _check_progress(ctx: _Context) -> dict[str, Any]:
    train = ctx.config.get("train", {})
    max_iters, step = train.get("max_iters"), ctx.state.get("iter_num")
    if max_iters is None or step is None:
        return _skip("training_progress", "iter_num or train.max_iters not recorded")
    latest_step = (ctx.latest_state or {}).get("iter_num", step)
    share = latest_step / max_iters
    detail = f"this checkpoint is at step {step:,}; the run's latest is at step {latest_step:,} of max_iters {max_iters:,}"
    expected = "the run reached train.max_iters"
    if latest_step < max_iters:
        return _row("training_progress", "warn", share, unit="fraction of max_iters", detail=detail, expected=expected,
                    advice="the run has not finished (or stopped early): the learning rate had not decayed yet; "
                    "resume it with `evalsuite train --resume` before judging its stories")
    return _row("training_progress", "pass", share, unit="fraction of max_iters", detail=detail, expected=expected)


def _check_epochs(ctx: _Context, data: _TrainData | None, why: str) -> dict[str, Any]:
    recorded = (ctx.state.get("data") or {}).get("train_tokens")
    n_train = data.meta.n_tokens if data is not None else recorded
    seen = ctx.state.get("tokens_seen")
    if n_train is None or seen is None:
        return _skip("epochs", why or "tokens_seen or the training size is not recorded")
    epochs = seen / n_train if n_train else math.inf
    detail = f"{seen:,} tokens seen / {n_train:,} training tokens = {epochs:.2f} epochs"
    expected = f"<= {EPOCHS_WARN:g} epochs (each token seen a few times at most)"
    if epochs > EPOCHS_WARN:
        return _row("epochs", "warn", epochs, unit="epochs", detail=detail, expected=expected, n=int(n_train),
                    advice="the model has seen its training data many times and may memorise it; compare train and "
                    "val loss (train_val_gap), use more text, or stop earlier (the best/ checkpoint)")
    return _row("epochs", "pass", epochs, unit="epochs", detail=detail, expected=expected, n=int(n_train))


def _check_tokens_per_param(ctx: _Context) -> dict[str, Any]:
    seen = ctx.state.get("tokens_seen")
    if ctx.param_counts is None or seen is None:
        return _skip("tokens_per_parameter", "tokens_seen or parameter counts unavailable")
    total, emb = ctx.param_counts
    non_emb = total - emb
    ratio = seen / non_emb if non_emb else math.inf
    detail = f"{seen:,} tokens seen / {non_emb:,} non-embedding parameters = {ratio:.2f} tokens per parameter"
    expected = f">= {TOKENS_PER_PARAM_WARN:g} tokens per parameter (Chinchilla, Hoffmann et al. 2022)"
    if ratio < TOKENS_PER_PARAM_WARN:
        return _row("tokens_per_parameter", "warn", ratio, unit="tokens/param", detail=detail, expected=expected,
                    advice="by the compute-optimal rule of thumb the model is undertrained: train longer or use a "
                    "smaller model for this budget")
    return _row("tokens_per_parameter", "pass", ratio, unit="tokens/param", detail=detail, expected=expected)


# ----------------------------------------------------------------------------------------------
# losses


def _bpc_per_nat(ctx: _Context, split: str = "val") -> float | None:
    """bits per character per nat/token for a split: n_tokens / (n_chars ln 2), from the run's data record."""
    data = ctx.state.get("data") or {}
    tokens, chars = data.get(f"{split}_tokens"), data.get(f"{split}_chars")
    if tokens and chars:
        return tokens / (chars * math.log(2))
    loss, bpc = ctx.state.get("val_loss"), ctx.state.get("val_bpc")
    if split == "val" and loss and bpc:
        return bpc / loss
    return None


def _check_best_vs_latest(ctx: _Context) -> dict[str, Any]:
    source = ctx.latest_state or ctx.state
    latest, best = source.get("val_loss"), source.get("best_val_loss")
    if latest is None or best is None:
        return _skip("best_vs_latest", "val_loss or best_val_loss not recorded")
    gap = latest - best
    factor = _bpc_per_nat(ctx)
    gap_bpc = gap * factor if factor else math.nan
    detail = (f"latest val loss {latest:.4f} (step {source.get('iter_num')}), best {best:.4f} "
              f"(step {source.get('best_iter')}): gap {gap:.4f} nats/token = {gap_bpc:.4f} bits/char")
    expected = f"latest within {BEST_LATEST_GAP_WARN_NATS} nats/token of best"
    if gap > BEST_LATEST_GAP_WARN_NATS:
        return _row("best_vs_latest", "warn", gap, unit="nats/token", detail=detail, expected=expected,
                    advice="validation loss rose after its best point (overfitting or instability): evaluate the "
                    "best/ checkpoint and look at the loss curve (evalsuite figures)")
    return _row("best_vs_latest", "pass", gap, unit="nats/token", detail=detail, expected=expected)


def _check_train_val_gap(ctx: _Context) -> dict[str, Any]:
    if not ctx.metrics:
        return _skip("train_val_gap", "no metrics_stream.jsonl beside the checkpoint")
    evals = [r for r in ctx.metrics if r.get("val_loss") is not None and r.get("train_loss") is not None]
    if not evals:
        return _skip("train_val_gap", "no step has both a train and a val loss yet")
    last = evals[-1]
    gap = last["val_loss"] - last["train_loss"]
    factor = _bpc_per_nat(ctx)
    detail = (f"step {last['step']}: val {last['val_loss']:.4f} - train {last['train_loss']:.4f} = {gap:.4f} nats/token"
              + (f" ({gap * factor:.4f} bits/char)" if factor else "")
              + "; the train loss is one batch's, so it is noisy")
    expected = f"val - train <= {TRAIN_VAL_GAP_WARN_NATS} nats/token"
    if gap > TRAIN_VAL_GAP_WARN_NATS:
        return _row("train_val_gap", "warn", gap, unit="nats/token", detail=detail, expected=expected,
                    advice="the model fits its training text better than unseen text (memorisation): more data, "
                    "fewer epochs, dropout or weight decay")
    return _row("train_val_gap", "pass", gap, unit="nats/token", detail=detail, expected=expected)


# ----------------------------------------------------------------------------------------------
# learning-rate schedule


def _final_lr(train: dict[str, Any]) -> float:
    """The lr of the last step, by the trainer's own schedule function."""
    from types import SimpleNamespace

    from trainers.train import lr_at

    cfg = SimpleNamespace(lr=train["lr"], min_lr=train["min_lr"], warmup_iters=train["warmup_iters"],
                          lr_decay_iters=train["lr_decay_iters"])
    return lr_at(train["max_iters"] - 1, cfg)  # type: ignore[arg-type]


def _schedule_values(ctx: _Context) -> dict[str, Any] | None:
    train = dict(ctx.config.get("train", {}))
    if not all(k in train for k in ("lr", "max_iters", "warmup_iters")):
        return None
    train.setdefault("min_lr", None)
    train.setdefault("lr_decay_iters", None)
    if train["min_lr"] is None:
        train["min_lr"] = train["lr"] / 10
    if train["lr_decay_iters"] is None:
        train["lr_decay_iters"] = train["max_iters"]
    return train


def _check_lr_decay(ctx: _Context) -> dict[str, Any]:
    train = _schedule_values(ctx)
    if train is None:
        return _skip("lr_decay_iters", "lr, max_iters or warmup_iters not in config.json")
    decay, max_iters, min_lr = train["lr_decay_iters"], train["max_iters"], train["min_lr"]
    final = _final_lr(train)
    logged = [r["lr"] for r in (ctx.metrics or []) if r.get("lr") is not None]
    detail = (f"lr_decay_iters {decay:,}, max_iters {max_iters:,}: lr at the last step {final:.3g} "
              f"(min_lr {min_lr:.3g})" + (f"; last logged lr {logged[-1]:.3g}" if logged else ""))
    expected = "lr_decay_iters == max_iters (the cosine ends at min_lr on the last step)"
    ratio = decay / max_iters
    if decay == max_iters:
        return _row("lr_decay_iters", "pass", ratio, unit="lr_decay_iters/max_iters", detail=detail, expected=expected)
    if final > 1.5 * min_lr:
        return _row("lr_decay_iters", "fail", ratio, unit="lr_decay_iters/max_iters", detail=detail, expected=expected,
                    advice=f"the schedule never finished: training stopped at lr {final:.3g}, {final / min_lr:.1f}x "
                    "min_lr, so the model never got the low-lr annealing that sharpens it; set "
                    "train.lr_decay_iters = train.max_iters")
    if decay < max_iters:
        advice = (f"the last {max_iters - decay:,} steps ran at the floor min_lr; set train.lr_decay_iters = "
                  "train.max_iters to spend them on the cosine")
    else:
        advice = (f"the cosine was cut {decay - max_iters:,} steps before its end (last step at lr {final:.3g}, "
                  f"{final / min_lr:.2f}x min_lr); set train.lr_decay_iters = train.max_iters")
    return _row("lr_decay_iters", "warn", ratio, unit="lr_decay_iters/max_iters", detail=detail, expected=expected,
                advice=advice)


def _check_min_lr(ctx: _Context) -> dict[str, Any]:
    train = _schedule_values(ctx)
    if train is None:
        return _skip("min_lr", "lr not in config.json")
    lr, min_lr = train["lr"], train["min_lr"]
    ratio = min_lr / lr
    detail = f"min_lr {min_lr:.3g} = {ratio:.3g} x lr {lr:.3g}"
    expected = f"min_lr = lr/10 (ratio {MIN_LR_RATIO})"
    if ratio > 1:
        return _row("min_lr", "fail", ratio, unit="min_lr/lr", detail=detail, expected=expected,
                    advice="min_lr above lr makes the 'decay' a ramp up; set train.min_lr below train.lr")
    if abs(ratio - MIN_LR_RATIO) <= 0.01 * MIN_LR_RATIO:
        return _row("min_lr", "pass", ratio, unit="min_lr/lr", detail=detail, expected=expected)
    what = "barely decays" if ratio > 0.5 else ("decays further than usual" if ratio < MIN_LR_RATIO else "decays less than usual")
    return _row("min_lr", "warn", ratio, unit="min_lr/lr", detail=detail + f": the lr {what}", expected=expected,
                advice="the usual cosine schedule ends at lr/10 (Chinchilla); leave train.min_lr null unless you "
                "mean to differ")


def _check_warmup(ctx: _Context) -> dict[str, Any]:
    train = _schedule_values(ctx)
    if train is None:
        return _skip("warmup", "warmup_iters or max_iters not in config.json")
    warmup, max_iters, decay = train["warmup_iters"], train["max_iters"], train["lr_decay_iters"]
    share = warmup / max_iters
    detail = f"warmup_iters {warmup:,} = {share:.1%} of max_iters {max_iters:,}"
    expected = f"0 < warmup_iters <= {WARMUP_SHARE_WARN:.0%} of max_iters"
    if warmup >= decay:
        return _row("warmup", "fail", share, unit="fraction of max_iters", detail=detail, expected=expected,
                    advice="the warmup never ends before the decay should: set train.warmup_iters well below max_iters")
    if warmup == 0:
        return _row("warmup", "warn", share, unit="fraction of max_iters", detail=detail, expected=expected,
                    advice="no warmup: the first steps at full lr can destabilise Adam; a warmup of ~1-5% is usual")
    if share > WARMUP_SHARE_WARN:
        return _row("warmup", "warn", share, unit="fraction of max_iters", detail=detail, expected=expected,
                    advice="a long warmup leaves little of the run at a useful lr; shorten train.warmup_iters")
    return _row("warmup", "pass", share, unit="fraction of max_iters", detail=detail, expected=expected)


# ----------------------------------------------------------------------------------------------
# identities


def _check_tokenizer_identity(ctx: _Context, data: _TrainData | None, why: str) -> dict[str, Any]:
    ours = ctx.tokenizer.identity
    recorded = (ctx.state.get("data") or {}).get("tokenizer_identity")
    expected = "checkpoint tokenizer identity == the training data sidecar's tokenizer_identity"
    mismatches = []
    if recorded is not None and recorded != ours:
        mismatches.append(f"the run recorded {recorded}")
    if data is not None and data.meta.tokenizer_identity != ours:
        mismatches.append(f"{data.path.name} sidecar says {data.meta.tokenizer_identity}")
    val_path = (ctx.state.get("data") or {}).get("val_path")
    if val_path and Path(val_path).is_file():
        from corpora.tokenized import read_meta

        try:
            val_meta = read_meta(val_path)
            if val_meta.tokenizer_identity != ours:
                mismatches.append(f"{Path(val_path).name} sidecar says {val_meta.tokenizer_identity}")
        except UserError as err:
            mismatches.append(f"validation sidecar unreadable: {err}")
    detail = f"checkpoint tokenizer {ctx.tokenizer.name} is {ours}"
    if mismatches:
        return _row("tokenizer_identity", "fail", 0.0, unit="match", detail=detail + "; but " + "; ".join(mismatches),
                    expected=expected, advice="the ids the model was trained on mean different text than its "
                    "tokenizer decodes: samples and losses are meaningless; retrain or pair the right tokenizer")
    if data is None and recorded is None:
        return _skip("tokenizer_identity", why or "no training data record to compare with")
    src = f"{data.path.name} sidecar" if data is not None else "the run's data record"
    status_detail = detail + f"; {src} agrees" + ("" if data is not None else f" (array not checked: {why})")
    return _row("tokenizer_identity", "pass" if data is not None else "warn", 1.0, unit="match", detail=status_detail,
                expected=expected, advice="" if data is not None else "the training array could not be opened, "
                "so only the recorded identity was compared")


def _describe_source(source: Any) -> str:
    """The corpus path (and split) a tokenized sidecar names, in a few words."""
    if isinstance(source, dict):
        corpus = source.get("corpus") if isinstance(source.get("corpus"), dict) else source
        where = corpus.get("path", "?") if isinstance(corpus, dict) else "?"
        extra = [f"{k} {source[k]}" for k in ("side", "val_fraction", "seed") if k in source]
        return where + (f" ({', '.join(extra)})" if extra else "")
    return "an unrecorded source" if source is None else json.dumps(source)[:120]


def _check_dataset_identity(ctx: _Context, data: _TrainData | None, why: str) -> dict[str, Any]:
    recorded = ctx.state.get("data") or {}
    if data is None:
        return _skip("dataset_identity", why)
    expected = "the training array on disk has the tokens and characters the run recorded"
    pairs = [("train_tokens", data.meta.n_tokens), ("train_chars", data.meta.n_chars),
             ("train_documents", data.meta.n_documents)]
    diffs = [f"{k}: recorded {recorded[k]:,}, now {v:,}" for k, v in pairs if k in recorded and recorded[k] != v]
    detail = (f"{data.path}: {data.meta.n_documents:,} documents, {data.meta.n_tokens:,} tokens, "
              f"{data.meta.n_chars:,} characters; made from {_describe_source(data.meta.source)}")
    if not any(k in recorded for k, _ in pairs):
        return _row("dataset_identity", "warn", detail=detail, expected=expected,
                    advice="the checkpoint records no data sizes, so the array cannot be tied to the run")
    if diffs:
        return _row("dataset_identity", "fail", 0.0, unit="match", detail=detail + "; " + "; ".join(diffs),
                    expected=expected, advice="the training data changed since this checkpoint was trained: "
                    "epochs and corpus statistics below describe different text")
    return _row("dataset_identity", "pass", 1.0, unit="match", detail=detail, expected=expected)


# ----------------------------------------------------------------------------------------------
# article frequency


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """samples.jsonl records (each must have a string `completion`): evalsuite.samples.read_samples."""
    from evalsuite.samples import read_samples as read_sample_records

    return read_sample_records(path)


def _same_path(a: Any, b: Path) -> bool:
    try:
        return Path(str(a)).expanduser().resolve() == b.resolve()
    except (OSError, ValueError):
        return False


def samples_for_checkpoint(records: list[dict[str, Any]], ckpt: Path, run_dir: Path | None,
                           state: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The samples generated by this checkpoint, and how they were matched.

    A record matches when its `checkpoint_id` is this checkpoint's (`evalsuite.generate.checkpoint_id`:
    run/name plus a hash of the weights), else when its `checkpoint` path is this checkpoint (or its
    run directory, which loads best/), else (samples made elsewhere, weights re-saved) when its
    `tokens_seen` equals this checkpoint's. A file that names no checkpoint at all is taken whole,
    and the detail says so.
    """
    from evalsuite.generate import checkpoint_id

    # a record whose checkpoint_id was only defaulted from the file name names no checkpoint
    named = [r for r in records if r.get("checkpoint_id_from", "checkpoint_id") != "file name"]
    if not named:
        return records, "samples name no checkpoint: all used"
    if ckpt.suffix == ".spinnet" or (ckpt / "model.safetensors").is_file():
        ours = checkpoint_id(ckpt)
        by_id = [r for r in records if r.get("checkpoint_id") == ours]
        if by_id:
            return by_id, f"matched by checkpoint_id {ours}"
    by_path = [r for r in records if _same_path(r.get("checkpoint"), ckpt)
               or (run_dir is not None and _same_path(r.get("checkpoint"), run_dir) and ckpt.name == "best")]
    if by_path:
        return by_path, "matched by checkpoint path"
    seen = state.get("tokens_seen")
    by_tokens = [r for r in records if seen is not None and r.get("tokens_seen") == seen]
    if by_tokens:
        return by_tokens, f"matched by tokens_seen={seen} (no path matched)"
    names = sorted({str(r.get("checkpoint")) for r in records})
    return [], f"no sample was generated by this checkpoint (samples name {', '.join(names[:3])})"


def _word_article_counts(texts: Iterable[str]) -> tuple[dict[str, int], int]:
    counts = {a: 0 for a in ("the", "a", "an")}
    total = 0
    for text in texts:
        for word in _WORD.findall(text):
            total += 1
            low = word.lower()
            if low in counts:
                counts[low] += 1
    return counts, total


@dataclass
class _ArticleTable:
    """Per-id lookups for whole-word article counting."""

    names: list[str]
    article_of: np.ndarray  # index into names, or -1
    starts_alpha: np.ndarray  # decoded token begins with a letter
    ends_alpha: np.ndarray  # decoded token ends with a letter
    starts_space: np.ndarray  # decoded token begins with whitespace
    eot: int


def _article_table(tokenizer: Any, groups: dict[str, list[int]]) -> _ArticleTable:
    texts = [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
    article_of = np.full(len(texts), -1, dtype=np.int64)
    names = list(groups)
    for index, name in enumerate(names):
        article_of[groups[name]] = index
    return _ArticleTable(
        names, article_of,
        np.array([bool(t) and t[0].isalpha() for t in texts]),
        np.array([bool(t) and t[-1].isalpha() for t in texts]),
        np.array([bool(t) and t[0].isspace() for t in texts]),
        int(tokenizer.eot_id),
    )


def _count_whole_word(ids: np.ndarray, table: _ArticleTable, lo: int = 0, hi: int | None = None) -> tuple[np.ndarray, int]:
    """Article tokens in ids[lo:hi] that stand as whole words, and the number of non-eot tokens there.

    An article id only counts where it is a word of its own: not glued to a letter before it (unless
    the token itself starts with a space) nor to a letter after it. Byte-level BPE has tokens like
    "a" and "the" that also occur as pieces of longer words ("a" + "pple"); those are not articles.
    """
    hi = len(ids) if hi is None else hi
    ids = np.asarray(ids, dtype=np.int64)
    counts = np.zeros(len(table.names), dtype=np.int64)
    if len(ids) == 0:
        return counts, 0
    art = table.article_of[ids]
    cand = np.nonzero(art >= 0)[0]
    cand = cand[(cand >= lo) & (cand < hi)]
    prev = ids[np.maximum(cand - 1, 0)]
    nxt = ids[np.minimum(cand + 1, len(ids) - 1)]
    prev_ok = (cand == 0) | table.starts_space[ids[cand]] | ~table.ends_alpha[prev]
    next_ok = (cand == len(ids) - 1) | ~table.starts_alpha[nxt]
    keep = cand[prev_ok & next_ok]
    counts += np.bincount(art[keep], minlength=len(table.names))
    window = ids[lo:hi]
    return counts, int(len(window) - np.count_nonzero(window == table.eot))


def _token_article_counts(ids_lists: Iterable[list[int]], table: _ArticleTable) -> tuple[dict[str, int], int]:
    counts = np.zeros(len(table.names), dtype=np.int64)
    total = 0
    for ids in ids_lists:
        c, n = _count_whole_word(np.asarray(ids, dtype=np.int64), table)
        counts += c
        total += n
    return dict(zip(table.names, counts.tolist(), strict=True)), total


def _corpus_text(data: _TrainData | None, corpus: Path | None, tokenizer: Any) -> tuple[list[str], str]:
    """Up to MAX_CORPUS_CHARS of corpus text: raw text from `corpus` or the decoded training array."""
    if corpus is not None and corpus.suffix != ".bin":
        from corpora.documents import iter_documents

        texts, n = [], 0
        for doc in iter_documents(corpus):
            texts.append(doc)
            n += len(doc)
            if n >= MAX_CORPUS_CHARS:
                break
        return texts, f"{corpus} (raw text, first {n:,} characters)"
    assert data is not None
    from corpora.tokenized import open_tokenized

    array, meta = open_tokenized(data.path)
    n_tokens = min(len(array), int(MAX_CORPUS_CHARS * meta.n_tokens / max(1, meta.n_chars)) + 1)
    text = tokenizer.decode(np.asarray(array[:n_tokens]).tolist())
    return [text], f"{data.path.name} (decoded, first {n_tokens:,} of {meta.n_tokens:,} tokens)"


def _corpus_token_counts(data: _TrainData | None, corpus: Path | None, tokenizer: Any,
                         table: _ArticleTable, chunk: int = 1 << 24) -> tuple[dict[str, int], int, str]:
    if corpus is not None and corpus.suffix != ".bin":
        texts, source = _corpus_text(None, corpus, tokenizer)
        counts, total = _token_article_counts(tokenizer.encode_batch(texts), table)
        return counts, total, source
    assert data is not None
    from corpora.tokenized import open_tokenized

    array, meta = open_tokenized(data.path)
    counts = np.zeros(len(table.names), dtype=np.int64)
    total = 0
    for start in range(0, len(array), chunk):  # one token of overlap each side keeps word context
        lo = max(0, start - 1)
        part = np.asarray(array[lo : start + chunk + 1], dtype=np.int64)
        c, n = _count_whole_word(part, table, start - lo, start - lo + min(chunk, len(array) - start))
        counts += c
        total += n
    # eot separators are not text; completions are counted without them as well
    return (dict(zip(table.names, counts.tolist(), strict=True)), total,
            f"{data.path.name} (all {meta.n_tokens:,} tokens, eot excluded)")


def _article_status(ratio: float, p: float) -> str:
    significant = not math.isnan(p) and p < ALPHA
    if math.isnan(ratio):
        return "warn"
    if not significant or ARTICLE_RATIO_OK[0] <= ratio <= ARTICLE_RATIO_OK[1]:
        return "pass"
    if ratio < ARTICLE_RATIO_FAIL[0] or ratio > ARTICLE_RATIO_FAIL[1]:
        return "fail"
    return "warn"


def _id_note(tokenizer: Any, groups: dict[str, list[int]]) -> str:
    shown = ", ".join(f"{a}: " + "/".join(f"{i}={tokenizer.decode([i])!r}" for i in ids) for a, ids in groups.items())
    note = f"article ids derived from the tokenizer ({shown})"
    if tokenizer.vocab_size > max(GPT2_MISTAKEN_IDS):
        decoded = ", ".join(f"{i}={tokenizer.decode([i])!r}" for i in GPT2_MISTAKEN_IDS)
        note += (f"; never hard-code ids: a list like 262, 264, 389 is {decoded} in this tokenizer "
                 "(in GPT-2: ' the', ' s', ' are', one article and two non-articles)")
    else:
        note += "; never hard-code ids (in GPT-2, 262, 264, 389 are ' the', ' s', ' are': one article and two non-articles)"
    return note


def _check_articles(ctx: _Context, samples: Path | None, corpus: Path | None, data: _TrainData | None,
                    why: str) -> list[dict[str, Any]]:
    from corpora.tokenizers import article_token_ids

    if samples is None:
        return [_skip("article_frequency", "no samples given (--samples samples.jsonl from `evalsuite generate`)")]
    records, how = samples_for_checkpoint(read_samples(samples), ctx.ckpt, ctx.run_dir, ctx.state)
    if not records:
        return [_skip("article_frequency", how)]
    if data is None and (corpus is None or corpus.suffix == ".bin"):
        return [_skip("article_frequency", f"no corpus to compare with: {why}; pass --corpus")]
    completions = [r["completion"] for r in records]
    tokenizer = ctx.tokenizer
    groups = {a: ids for a, ids in article_token_ids(tokenizer).items() if ids}
    if groups:
        unit = "share of tokens"
        table = _article_table(tokenizer, groups)
        gen_counts, gen_total = _token_article_counts(tokenizer.encode_batch(completions), table)
        corp_counts, corp_total, source = _corpus_token_counts(data, corpus, tokenizer, table)
        note = _id_note(tokenizer, groups) + ("; an article id counts only where it stands as a whole word "
                                              "(byte-level BPE also uses 'a', 'the' as pieces of longer words)")
    else:
        unit = "share of words"
        gen_counts, gen_total = _word_article_counts(completions)
        texts, source = _corpus_text(data, corpus, tokenizer)
        corp_counts, corp_total = _word_article_counts(texts)
        note = (f"the {tokenizer.name} tokenizer has no article tokens (its 'a' is also the letter in 'cat'), "
                "so articles are counted as words on the decoded text")
    rows = []
    expected = (f"generated share within {ARTICLE_RATIO_OK[0]}-{ARTICLE_RATIO_OK[1]}x the corpus share, or not "
                f"significantly different (two-proportion z-test, alpha {ALPHA})")
    for article in [None, *gen_counts]:
        k_gen = sum(gen_counts.values()) if article is None else gen_counts[article]
        k_corp = sum(corp_counts.values()) if article is None else corp_counts[article]
        p_gen = k_gen / gen_total if gen_total else math.nan
        p_corp = k_corp / corp_total if corp_total else math.nan
        ratio = p_gen / p_corp if p_corp else math.nan
        p_value = two_proportion_test(k_gen, gen_total, k_corp, corp_total, alpha=ALPHA).p
        ci = wilson_ci(k_gen, gen_total, alpha=ALPHA)
        ci_corp = wilson_ci(k_corp, corp_total, alpha=ALPHA)
        status = _article_status(ratio, p_value)
        name = "article_frequency" if article is None else f"article_frequency[{article}]"
        counted = "completions re-encoded with the checkpoint's tokenizer" if groups else "words of the completions"
        detail = (f"generations {k_gen:,}/{gen_total:,} = {p_gen:.4f} (95% CI {ci[0]:.4f}-{ci[1]:.4f}, "
                  f"{len(records)} samples, {how}, {counted}); corpus {k_corp:,}/{corp_total:,} = {p_corp:.4f} "
                  f"(95% CI {ci_corp[0]:.4f}-{ci_corp[1]:.4f}, {source}); ratio {ratio:.2f}, p = {p_value:.3g}")
        advice = note
        if status != "pass":
            direction = "fewer" if ratio < 1 else "more"
            advice = (f"the model writes {direction} articles than its training text: look at the article_loss in "
                      "metrics_stream.jsonl and at the samples; " + note)
        rows.append(_row(name, status, p_gen, unit=unit, detail=detail, expected=expected, advice=advice,
                         n=gen_total, ci=ci, p_value=p_value))
    return rows


# ----------------------------------------------------------------------------------------------
# entry point


def _check_corpus_readable(corpus: Path) -> None:
    """A corpus the user named must be readable even when no check ends up using it (article counts
    need samples): an empty, binary or non-UTF-8 file is an error, never a quiet 'pass'."""
    if corpus.suffix == ".bin":
        from corpora.tokenized import read_meta

        read_meta(corpus)  # a .bin without its sidecar is not a tokenized corpus
        return
    from corpora.documents import iter_documents

    next(iter(iter_documents(corpus)))  # raises UserError: empty, unsupported, not UTF-8


def diagnose(ckpt_path: str | Path, samples: str | Path | None = None, corpus: str | Path | None = None) -> pd.DataFrame:
    """Run every check on a checkpoint; one row per check (see the module docstring for the columns)."""
    samples_path = Path(samples).expanduser() if samples is not None else None
    corpus_path = Path(corpus).expanduser() if corpus is not None else None
    if samples_path is not None and not samples_path.is_file():
        raise UserError(f"samples file not found: {samples_path}")
    if corpus_path is not None and not corpus_path.exists():
        raise UserError(f"corpus not found: {corpus_path}")
    if corpus_path is not None:
        _check_corpus_readable(corpus_path)
    ctx = _load_context(ckpt_path)
    data, why = _train_data(ctx, corpus_path)
    rows = [
        _check_config_strict(ctx),
        _check_mixer(ctx),
        _check_vocab_size(ctx),
        _check_embedding_share(ctx),
        _check_vocab_coverage(ctx, data, why),
        _check_progress(ctx),
        _check_epochs(ctx, data, why),
        _check_tokens_per_param(ctx),
        _check_best_vs_latest(ctx),
        _check_train_val_gap(ctx),
        _check_lr_decay(ctx),
        _check_min_lr(ctx),
        _check_warmup(ctx),
        _check_tokenizer_identity(ctx, data, why),
        _check_dataset_identity(ctx, data, why),
        *_check_articles(ctx, samples_path, corpus_path, data, why),
    ]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["n"] = frame["n"].astype("Int64")
    frame.attrs["checkpoint"] = str(ctx.ckpt)
    frame.attrs["run_dir"] = str(ctx.run_dir) if ctx.run_dir else None
    frame.attrs["notes"] = list(ctx.notes)
    return frame


_D = "evalsuite.diagnose.diagnose"
COLUMNS: dict[str, tuple[str, str]] = {
    "check": ("name of the check (module docstring of evalsuite.diagnose lists them)", _D),
    "status": ("pass / warn / fail / skip against the threshold in `expected`", _D),
    "value": ("the measured number of the check, in `unit`", _D),
    "unit": ("unit of value", _D),
    "detail": ("what was measured, with counts", _D),
    "expected": ("the threshold or rule that sets the status", _D),
    "advice": ("what to do when the check does not pass", _D),
    "n": ("units behind value (tokens or words counted), where a count applies", _D),
    "ci_low": ("lower end of the 95% Wilson interval of the generated share (article check)",
               "evalsuite.stats.wilson_ci"),
    "ci_high": ("upper end of that interval", "evalsuite.stats.wilson_ci"),
    "p_value": ("two-sided two-proportion z test, generated vs corpus share (article check)",
                "evalsuite.stats.two_proportion_test"),
}


def diagnose_meta(frame: pd.DataFrame, *, samples: str | Path | None, corpus: str | Path | None,
                  table_name: str = "diagnose.csv") -> dict[str, Any]:
    """meta.json content for a diagnose table (evalsuite.results schema): inputs, thresholds, columns."""
    from evalsuite.results import build_meta, column, describe_columns

    definitions = {name: column(*entry) for name, entry in COLUMNS.items()}
    inputs = [p for p in (frame.attrs.get("checkpoint"), samples, corpus) if p]
    return build_meta(
        "diagnose",
        config={"checkpoint": frame.attrs.get("checkpoint"), "samples": str(samples) if samples else None,
                "corpus": str(corpus) if corpus else None},
        inputs=inputs,
        columns={table_name: describe_columns(frame.columns, definitions, table_name)},
        outputs=[table_name],
        extra={
            "checkpoint": frame.attrs.get("checkpoint"),
            "run_dir": frame.attrs.get("run_dir"),
            "notes": frame.attrs.get("notes", []),
            "status_counts": frame["status"].value_counts().to_dict(),
            "thresholds": {
                "embedding_share_warn": EMBEDDING_SHARE_WARN, "min_tokens_per_vocab_entry": MIN_TOKENS_PER_VOCAB_ENTRY,
                "unused_vocab_warn": UNUSED_VOCAB_WARN, "epochs_warn": EPOCHS_WARN,
                "tokens_per_param_warn": TOKENS_PER_PARAM_WARN,
                "best_latest_gap_warn_nats": BEST_LATEST_GAP_WARN_NATS,
                "train_val_gap_warn_nats": TRAIN_VAL_GAP_WARN_NATS, "min_lr_ratio": MIN_LR_RATIO,
                "warmup_share_warn": WARMUP_SHARE_WARN, "article_ratio_ok": ARTICLE_RATIO_OK,
                "article_ratio_fail": ARTICLE_RATIO_FAIL, "alpha": ALPHA,
            },
        },
    )

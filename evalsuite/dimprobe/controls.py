"""Control models for dim-probe: what "specialisation" looks like where there is none to find.

- `untrained`: the probed model's exact config, randomly initialised (seeded). Any category
  difference it shows comes from token identity passing through random weights, not from learning.
- `baseline`: a dense baseline transformer whose hidden vector is split into the same number of
  equal contiguous blocks (`component_split`), blocks that no algebra distinguishes. Best is a
  trained baseline checkpoint from the same data (`baseline=PATH`); without one we build an
  untrained baseline of the same shape, a weaker control (recorded in the model's description).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from corpora.errors import UserError
from evalsuite.dimprobe.collect import ModelUnderProbe


def _block_size(config: Any, model: torch.nn.Module) -> int:
    train = getattr(config, "train", None)
    size = getattr(train, "block_size", None)
    return int(size) if size else int(model.config.max_seq_len)


def from_checkpoint(path: str | Path, name: str = "probe") -> ModelUnderProbe:
    """A probe model from a checkpoint dir, run dir or .spinnet file."""
    from trainers.checkpoint import load_checkpoint

    loaded = load_checkpoint(path, device="cpu")
    model = loaded.model.eval()
    cfg = loaded.config
    return ModelUnderProbe(
        name=name, model=model, tokenizer=loaded.tokenizer, block_size=_block_size(cfg, model),
        n_components=int(model.n_components),
        description=f"{cfg.model.family} checkpoint {loaded.path}",
        info={"path": str(loaded.path), "family": cfg.model.family, "config": cfg.to_dict(),
              "val_loss": loaded.state.get("val_loss"), "iter_num": loaded.state.get("iter_num"),
              "tokens_seen": loaded.state.get("tokens_seen"), "tokenizer": loaded.tokenizer.identity,
              "data": loaded.state.get("data") or {}},
    )


def untrained_control(probe: ModelUnderProbe, seed: int = 0, name: str = "untrained") -> ModelUnderProbe:
    """The probed model's config with fresh random weights."""
    from trainers.model import build_model

    cfg = probe.model.config
    torch.manual_seed(seed)
    model = build_model(dataclasses.replace(cfg)).eval()
    return ModelUnderProbe(
        name=name, model=model, tokenizer=probe.tokenizer, block_size=probe.block_size,
        n_components=int(model.n_components),
        description=f"untrained {cfg.family} of the probed config (init seed {seed})",
        info={"family": cfg.family, "seed": seed, "config": dataclasses.asdict(cfg)},
    )


def baseline_control(
    probe: ModelUnderProbe, baseline: str | Path | None = None, seed: int = 0
) -> ModelUnderProbe:
    """A baseline split into the probed model's number of components: a trained checkpoint when
    `baseline` is given (its own tokenizer), else an untrained baseline of the probed model's shape."""
    n = probe.n_components
    if baseline is not None:
        control = from_checkpoint(baseline, name="baseline")
        if control.model.config.family != "baseline":
            raise UserError(f"--baseline {baseline} is a {control.model.config.family} checkpoint, not a baseline")
        if control.n_components != n:
            # the split is a probe-time choice for the baseline (no algebra behind it): match the probe
            d_model = control.model.config.d_model
            if d_model % n:
                raise UserError(f"baseline d_model={d_model} cannot be split into {n} equal blocks")
            control.n_components = n
        control.description = f"trained baseline {control.info['path']} split into {n} blocks"
        return control
    from trainers.model import build_model

    cfg = probe.model.config
    base_cfg = dataclasses.replace(
        cfg, family="baseline", algebra_n=None, ternary=None, act_bits=None, component_split=n,
    )
    torch.manual_seed(seed)
    model = build_model(base_cfg).eval()
    return ModelUnderProbe(
        name="baseline", model=model, tokenizer=probe.tokenizer, block_size=probe.block_size,
        n_components=n,
        description=f"UNTRAINED baseline of the probed shape split into {n} blocks (no --baseline given)",
        info={"family": "baseline", "trained": False, "seed": seed, "config": dataclasses.asdict(base_cfg)},
    )


def checkpoint_control(path: str | Path, n_components: int, taken: set[str] | frozenset = frozenset()) -> ModelUnderProbe:
    """A trained control from a checkpoint (`--control CKPT`): a baseline split into `n_components`
    blocks, or a SpinNet of another algebra (e.g. algebra_n = 1, or ternary off) whose hidden vector
    is split the same way. The split is a probe-time choice (the same contiguous slices as the
    probed model's components); the control's own algebra is recorded in its description."""
    control = from_checkpoint(path, name="control")
    cfg = control.model.config
    d_model = cfg.d_model
    if d_model % n_components:
        raise UserError(f"--control {path}: d_model={d_model} cannot be split into {n_components} equal blocks")
    own_n = control.n_components
    control.n_components = n_components
    stem = Path(str(control.info["path"])).resolve()
    label = stem.parent.name if stem.name in ("best", "latest") else stem.name
    base = f"{cfg.family}:{label}"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}#{i}", i + 1
    control.name = name
    algebra = "" if cfg.family == "baseline" else f", algebra_n={cfg.algebra_n}, ternary={cfg.ternary}"
    control.description = (f"trained {cfg.family} {control.info['path']}{algebra} (own components: {own_n}) "
                           f"split into {n_components} blocks")
    return control

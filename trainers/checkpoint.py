"""Checkpoints: atomic directories that hold everything needed to evaluate or resume a run.

A checkpoint directory holds
- `model.safetensors`  the weights (SpinNet: the latent float weights; ternarization is in the forward),
- `optimizer.pt`       AdamW state (in `latest/` and `best/`; step snapshots are weights-only to save disk),
- `trainer_state.json` iter_num, tokens_seen, val_loss, val_bpc, best_val_loss, the data it was trained
                       on, the RNG states of every rank (python, numpy, torch, cuda, data sampler),
                       and `model_sha256`: the sha256 of model.safetensors, checked on every load,
- `config.json`        the resolved RunConfig (vocab_size filled in, min_lr and lr_decay_iters resolved)
                       plus `code_version` (corpora.provenance.code_version(): package, git commit),
- `tokenizer/`         the tokenizer, saved with `Tokenizer.save`.

Atomicity: a checkpoint is written into `<name>.tmp-XXXX` beside its final place, then renamed into
place. Replacing an existing `latest/` takes two renames (old -> `latest.old-XXXX`, new -> `latest`);
a crash between them leaves `latest.old-XXXX`, which `recover_run_dir` (and `resolve_checkpoint`)
treat as `latest`. A reader never sees a half-written `latest/`.

A run directory holds `latest/`, `best/`, `step_XXXXXXX/` snapshots, `metrics_stream.jsonl` and
`config.yaml`. `load_checkpoint` is THE reader of every kind of checkpoint (a checkpoint dir, a run
dir -> its `best/` (else `latest/`, else the newest `*.old-*` a crash left), a `.spinnet` file);
every command that loads a model goes through it (trainers.compress too), so a damaged
model.safetensors (truncated, empty, bit-flipped) is one clear error everywhere.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corpora.errors import UserError
from corpora.provenance import code_version, file_sha256
from corpora.tokenizers import Tokenizer, load_tokenizer
from trainers.config import RunConfig, config_from_dict

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
STATE_FORMAT_VERSION = 1


@dataclass
class LoadedCheckpoint:
    """A model ready for evaluation (eval mode, on `device`), with what describes it."""

    model: torch.nn.Module
    config: RunConfig
    tokenizer: Tokenizer
    state: dict[str, Any]  # trainer_state.json (for a .spinnet file: what its header records)
    path: Path | None = None


def snapshot_name(step: int) -> str:
    return f"step_{step:07d}"


# ----------------------------------------------------------------------------------------------
# RNG state <-> JSON


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def capture_rng_state(data_generator: torch.Generator | None = None) -> dict[str, Any]:
    """This process's RNG states as JSON-safe values (python, numpy, torch, cuda, data sampler)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
        "cuda": [_b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_initialized() else None,
        "data": _b64(data_generator.get_state()) if data_generator is not None else None,
    }
    return state


def restore_rng_state(state: dict[str, Any], data_generator: torch.Generator | None = None) -> None:
    """Inverse of `capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    if state.get("cuda") and torch.cuda.is_available():
        saved = [_unb64(s) for s in state["cuda"]]
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved)
    if data_generator is not None and state.get("data") is not None:
        data_generator.set_state(_unb64(state["data"]))


# ----------------------------------------------------------------------------------------------
# writing


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(root)


def _publish(tmp: Path, final: Path) -> None:
    """Move the finished directory `tmp` to `final`, replacing an old one without a half-written state."""
    if final.exists():
        old = final.with_name(f"{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
        os.rename(tmp, final)
        _fsync_dir(final.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
        _fsync_dir(final.parent)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DistributedDataParallel and torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in unwrap_model(model).state_dict().items()}


@contextlib.contextmanager
def _staged_dir(run_dir: Path, name: str) -> Iterator[Path]:
    """A fresh temp folder beside `run_dir/name` to fill in the block; when the block ends it is
    fsynced and published as `run_dir/name` atomically, and on any error it is removed."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}.tmp-", dir=run_dir))
    try:
        yield tmp
        _fsync_tree(tmp)
        _publish(tmp, run_dir / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_checkpoint(
    run_dir: str | os.PathLike,
    name: str,
    *,
    model: torch.nn.Module,
    config: RunConfig,
    tokenizer: Tokenizer,
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
) -> Path:
    """Write checkpoint `run_dir/name` atomically and return its path."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _staged_dir(run_dir, name) as tmp:
        save_file(_model_tensors(model), str(tmp / MODEL_FILE), metadata={"format": "pt"})
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        payload = {"format_version": STATE_FORMAT_VERSION, **state, "model_sha256": file_sha256(tmp / MODEL_FILE)}
        (tmp / STATE_FILE).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        config_json = {**config.to_dict(), "code_version": code_version()}
        (tmp / CONFIG_FILE).write_text(json.dumps(config_json, indent=2) + "\n", encoding="utf-8")
        tokenizer.save(tmp / TOKENIZER_DIR)
    return run_dir / name


def copy_checkpoint(
    source: str | os.PathLike, run_dir: str | os.PathLike, name: str, *, include_optimizer: bool = True,
    state_update: dict[str, Any] | None = None,
) -> Path:
    """Atomically copy a finished checkpoint to `run_dir/name` (for `best/` and step snapshots)."""
    source, run_dir = Path(source), Path(run_dir)
    with _staged_dir(run_dir, name) as tmp:
        ignore = None if include_optimizer else shutil.ignore_patterns(OPTIMIZER_FILE)
        shutil.copytree(source, tmp, ignore=ignore, dirs_exist_ok=True)
        if state_update:
            state = json.loads((tmp / STATE_FILE).read_text(encoding="utf-8"))
            state.update(state_update)
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    return run_dir / name


def recover_run_dir(run_dir: str | os.PathLike) -> list[str]:
    """Finish or undo what a crash interrupted: restore `X.old-*` where `X` is missing, delete
    leftover `*.tmp-*` and `*.old-*` directories. Returns what it did, one line per action."""
    run_dir = Path(run_dir)
    actions: list[str] = []
    if not run_dir.is_dir():
        return actions
    for old in sorted(run_dir.glob("*.old-*")):
        final = run_dir / old.name.split(".old-")[0]
        if not final.exists() and (old / STATE_FILE).is_file():
            os.rename(old, final)
            actions.append(f"restored {final.name} from {old.name}")
        else:
            shutil.rmtree(old, ignore_errors=True)
            actions.append(f"removed {old.name}")
    for tmp in sorted(run_dir.glob("*.tmp-*")):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            actions.append(f"removed unfinished {tmp.name}")
    return actions


# ----------------------------------------------------------------------------------------------
# reading


def is_checkpoint_dir(path: Path) -> bool:
    return (path / STATE_FILE).is_file() and (path / MODEL_FILE).is_file() and (path / CONFIG_FILE).is_file()


def resolve_checkpoint(path: str | os.PathLike, prefer: str = "best") -> Path:
    """A checkpoint dir as given, or `prefer` (`best`/`latest`) inside a run dir."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if path.is_dir() and is_checkpoint_dir(path):
        return path
    if path.is_dir():
        # prefer, else the other of best/latest; for each, a crash between the two renames of a
        # replacement may have left only <name>.old-XXXX
        for name in dict.fromkeys((prefer, "best", "latest")):
            candidate = path / name
            if is_checkpoint_dir(candidate):
                return candidate
            olds = sorted(path.glob(f"{name}.old-*"), key=lambda p: p.stat().st_mtime)
            for old in reversed(olds):
                if is_checkpoint_dir(old):
                    return old
        found = sorted(p.name for p in path.iterdir() if p.is_dir() and is_checkpoint_dir(p))
        hint = f" (checkpoints here: {', '.join(found)})" if found else ""
        raise UserError(f"{path} is neither a checkpoint directory nor a run directory with {prefer}/{hint}")
    raise UserError(f"{path} is not a checkpoint directory, a run directory, or a .spinnet file")


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path}: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict):
        raise UserError(f"cannot read {path}: expected a JSON object")
    return raw


def read_state(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    return _read_json_object(Path(checkpoint_dir) / STATE_FILE)


def read_config(checkpoint_dir: str | os.PathLike) -> RunConfig:
    return config_from_dict(_read_json_object(Path(checkpoint_dir) / CONFIG_FILE))


def read_config_dict(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    """config.json as saved, before the strict loader (`read_config`): for readers that check it or
    only need facts from it."""
    return _read_json_object(Path(checkpoint_dir) / CONFIG_FILE)


def model_tensor_shapes(checkpoint_dir: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in model.safetensors, from the file's header only (no weights are
    read; call `verify_model_file` first where the bytes matter)."""
    from safetensors import SafetensorError, safe_open

    path = Path(checkpoint_dir) / MODEL_FILE
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable safetensors file ({' '.join(str(err).split())})") from None


def verify_model_file(checkpoint_dir: str | os.PathLike) -> None:
    """Refuse a model.safetensors that is empty or does not match the sha256 its trainer_state.json
    recorded (checkpoints from before the hash was recorded are checked for emptiness only; their
    truncation is caught when safetensors parses the file)."""
    checkpoint_dir = Path(checkpoint_dir)
    path = checkpoint_dir / MODEL_FILE
    if not path.is_file():
        raise UserError(f"{checkpoint_dir}: no {MODEL_FILE}")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes): the checkpoint is damaged")
    expected = read_state(checkpoint_dir).get("model_sha256")
    if expected is not None and file_sha256(path) != expected:
        raise UserError(
            f"{path} does not match the sha256 in {STATE_FILE} (truncated or corrupted after it was written)"
        )


def read_model_tensors(checkpoint_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a verified model.safetensors; a file safetensors cannot parse is a UserError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    verify_model_file(checkpoint_dir)
    path = Path(checkpoint_dir) / MODEL_FILE
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable safetensors file ({' '.join(str(err).split())})") from None


def load_model_weights(model: torch.nn.Module, checkpoint_dir: str | os.PathLike) -> None:
    """Load `model.safetensors` into `model` (verified; strict: every tensor must match)."""
    tensors = read_model_tensors(checkpoint_dir)
    target = unwrap_model(model)
    device = next(target.parameters()).device
    expected = target.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [k for k in tensors if k in expected and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        raise UserError(
            f"{checkpoint_dir}: weights do not match the model built from its config "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {mismatched[:5]})"
        )
    target.load_state_dict({k: v.to(device) for k, v in tensors.items()}, strict=True)


def load_optimizer_state(optimizer: torch.optim.Optimizer, checkpoint_dir: str | os.PathLike) -> None:
    path = Path(checkpoint_dir) / OPTIMIZER_FILE
    if not path.is_file():
        raise UserError(f"{checkpoint_dir} has no {OPTIMIZER_FILE}: it is a weights-only snapshot, not resumable")
    optimizer.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> LoadedCheckpoint:
    """Load a model for evaluation from a checkpoint dir, a run dir (its `best/`), or a `.spinnet` file."""
    from trainers.model import build_model

    path = Path(path).expanduser()
    if path.suffix == ".spinnet":
        return _load_spinnet_file(path, device)
    ckpt = resolve_checkpoint(path, prefer="best")
    config = read_config(ckpt)
    model = build_model(config.model)
    load_model_weights(model, ckpt)
    model.to(device).eval()
    tokenizer = load_tokenizer(ckpt / TOKENIZER_DIR)
    return LoadedCheckpoint(model=model, config=config, tokenizer=tokenizer, state=read_state(ckpt), path=ckpt)


def _load_spinnet_file(path: Path, device: str) -> LoadedCheckpoint:
    if not path.is_file():
        raise UserError(f".spinnet file not found: {path}")
    from trainers.spinnet_file import load_spinnet

    loaded = load_spinnet(path, device=device)
    return LoadedCheckpoint(
        model=loaded.model, config=loaded.config, tokenizer=loaded.tokenizer,
        state=dict(loaded.state), path=path,
    )

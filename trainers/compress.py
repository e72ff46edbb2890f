"""`.spinnet`: a ternary SpinNet checkpoint packed for distribution.

File layout (all integers little-endian):

    b"SPINNET\\0"  (8 bytes magic)
    uint32         format version (1)
    uint64         header length in bytes
    header         UTF-8 JSON: version, resolved run config, training state (scalars), packing,
                   float dtype, the tensor table (name, encoding, shape, offset, nbytes), the embedded
                   files (tokenizer/...), and the sha256 of the data section
    data           the tensors and files, at the offsets the header gives (relative to data start)

Encodings:
- "trits5": ternary component weights of a HypercomplexLinear, (n, out/n, in/n) in C order, each
  trit t in {-1, 0, 1} stored as the base-3 digit t + 1, five digits per byte
  (byte = d0 + 3 d1 + 9 d2 + 27 d3 + 81 d4 <= 242): ceil(N / 5) bytes, 1.6 bits per weight
  (the limit is log2(3) = 1.585). "trits2": four 2-bit digits per byte (d0 | d1 << 2 | ...), 2 bits.
- "f32": the layer's absmean scale gamma, ONE per layer, kept in float32 (4 bytes a layer) because
  the quantized weight is exactly trit * gamma: a float16 gamma would change every weight of the layer.
- "f16" (default) or "f32": everything else (token embeddings = tied head, RMSNorm gains, octonion
  head-mixer weights), per `float_dtype`.

What "exactly" means for `load_spinnet`: the loaded model's logits are bit-identical (torch.equal)
to those of the checkpoint's model in inference mode (its forward pass uses trit * gamma, see
trainers.layers) after its non-ternary tensors are rounded to the stored float dtype. With
float_dtype="float32" nothing is rounded and the logits equal the checkpoint's own bit for bit.
With float16 (the default) the embeddings are rounded; `CompressReport` does not hide that: it
records the max |logit difference| against the unrounded checkpoint on a fixed probe batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from corpora.errors import UserError
from corpora.paths import cache_dir
from trainers.config import RunConfig, TrainConfig, config_from_dict
from trainers.layers import HypercomplexLinear
from trainers.model import Transformer, build_model

MAGIC = b"SPINNET\x00"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<8sIQ")
_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)
_FLOAT_CODES = {"float16": ("f16", "<f2", torch.float16), "float32": ("f32", "<f4", torch.float32)}

Packing = Literal["trits5", "trits2"]


# ---------------------------------------------------------------------------------------------
# trit packing


def pack_trits(trits: np.ndarray | torch.Tensor, packing: Packing = "trits5") -> bytes:
    """Pack values in {-1, 0, 1} (any shape, read in C order) into bytes."""
    values = np.asarray(trits.cpu() if isinstance(trits, torch.Tensor) else trits).reshape(-1)
    if values.size and (values.min() < -1 or values.max() > 1):
        raise ValueError("trits must be in {-1, 0, 1}")
    digits = (values.astype(np.int16) + 1).astype(np.uint8)
    per_byte = 5 if packing == "trits5" else 4
    if packing not in ("trits5", "trits2"):
        raise ValueError(f"unknown packing {packing!r}")
    padded = np.zeros(math.ceil(digits.size / per_byte) * per_byte, dtype=np.uint8)
    padded[: digits.size] = digits
    groups = padded.reshape(-1, per_byte)
    if packing == "trits5":
        packed = (groups * _POW3).sum(axis=1, dtype=np.uint16).astype(np.uint8)
    else:
        packed = groups[:, 0] | (groups[:, 1] << 2) | (groups[:, 2] << 4) | (groups[:, 3] << 6)
    return packed.astype(np.uint8).tobytes()


def unpack_trits(data: bytes, count: int, packing: Packing = "trits5") -> np.ndarray:
    """Inverse of pack_trits: `count` int8 values in {-1, 0, 1}."""
    packed = np.frombuffer(data, dtype=np.uint8)
    per_byte = 5 if packing == "trits5" else 4
    if packed.size != math.ceil(count / per_byte):
        raise ValueError(f"{packed.size} bytes cannot hold exactly {count} trits with {packing}")
    if packing == "trits5":
        if packed.size and packed.max() > 242:
            raise ValueError("corrupt trits5 data: byte value above 242")
        digits = (packed[:, None] // _POW3[None, :]) % 3
    else:
        digits = (packed[:, None] >> np.array([0, 2, 4, 6], dtype=np.uint8)[None, :]) & 3
        if digits.size and digits.max() > 2:
            raise ValueError("corrupt trits2 data: digit value 3")
    return digits.reshape(-1)[:count].astype(np.int8) - 1


# ---------------------------------------------------------------------------------------------
# reading a checkpoint


def _resolve_checkpoint_dir(path: Path) -> Path:
    if (path / "model.safetensors").is_file():
        return path
    for name in ("best", "latest"):
        if (path / name / "model.safetensors").is_file():
            return path / name
    raise UserError(f"{path} is not a checkpoint directory (no model.safetensors, best/ or latest/)")


def _load_checkpoint_dir(path: Path) -> tuple[Transformer, RunConfig, dict[str, Any]]:
    from safetensors.torch import load_file

    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path / 'config.json'}: {err}") from None
    config = config_from_dict(raw)
    model = build_model(config.model)
    from safetensors import SafetensorError

    try:
        tensors = load_file(str(path / "model.safetensors"))
    except (SafetensorError, OSError) as err:  # a truncated or foreign file: the user's to replace
        raise UserError(f"cannot read {path / 'model.safetensors'}: {err} (truncated or not safetensors)") from None
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: weights do not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    state: dict[str, Any] = {}
    if (path / "trainer_state.json").is_file():
        try:
            full = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"cannot read {path / 'trainer_state.json'}: {err}") from None
        state = {k: v for k, v in full.items() if isinstance(v, (int, float, str, bool)) or v is None}
    return model.eval(), config, state


def _directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# writing


@dataclass
class CompressReport:
    """Sizes in bytes, as written to disk, and the ratios the CLI prints."""

    path: Path
    file_bytes: int
    packing: str
    float_dtype: str
    n_parameters: int  # parameters of the model (latent float weights counted once)
    n_ternary_weights: int
    ternary_bytes: int  # packed trits only
    scale_bytes: int  # one float32 gamma per ternary layer
    float_bytes: int  # embeddings, norms, mixer weights in float_dtype
    file_payload_bytes: int  # embedded tokenizer and other files
    header_bytes: int  # preamble + JSON header
    bits_per_ternary_weight: float  # 8 * ternary_bytes / n_ternary_weights
    bits_per_ternary_weight_with_scales: float
    fp32_weights_bytes: int  # 4 bytes x n_parameters: a float32 weights-only file
    ratio_vs_fp32_weights: float  # fp32_weights_bytes / file_bytes
    fp32_block_weights_bytes: int  # 4 bytes x the ternary layers' parameters
    ratio_ternary_vs_fp32: float  # fp32_block_weights_bytes / (ternary_bytes + scale_bytes)
    checkpoint_dir: Path | None = None
    checkpoint_dir_bytes: int | None = None  # every file of the training checkpoint directory
    ratio_vs_checkpoint: float | None = None
    safetensors_bytes: int | None = None  # model.safetensors on disk
    ratio_vs_safetensors: float | None = None
    # Max |logit difference| on a fixed probe batch: loaded .spinnet vs the checkpoint as trained
    # (non-zero only from float16 rounding of embeddings/norms) and vs its float-rounded reference (0).
    max_abs_logit_diff_vs_checkpoint: float = float("nan")
    max_abs_logit_diff_vs_rounded_reference: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


def _ternary_layers(model: Transformer) -> dict[str, HypercomplexLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, HypercomplexLinear)}


def round_floats_like_spinnet(model: Transformer, float_dtype: str = "float16") -> Transformer:
    """In place: round every non-ternary tensor to `float_dtype` and back (the .spinnet reference)."""
    ternary = {f"{name}.weight" for name in _ternary_layers(model)}
    torch_dtype = _FLOAT_CODES[float_dtype][2]
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name not in ternary:
                param.copy_(param.to(torch_dtype).to(param.dtype))
    return model


def _probe_batch(model: Transformer) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    t = min(32, model.config.max_seq_len)
    return torch.randint(0, model.config.vocab_size, (2, t), generator=gen)


def compress(
    checkpoint: str | os.PathLike | Transformer,
    out_path: str | os.PathLike,
    *,
    packing: Packing = "trits5",
    float_dtype: Literal["float16", "float32"] = "float16",
    run_config: RunConfig | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
) -> CompressReport:
    """Pack a ternary SpinNet checkpoint (a checkpoint dir, a run dir, or a model in memory) into `out_path`."""
    if packing not in ("trits5", "trits2"):
        raise UserError(f"packing must be trits5 or trits2, got {packing!r}")
    if float_dtype not in _FLOAT_CODES:
        raise UserError(f"float dtype must be float16 or float32, got {float_dtype!r}")
    checkpoint_dir: Path | None = None
    state: dict[str, Any] = {}
    if isinstance(checkpoint, Transformer):
        # A copy, so the caller's model keeps its mode; its latent weights are what gets packed.
        model = _copy_model(checkpoint)
        config = run_config or RunConfig(model=model.config, train=TrainConfig(block_size=model.config.max_seq_len))
    else:
        path = Path(checkpoint).expanduser()
        if not path.is_dir():
            raise UserError(f"checkpoint directory not found: {path}")
        checkpoint_dir = _resolve_checkpoint_dir(path)
        model, config, state = _load_checkpoint_dir(checkpoint_dir)
        if tokenizer_dir is None and (checkpoint_dir / "tokenizer").is_dir():
            tokenizer_dir = checkpoint_dir / "tokenizer"
    if config.model.family != "spinnet" or not config.model.ternary:
        raise UserError(
            f"only ternary SpinNet checkpoints can be packed (this one is family={config.model.family}, "
            f"ternary={config.model.ternary})"
        )

    layers = _ternary_layers(model)
    ternary_names = {f"{name}.weight": name for name in layers}
    float_code, float_np, _ = _FLOAT_CODES[float_dtype]
    chunks: list[bytes] = []
    offset = 0
    entries: list[dict[str, Any]] = []
    sizes = {"ternary": 0, "scale": 0, "float": 0, "file": 0}
    n_ternary = 0

    def add(entry: dict[str, Any], data: bytes, kind: str) -> None:
        nonlocal offset
        entries.append({**entry, "offset": offset, "nbytes": len(data)})
        chunks.append(data)
        offset += len(data)
        sizes[kind] += len(data)

    for key, tensor in model.state_dict().items():
        if key in ternary_names:
            trits, gamma = layers[ternary_names[key]].ternary_state()
            n_ternary += trits.numel()
            layer = ternary_names[key]
            add({"name": f"{layer}.frozen_trits", "encoding": packing, "shape": list(trits.shape)},
                pack_trits(trits, packing), "ternary")
            add({"name": f"{layer}.frozen_scale", "encoding": "f32", "shape": []},
                np.asarray(gamma.item(), dtype="<f4").tobytes(), "scale")
        else:
            array = tensor.detach().cpu().float().numpy().astype(float_np)
            add({"name": key, "encoding": float_code, "shape": list(tensor.shape)}, array.tobytes(), "float")

    files: list[dict[str, Any]] = []
    if tokenizer_dir is not None:
        root = Path(tokenizer_dir)
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = f"tokenizer/{file.relative_to(root).as_posix()}"
            data = file.read_bytes()
            files.append({"name": rel, "offset": offset, "nbytes": len(data)})
            chunks.append(data)
            offset += len(data)
            sizes["file"] += len(data)

    blob = b"".join(chunks)
    header = {
        "format": "spinnet",
        "version": FORMAT_VERSION,
        "config": config.to_dict(),
        "state": state,
        "packing": packing,
        "float_dtype": float_dtype,
        "layout": (
            "ternary tensors are a HypercomplexLinear's (n, out/n, in/n) component matrices in C order; "
            "block (i, j) of the dense weight is sign * W_k per trainers.algebra.block_table; component k "
            "of a d-vector is the slice [k*d/n, (k+1)*d/n)"
        ),
        "tensors": entries,
        "files": files,
        "data_sha256": hashlib.sha256(blob).hexdigest(),
        "torch_version": torch.__version__,
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")

    out_path = Path(out_path).expanduser()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.tmp-", dir=out_path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(_PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header_bytes)))
            handle.write(header_bytes)
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

    file_bytes = out_path.stat().st_size
    n_params = model.num_parameters()
    block_params = sum(m.weight.numel() for m in layers.values())
    report = CompressReport(
        path=out_path,
        file_bytes=file_bytes,
        packing=packing,
        float_dtype=float_dtype,
        n_parameters=n_params,
        n_ternary_weights=n_ternary,
        ternary_bytes=sizes["ternary"],
        scale_bytes=sizes["scale"],
        float_bytes=sizes["float"],
        file_payload_bytes=sizes["file"],
        header_bytes=_PREAMBLE.size + len(header_bytes),
        bits_per_ternary_weight=8 * sizes["ternary"] / n_ternary,
        bits_per_ternary_weight_with_scales=8 * (sizes["ternary"] + sizes["scale"]) / n_ternary,
        fp32_weights_bytes=4 * n_params,
        ratio_vs_fp32_weights=4 * n_params / file_bytes,
        fp32_block_weights_bytes=4 * block_params,
        ratio_ternary_vs_fp32=4 * block_params / (sizes["ternary"] + sizes["scale"]),
    )
    if checkpoint_dir is not None:
        report.checkpoint_dir = checkpoint_dir
        report.checkpoint_dir_bytes = _directory_bytes(checkpoint_dir)
        report.ratio_vs_checkpoint = report.checkpoint_dir_bytes / file_bytes
        report.safetensors_bytes = (checkpoint_dir / "model.safetensors").stat().st_size
        report.ratio_vs_safetensors = report.safetensors_bytes / file_bytes

    # Verify the file: reload it and compare logits on a probe batch.
    loaded = load_spinnet(out_path, load_tokenizer=False).model
    idx = _probe_batch(model)
    with torch.no_grad():
        got = loaded(idx).logits
        report.max_abs_logit_diff_vs_checkpoint = (got - model(idx).logits).abs().max().item()
        reference = round_floats_like_spinnet(_copy_model(model), float_dtype)
        report.max_abs_logit_diff_vs_rounded_reference = (got - reference(idx).logits).abs().max().item()
    return report


def _copy_model(model: Transformer) -> Transformer:
    clone = build_model(model.config)
    clone.load_state_dict(model.state_dict())
    return clone.eval()


# ---------------------------------------------------------------------------------------------
# reading


@dataclass
class LoadedSpinnet:
    model: Transformer  # eval mode; HypercomplexLinear layers frozen to the stored trits and scales
    config: RunConfig
    tokenizer: Any  # corpora.tokenizers.Tokenizer, or None when the file embeds none / not requested
    state: dict[str, Any]  # the training state scalars recorded at compression (iter_num, val_loss, ...)
    header: dict[str, Any]


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """(header dict, byte offset where the data section starts)."""
    path = Path(path)
    with open(path, "rb") as handle:
        preamble = handle.read(_PREAMBLE.size)
        if len(preamble) < _PREAMBLE.size:
            raise UserError(f"{path}: too short to be a .spinnet file")
        magic, version, header_len = _PREAMBLE.unpack(preamble)
        if magic != MAGIC:
            raise UserError(f"{path}: not a .spinnet file (bad magic {magic!r})")
        if version > FORMAT_VERSION:
            raise UserError(f"{path}: .spinnet format version {version} is newer than this reader ({FORMAT_VERSION})")
        raw = handle.read(header_len)
    if len(raw) != header_len:
        raise UserError(f"{path}: truncated header")
    return json.loads(raw.decode("utf-8")), _PREAMBLE.size + header_len


def _read_data(path: Path, start: int, header: dict[str, Any]) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(start)
        blob = handle.read()
    if hashlib.sha256(blob).hexdigest() != header["data_sha256"]:
        raise UserError(f"{path}: data section is corrupt or truncated (sha256 mismatch)")
    return blob


def extract_files(path: str | os.PathLike, directory: str | os.PathLike) -> list[Path]:
    """Write the embedded files (tokenizer/...) under `directory`; returns their paths."""
    path, directory = Path(path), Path(directory)
    header, start = read_header(path)
    blob = _read_data(path, start, header)
    written = []
    for entry in header["files"]:
        target = directory / entry["name"]
        if ".." in Path(entry["name"]).parts:
            raise UserError(f"{path}: unsafe embedded file name {entry['name']!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob[entry["offset"]: entry["offset"] + entry["nbytes"]])
        written.append(target)
    return written


def load_spinnet(path: str | os.PathLike, device: str = "cpu", *, load_tokenizer: bool = True) -> LoadedSpinnet:
    """Rebuild the model from a .spinnet file (inference only); see the module docstring for exactness."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f".spinnet file not found: {path}")
    header, start = read_header(path)
    blob = _read_data(path, start, header)
    config = config_from_dict(header["config"])
    model = build_model(config.model)
    layers = _ternary_layers(model)
    tensors: dict[str, torch.Tensor] = {}
    for entry in header["tensors"]:
        data = blob[entry["offset"]: entry["offset"] + entry["nbytes"]]
        shape = tuple(entry["shape"])
        encoding = entry["encoding"]
        if encoding in ("trits5", "trits2"):
            count = math.prod(shape)
            tensors[entry["name"]] = torch.from_numpy(unpack_trits(data, count, encoding).reshape(shape))
        elif encoding in ("f16", "f32"):
            dtype = "<f2" if encoding == "f16" else "<f4"
            tensors[entry["name"]] = torch.from_numpy(np.frombuffer(data, dtype=dtype).astype(np.float32).reshape(shape))
        else:
            raise UserError(f"{path}: unknown tensor encoding {encoding!r}")
    for name, layer in layers.items():
        layer.load_ternary(tensors[f"{name}.frozen_trits"], tensors[f"{name}.frozen_scale"])
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: tensors do not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.to(device).eval()

    tokenizer = None
    if load_tokenizer and header["files"]:
        from corpora.tokenizers import load_tokenizer as _load_tokenizer

        # Extracted to the cache (keyed by content) rather than a temp dir: the tokenizer records
        # its directory as its spec, which must stay valid for whoever reads it later.
        target = cache_dir() / "spinnet" / header["data_sha256"][:16]
        if not (target / "tokenizer").is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
            extract_files(path, staging)
            try:
                os.replace(staging, target)
            except OSError:  # another process extracted it first
                shutil.rmtree(staging, ignore_errors=True)
        tokenizer = _load_tokenizer(target / "tokenizer")
    return LoadedSpinnet(model=model, config=config, tokenizer=tokenizer, state=header.get("state", {}), header=header)

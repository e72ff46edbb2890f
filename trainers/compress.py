"""`.spinnet`: a ternary SpinNet checkpoint packed for distribution.

File layout (all integers little-endian):

    b"SPINNET\\0"  (8 bytes magic)
    uint32         format version (2)
    uint64         header length in bytes
    header         UTF-8 JSON: version, resolved run config, training state (scalars), packing,
                   float dtype, the tensor table (name, encoding, shape, offset, nbytes), the embedded
                   files (tokenizer/...), and the sha256 of the data section
    data           the tensors and files, at the offsets the header gives (relative to data start)
    sha256         32 bytes: the sha256 of everything before it (preamble, header and data), so an
                   edited header (n_head, val_loss) is detected like damaged data

Version 1 (header outside the checksum) and version 0 are refused: re-run `evalsuite compress`.
The reader (and the constants and trit packing both sides share) is trainers.spinnet_file.

Encodings:
- "trits5": ternary component weights of a HypercomplexLinear, (n, out/n, in/n) in C order, each
  trit t in {-1, 0, 1} stored as the base-3 digit t + 1, five digits per byte
  (byte = d0 + 3 d1 + 9 d2 + 27 d3 + 81 d4 <= 242): ceil(N / 5) bytes, 1.6 bits per weight
  (the limit is log2(3) = 1.585). "trits2": four 2-bit digits per byte (d0 | d1 << 2 | ...), 2 bits.
- "f32": the layer's absmean scale gamma, ONE per layer, kept in float32 (4 bytes a layer) because
  the quantized weight is exactly trit * gamma: a float16 gamma would change every weight of the layer.
- "f16" (default) or "f32": everything else (token embeddings = tied head, RMSNorm gains, octonion
  head-mixer weights), per `float_dtype`.
- A model trained with `model.embedding_quant` int8 or ternary stores its embedding as it computes
  with it: "frozen_emb_codes" ("i8": int8 per entry, or trits5/trits2) and "frozen_emb_scale"
  ("f32": one float32 scale per row), so its logits stay bit-identical while the embedding (most of
  a small model's parameters) takes 8 or 1.6 bits per entry instead of 16.

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
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from corpora.errors import UserError
from trainers import checkpoint as ckpt_io
from trainers.config import RunConfig, TrainConfig
from trainers.model import Transformer, build_model
from trainers.spinnet_file import (  # noqa: F401 (the format's names, re-exported for callers of compress)
    _DIGEST_BYTES,
    _FLOAT_CODES,
    _PREAMBLE,
    FORMAT_VERSION,
    MAGIC,
    LoadedSpinnet,
    Packing,
    _ternary_layers,
    extract_files,
    load_spinnet,
    pack_trits,
    read_header,
    unpack_trits,
)

# ---------------------------------------------------------------------------------------------
# trit packing


# ---------------------------------------------------------------------------------------------
# reading a checkpoint


def _load_checkpoint_dir(path: Path) -> tuple[Transformer, RunConfig, dict[str, Any], Path]:
    """(model in eval mode, config, scalar training state, checkpoint dir) through the one reader,
    trainers.checkpoint.load_checkpoint (run dir -> best/, latest/, crash leftovers; verified weights)."""
    if path.suffix == ".spinnet":
        raise UserError(f"{path} is already a .spinnet file; compress a checkpoint directory or run directory")
    loaded = ckpt_io.load_checkpoint(path)
    state = {k: v for k, v in loaded.state.items() if isinstance(v, (int, float, str, bool)) or v is None}
    assert loaded.path is not None
    return loaded.model, loaded.config, state, loaded.path


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
    float_bytes: int  # embeddings (when not quantized), norms, mixer weights in float_dtype
    embedding_bytes: int  # quantized embedding codes + row scales (0 when embedding_quant is none)
    bits_per_parameter: float  # 8 * file_bytes / n_parameters: the whole file, everything included
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


def round_floats_like_spinnet(model: Transformer, float_dtype: str = "float16") -> Transformer:
    """In place: round every non-ternary tensor to `float_dtype` and back (the .spinnet reference)."""
    ternary = {f"{name}.weight" for name in _ternary_layers(model)}
    torch_dtype = _FLOAT_CODES[float_dtype][2]
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == "wte.weight" and model.config.embedding_quant != "none":
                continue  # stored exactly as the forward pass uses it (codes and float32 row scales)
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
        model, config, state, checkpoint_dir = _load_checkpoint_dir(path)
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
    sizes = {"ternary": 0, "scale": 0, "float": 0, "file": 0, "embedding": 0}
    n_ternary = 0

    def add(entry: dict[str, Any], data: bytes, kind: str) -> None:
        nonlocal offset
        entries.append({**entry, "offset": offset, "nbytes": len(data)})
        chunks.append(data)
        offset += len(data)
        sizes[kind] += len(data)

    quantized_embedding = model.config.embedding_quant != "none"
    for key, tensor in model.state_dict().items():
        if key == "wte.weight" and quantized_embedding:
            codes, row_scale = model.embedding_state()
            code_packing = "i8" if model.config.embedding_quant == "int8" else packing
            data = codes.numpy().astype(np.int8).tobytes() if code_packing == "i8" else pack_trits(codes, packing)
            add({"name": "frozen_emb_codes", "encoding": code_packing, "shape": list(codes.shape)}, data, "embedding")
            add({"name": "frozen_emb_scale", "encoding": "f32", "shape": list(row_scale.shape)},
                row_scale.numpy().astype("<f4").tobytes(), "embedding")
        elif key in ternary_names:
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
            digest = hashlib.sha256()
            for part in (_PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header_bytes)), header_bytes, blob):
                handle.write(part)
                digest.update(part)
            handle.write(digest.digest())
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
        header_bytes=_PREAMBLE.size + len(header_bytes) + _DIGEST_BYTES,
        embedding_bytes=sizes["embedding"],
        bits_per_parameter=8 * file_bytes / n_params,
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



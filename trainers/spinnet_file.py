"""The `.spinnet` file format's one owner: its layout, constants, trit packing and the reader.

The writer is trainers.compress (it packs a checkpoint into this format); trainers.checkpoint's
one loader dispatches `.spinnet` paths here. Layout and encodings are described in
trainers.compress's docstring.
"""

from __future__ import annotations

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
from trainers.config import RunConfig, config_from_dict
from trainers.layers import HypercomplexLinear
from trainers.model import Transformer, build_model

MAGIC = b"SPINNET\x00"
FORMAT_VERSION = 2
_PREAMBLE = struct.Struct("<8sIQ")
_DIGEST_BYTES = 32
_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)
_FLOAT_CODES = {"float16": ("f16", "<f2", torch.float16), "float32": ("f32", "<f4", torch.float32)}

Packing = Literal["trits5", "trits2"]


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


def _ternary_layers(model: Transformer) -> dict[str, HypercomplexLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, HypercomplexLinear)}


# ---------------------------------------------------------------------------------------------
# reading


@dataclass
class LoadedSpinnet:
    model: Transformer  # eval mode; HypercomplexLinear layers frozen to the stored trits and scales
    config: RunConfig
    tokenizer: Any  # corpora.tokenizers.Tokenizer, or None when the file embeds none / not requested
    state: dict[str, Any]  # the training state scalars recorded at compression (iter_num, val_loss, ...)
    header: dict[str, Any]


def _read_verified(path: Path) -> tuple[dict[str, Any], bytes]:
    """(header, data section) of a .spinnet file whose whole-file checksum matches; any damage is
    one UserError line (bad magic, old version, truncation, impossible lengths, checksum, bad JSON)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        preamble = handle.read(_PREAMBLE.size)
        if len(preamble) < _PREAMBLE.size:
            raise UserError(f"{path}: too short to be a .spinnet file")
        magic, version, header_len = _PREAMBLE.unpack(preamble)
        if magic != MAGIC:
            raise UserError(f"{path}: not a .spinnet file (bad magic {magic!r})")
        if version > FORMAT_VERSION:
            raise UserError(f"{path}: .spinnet format version {version} is newer than this reader ({FORMAT_VERSION})")
        if version < FORMAT_VERSION:
            raise UserError(
                f"{path}: .spinnet format version {version} is not supported (its header is not checksummed); "
                "re-run `evalsuite compress` on the checkpoint"
            )
        if header_len > size - _PREAMBLE.size - _DIGEST_BYTES:
            raise UserError(f"{path}: truncated, or its header length field ({header_len} bytes) is corrupt")
        body = handle.read(size - _PREAMBLE.size - _DIGEST_BYTES)
        stored = handle.read()
    if len(stored) != _DIGEST_BYTES or hashlib.sha256(preamble + body).digest() != stored:
        raise UserError(f"{path}: file is corrupt or truncated (sha256 of header and data does not match)")
    try:
        header = json.loads(body[:header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: header is not valid UTF-8 JSON ({err})") from None
    if not isinstance(header, dict) or header.get("version") != version:
        raise UserError(f"{path}: header is malformed (no matching version field)")
    blob = body[header_len:]
    if hashlib.sha256(blob).hexdigest() != header.get("data_sha256"):
        raise UserError(f"{path}: data section is corrupt or truncated (sha256 mismatch)")
    return header, blob


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """(header dict, byte offset where the data section starts), after verifying the whole file."""
    path = Path(path)
    header, blob = _read_verified(path)
    return header, path.stat().st_size - _DIGEST_BYTES - len(blob)


def _header_field(path: Path, header: dict[str, Any], key: str, kind: type) -> Any:
    value = header.get(key)
    if not isinstance(value, kind):
        raise UserError(f"{path}: header field {key!r} is missing or not a {kind.__name__}")
    return value


def _decode_tensor(path: Path, entry: dict[str, Any], blob: bytes) -> torch.Tensor:
    offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
    if offset < 0 or nbytes < 0 or offset + nbytes > len(blob):
        raise ValueError(f"tensor {entry['name']!r} lies outside the data section")
    data = blob[offset: offset + nbytes]
    shape = tuple(int(d) for d in entry["shape"])
    encoding = entry["encoding"]
    if encoding in ("trits5", "trits2"):
        return torch.from_numpy(unpack_trits(data, math.prod(shape), encoding).reshape(shape))
    if encoding == "i8":
        return torch.from_numpy(np.frombuffer(data, dtype=np.int8).copy().reshape(shape))
    if encoding in ("f16", "f32"):
        dtype = "<f2" if encoding == "f16" else "<f4"
        return torch.from_numpy(np.frombuffer(data, dtype=dtype).astype(np.float32).reshape(shape))
    raise UserError(f"{path}: unknown tensor encoding {encoding!r}")


def extract_files(path: str | os.PathLike, directory: str | os.PathLike) -> list[Path]:
    """Write the embedded files (tokenizer/...) under `directory`; returns their paths."""
    path, directory = Path(path), Path(directory)
    header, blob = _read_verified(path)
    written = []
    for entry in _header_field(path, header, "files", list):
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
    header, blob = _read_verified(path)
    config = config_from_dict(_header_field(path, header, "config", dict))
    model = build_model(config.model)
    layers = _ternary_layers(model)
    tensors: dict[str, torch.Tensor] = {}
    try:
        for entry in _header_field(path, header, "tensors", list):
            tensors[entry["name"]] = _decode_tensor(path, entry, blob)
        for name, layer in layers.items():
            layer.load_ternary(tensors[f"{name}.frozen_trits"], tensors[f"{name}.frozen_scale"])
        if config.model.embedding_quant != "none":
            model.load_quantized_embedding(tensors["frozen_emb_codes"], tensors["frozen_emb_scale"])
            tensors["wte.weight"] = model.wte.weight.detach().clone()
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: tensor table does not match its config ({type(err).__name__}: {err})") from None
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: tensors do not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.to(device).eval()

    tokenizer = None
    if load_tokenizer and _header_field(path, header, "files", list):
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

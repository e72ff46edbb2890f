"""Training data: tokenize once, then sample random contiguous blocks from memory-mapped arrays.

`TrainConfig.data` is one of
- a tokenized directory holding `train.bin` and `val.bin` (with their `.json` sidecars and, ideally,
  the `tokenizer/` that made them): what `prepare_data` writes into a run's `data/` folder, so a
  prepared folder can be reused by (or carried to) another run;
- a tokenized `.bin` file (with `val_data` naming the validation `.bin`, or a `val.bin` beside it);
- raw text (`.txt`, `.jsonl` or a directory of them): split by document with
  `corpora.documents.split_documents(val_fraction, split_seed)` (train.split_seed, NOT the training
  seed) and tokenized ONCE into `<run>/data/`. Tokenizer `bpe:N` trains a byte-level BPE of N tokens
  on the training documents only and saves it in `<run>/data/tokenizer/`.
  Later calls (a resumed run) find the sidecars and reuse the arrays while the tokenizer, the source
  files and the split are unchanged.

Validation is a fixed set of blocks (`fixed_eval_blocks`), independent of batch_size and seeds.
Training batches come from `BlockSampler`: `batch_size` random offsets per batch from a `torch.Generator`
seeded from the config (and the DDP rank), so a run's data order is reproducible and its state can
be saved in a checkpoint and restored for an exact resume.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corpora.documents import read_documents, split_documents
from corpora.errors import UserError
from corpora.tokenized import TokenizedMeta, cached_tokenized, is_reusable, open_tokenized, source_fingerprint
from corpora.tokenizers import META_FILE, Tokenizer, load_tokenizer, train_bpe

TEXT_SUFFIXES = (".txt", ".jsonl")
# Offset between the seeds of the ranks' training samplers.
RANK_SEED_OFFSET = 7919


@dataclass
class PreparedData:
    """The train/val arrays of a run and the tokenizer that made them."""

    train: np.ndarray
    val: np.ndarray
    train_meta: TokenizedMeta
    val_meta: TokenizedMeta
    train_path: Path
    val_path: Path
    tokenizer: Tokenizer

    def summary(self) -> dict[str, Any]:
        """What a checkpoint records about its data (checked again on resume)."""
        return {
            "train_path": str(self.train_path),
            "val_path": str(self.val_path),
            "tokenizer_identity": self.tokenizer.identity,
            "train_tokens": self.train_meta.n_tokens,
            "val_tokens": self.val_meta.n_tokens,
            "train_chars": self.train_meta.n_chars,
            "val_chars": self.val_meta.n_chars,
            "train_documents": self.train_meta.n_documents,
            "val_documents": self.val_meta.n_documents,
        }


def prepare_data(
    data: str | os.PathLike | None,
    tokenizer_spec: str,
    data_dir: str | os.PathLike,
    *,
    val_data: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 1337,
    progress: bool = False,
) -> PreparedData:
    """Resolve `data` to (train, val) memmaps, tokenizing raw text into `data_dir` once."""
    if data is None or str(data) == "":
        raise UserError("no training data: set train.data to a corpus (.txt/.jsonl/dir) or a tokenized .bin")
    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(f"training data not found: {path}")
    if path.is_dir() and (path / "train.bin").is_file():
        return _open_pair(path / "train.bin", _val_path(path / "train.bin", val_data), tokenizer_spec)
    if path.is_file() and path.suffix == ".bin":
        return _open_pair(path, _val_path(path, val_data), tokenizer_spec)
    if val_data is not None:
        raise UserError("train.val_data applies only when train.data is a tokenized .bin")
    return _prepare_text(path, tokenizer_spec, Path(data_dir), val_fraction, seed, progress)


def bpe_spec_size(spec: str) -> int | None:
    """N for a tokenizer spec `bpe:N` (a byte-level BPE of N tokens trained on the training split),
    else None."""
    if not spec.startswith("bpe:"):
        return None
    try:
        size = int(spec.split(":", 1)[1])
    except ValueError:
        raise UserError(f"tokenizer spec {spec!r} must look like bpe:10000") from None
    if size < 258:
        raise UserError(f"tokenizer spec {spec!r}: a BPE needs at least 258 tokens")
    return size


def _val_path(train_path: Path, val_data: str | os.PathLike | None) -> Path:
    if val_data is not None:
        val = Path(val_data).expanduser()
        if not val.is_file():
            raise UserError(f"validation data not found: {val}")
        return val
    sibling = train_path.with_name("val.bin")
    if sibling.is_file() and sibling != train_path:
        return sibling
    raise UserError(
        f"no validation array for {train_path}: set train.val_data or put val.bin (with its sidecar) beside it"
    )


def _open_pair(train_path: Path, val_path: Path, tokenizer_spec: str) -> PreparedData:
    train, train_meta = open_tokenized(train_path)
    val, val_meta = open_tokenized(val_path)
    if train_meta.tokenizer_identity != val_meta.tokenizer_identity:
        raise UserError(f"{train_path} and {val_path} were made by different tokenizers")
    tokenizer = _tokenizer_for_arrays(train_path, train_meta, tokenizer_spec)
    return PreparedData(train, val, train_meta, val_meta, train_path, val_path, tokenizer)


def _tokenizer_for_arrays(train_path: Path, meta: TokenizedMeta, spec: str) -> Tokenizer:
    """The tokenizer that made `train_path`: the config's spec, or the saved one beside the arrays
    (needed for a char vocabulary or a trained bpe:N, which only exist as saved files); its identity must match."""
    beside = train_path.parent / "tokenizer"
    if spec == "char" or bpe_spec_size(spec) is not None or (spec == "gpt2" and beside.is_dir() and meta.tokenizer_name == "gpt2"):
        if not beside.is_dir():
            raise UserError(
                f"{train_path} was tokenized with {meta.tokenizer_name}; set train.tokenizer to the saved "
                "tokenizer directory (a char vocabulary cannot be rebuilt without its corpus)"
            )
        tokenizer = load_tokenizer(beside)
    else:
        tokenizer = load_tokenizer(spec)
    if tokenizer.identity != meta.tokenizer_identity:
        raise UserError(
            f"{train_path} was tokenized by {meta.tokenizer_identity}, but the configured tokenizer "
            f"'{spec}' is {tokenizer.identity}: the ids would mean different text"
        )
    return tokenizer


def _prepare_text(
    corpus: Path, spec: str, data_dir: Path, val_fraction: float, seed: int, progress: bool
) -> PreparedData:
    data_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = source_fingerprint(corpus)
    saved_tok = data_dir / "tokenizer"
    docs: list[str] | None = None
    split: tuple[list[str], list[str]] | None = None

    def get_split() -> tuple[list[str], list[str]]:
        nonlocal docs, split
        if split is None:
            docs = read_documents(corpus)
            split = split_documents(docs, val_fraction, seed)
        return split

    split_source = {"corpus": fingerprint, "val_fraction": val_fraction, "seed": seed}
    sources = {side: {**split_source, "side": side} for side in ("train", "val")}
    tokenizer: Tokenizer | None = None
    bpe_size = bpe_spec_size(spec)
    if bpe_size is not None:
        # Trained on the TRAINING documents only (validation text must not shape the vocabulary),
        # saved in <run>/data/tokenizer/ and reused while the source and split are unchanged.
        if (saved_tok / META_FILE).is_file():
            saved = load_tokenizer(saved_tok)
            if all(is_reusable(data_dir / f"{side}.bin", saved, sources[side]) for side in sources):
                tokenizer = saved
        if tokenizer is None:
            tokenizer = train_bpe(get_split()[0], vocab_size=bpe_size, progress=progress)
    elif spec == "char":
        # The character vocabulary is the alphabet of the whole corpus (train and val), so validation
        # text never maps to the unknown token, which would make its loss look better than it is.
        # A saved vocabulary is reused only together with the arrays it made from this same source.
        if (saved_tok / META_FILE).is_file():
            saved = load_tokenizer(saved_tok)
            if all(is_reusable(data_dir / f"{side}.bin", saved, sources[side]) for side in sources):
                tokenizer = saved
        if tokenizer is None:
            get_split()
            tokenizer = load_tokenizer("char", docs=docs)
    else:
        tokenizer = load_tokenizer(spec)
    paths = {
        side: cached_tokenized(
            data_dir / f"{side}.bin", tokenizer, sources[side],
            (lambda i=i: get_split()[i]), progress=progress,
        )
        for i, side in enumerate(("train", "val"))
    }
    train_path, val_path = paths["train"], paths["val"]
    if not (saved_tok / META_FILE).is_file() or load_tokenizer(saved_tok).identity != tokenizer.identity:
        tokenizer.save(saved_tok)
    train, train_meta = open_tokenized(train_path)
    val, val_meta = open_tokenized(val_path)
    return PreparedData(train, val, train_meta, val_meta, train_path, val_path, tokenizer)


class BlockSampler:
    """Random contiguous (x, y) blocks of `block_size` tokens from one array, y shifted by one.

    Offsets come from a private `torch.Generator`, so sampling never touches (or depends on) the
    global RNG, and `state_dict()` captures exactly where the data order stands.
    """

    def __init__(self, data: np.ndarray, block_size: int, batch_size: int, seed: int, *, name: str = "train"):
        if len(data) < block_size + 1:
            raise UserError(
                f"the {name} split has {len(data)} tokens, fewer than train.block_size + 1 = {block_size + 1}; "
                "use more text or a smaller block_size"
            )
        self.data = data
        self.block_size = block_size
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) int64 tensors of shape (batch_size, block_size) on the CPU."""
        high = len(self.data) - self.block_size  # exclusive: the last start still has a target
        starts = torch.randint(high, (self.batch_size,), generator=self.generator).tolist()
        rows = np.stack([np.asarray(self.data[s : s + self.block_size + 1], dtype=np.int64) for s in starts])
        block = torch.from_numpy(rows)
        return block[:, :-1].contiguous(), block[:, 1:].contiguous()

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def train_seed(seed: int, rank: int) -> int:
    """Seed of rank `rank`'s training sampler (ranks draw different blocks)."""
    return seed + RANK_SEED_OFFSET * rank


def fixed_eval_blocks(data: np.ndarray, block_size: int, eval_tokens: int | None) -> list[int]:
    """Start offsets of the validation blocks every evaluation scores.

    The split is cut into non-overlapping blocks of `block_size` targets (starts 0, T, 2T, ...; the
    tail shorter than a block is left out). eval_tokens None, or at least the split: all of them.
    Otherwise eval_tokens // block_size of them, evenly spaced over the split (deterministic, no
    seed), so the subset covers the whole split rather than its beginning. Nothing here depends on
    batch_size or on the training seed.
    """
    n_blocks = (len(data) - 1) // block_size
    if n_blocks < 1:
        raise UserError(
            f"the validation split has {len(data)} tokens, fewer than train.block_size + 1 = {block_size + 1}"
        )
    wanted = n_blocks if eval_tokens is None else max(1, min(n_blocks, eval_tokens // block_size))
    picks = np.unique(np.linspace(0, n_blocks - 1, wanted).round().astype(np.int64))
    return [int(i) * block_size for i in picks]


def fixed_eval_batches(
    data: np.ndarray, block_size: int, batch_size: int, eval_tokens: int | None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed validation blocks (`fixed_eval_blocks`) as (x, y) batches of up to `batch_size` rows;
    the same blocks at every eval of a run, of its resumptions and of any run on the same split."""
    starts = fixed_eval_blocks(data, block_size, eval_tokens)
    batches = []
    for i in range(0, len(starts), batch_size):
        rows = np.stack([np.asarray(data[s : s + block_size + 1], dtype=np.int64) for s in starts[i : i + batch_size]])
        block = torch.from_numpy(rows)
        batches.append((block[:, :-1].contiguous(), block[:, 1:].contiguous()))
    return batches

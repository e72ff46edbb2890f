"""Story generation from checkpoints: prompt sets -> samples (one dict per story).

Reproducibility: every prompt gets its own random generator, seeded from (seed, prompt id). So the
same seed gives the same text, the same prompt gets the same random stream in every checkpoint
(paired comparisons), and a story does not depend on which other prompts share its batch.

Batching without padding: the models take no attention mask, so left-padding would leak pad
tokens into attention. Instead, sequences of equal current length are batched: at each step the
sequences with the shortest context advance by one token; shorter prompts catch up with longer
ones and then move in lockstep. Every forward pass is exact (no padding), and the number of passes
is about (longest prompt - shortest prompt) + max_new_tokens rather than one per prompt and token.
Contexts longer than the training block size are cropped to the last `block_size` tokens.

A story starts after `<|endoftext|>` (documents are joined by it in training), and ends when the
model emits it again (or at `max_new_tokens`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from corpora.errors import UserError

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
DEFAULT_PROMPT_SET = "tinystories_beginnings"
EOT_TEXT = "<|endoftext|>"


# ----------------------------------------------------------------------------------------------
# prompt sets


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


@dataclass
class PromptSet:
    name: str
    path: str
    prompts: list[Prompt]
    meta: dict[str, Any]


def builtin_prompt_sets() -> list[str]:
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.jsonl"))


def load_prompt_set(spec: str | Path) -> PromptSet:
    """A built-in set by name (see evalsuite/prompts/) or a user file (.jsonl or .txt)."""
    text = str(spec)
    aliases = {"tinystories": DEFAULT_PROMPT_SET}
    name = aliases.get(text, text)
    builtin = PROMPTS_DIR / f"{name}.jsonl"
    path = builtin if builtin.is_file() else Path(text).expanduser()
    if not path.is_file():
        raise UserError(
            f"prompt set not found: {spec} (a .jsonl/.txt file, or one of: {', '.join(builtin_prompt_sets())})"
        )
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        prompts = _read_jsonl_prompts(path)
    elif suffix == ".txt":
        prompts = _read_txt_prompts(path)
    else:
        raise UserError(f"prompt file {path}: expected .jsonl or .txt")
    if not prompts:
        raise UserError(f"prompt file {path} has no prompts")
    ids = [p.id for p in prompts]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise UserError(f"prompt file {path}: duplicate ids {dupes[:5]}")
    meta: dict[str, Any] = {}
    meta_path = path.with_name(path.stem + ".meta.yaml")
    if meta_path.is_file():
        import yaml

        meta = yaml.safe_load(meta_path.read_text(encoding="utf-8")) or {}
    return PromptSet(name=path.stem, path=str(path), prompts=prompts, meta=meta)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None


def _clean_prompt(text: str, where: str) -> str:
    # A prompt never ends in whitespace: BPE tokenizers attach the space to the next word.
    cleaned = text.strip()
    if not cleaned:
        raise UserError(f"{where}: empty prompt")
    return cleaned


def _read_jsonl_prompts(path: Path) -> list[Prompt]:
    prompts = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{where}: not valid JSON ({err.msg})") from None
        if isinstance(obj, str):
            prompts.append(Prompt(f"{path.stem}-{len(prompts) + 1:04d}", _clean_prompt(obj, where)))
            continue
        if not isinstance(obj, dict):
            raise UserError(f"{where}: expected an object with 'prompt' (or 'text'), or a JSON string")
        unknown = set(obj) - {"id", "prompt", "text", "source"}
        if unknown:
            raise UserError(f"{where}: unknown key(s) {sorted(unknown)} (allowed: id, prompt or text, source)")
        body = obj.get("prompt", obj.get("text"))
        if not isinstance(body, str):
            raise UserError(f"{where}: 'prompt' must be a string")
        pid = str(obj.get("id") or f"{path.stem}-{len(prompts) + 1:04d}")
        prompts.append(Prompt(pid, _clean_prompt(body, where)))
    return prompts


def _read_txt_prompts(path: Path) -> list[Prompt]:
    text = _read_text(path)
    chunks = text.split(EOT_TEXT) if EOT_TEXT in text else text.splitlines()
    bodies = [c.strip() for c in chunks if c.strip()]
    return [Prompt(f"{path.stem}-{i:04d}", b) for i, b in enumerate(bodies, start=1)]


# ----------------------------------------------------------------------------------------------
# sampling


@dataclass
class SamplingConfig:
    """temperature 0 = greedy; top_k None/0 = off; top_p 1.0 = off."""

    temperature: float = 0.8
    top_k: int | None = None
    top_p: float = 1.0
    max_new_tokens: int = 300
    seed: int = 1337
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.top_k == 0:
            self.top_k = None
        checks = [
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (self.top_k is None or self.top_k >= 1, f"top_k must be >= 1 (or 0 = off), got {self.top_k}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


def prompt_seed(seed: int, prompt_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def filter_logits(logits: Any, temperature: float, top_k: int | None, top_p: float) -> Any:
    """(B, V) logits -> (B, V) probabilities after temperature, top-k and nucleus (top-p) filtering."""
    import torch

    logits = logits.float() / max(temperature, 1e-8)
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
        drop_sorted = (cumulative - sorted_probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


@dataclass
class _Sequence:
    index: int
    prompt: Prompt
    ids: list[int]
    n_prompt: int
    generator: Any
    finish_reason: str | None = None


def generate_ids(
    model: Any,
    prompts: list[tuple[Prompt, list[int]]],
    *,
    eot_id: int,
    block_size: int,
    sampling: SamplingConfig,
    device: str = "cpu",
    on_done: Callable[[_Sequence], None] | None = None,
) -> list[_Sequence]:
    """Generate continuations of already-encoded prompts (see the module docstring for batching)."""
    import torch

    seqs = []
    for i, (prompt, ids) in enumerate(prompts):
        gen = torch.Generator(device=device)
        gen.manual_seed(prompt_seed(sampling.seed, prompt.id))
        seqs.append(_Sequence(i, prompt, list(ids), len(ids), gen))
    active = list(seqs)
    model.eval()
    with torch.inference_mode():
        while active:
            length = min(min(len(s.ids), block_size) for s in active)
            group = [s for s in active if min(len(s.ids), block_size) == length][: sampling.batch_size]
            context = torch.tensor([s.ids[-length:] for s in group], dtype=torch.long, device=device)
            logits = model(context).logits[:, -1, :]
            if sampling.temperature == 0:
                next_ids = torch.argmax(logits, dim=-1).tolist()
            else:
                probs = filter_logits(logits, sampling.temperature, sampling.top_k, sampling.top_p)
                next_ids = [int(torch.multinomial(probs[j], 1, generator=s.generator)) for j, s in enumerate(group)]
            for s, token in zip(group, next_ids, strict=True):
                if token == eot_id:
                    s.finish_reason = "eot"
                else:
                    s.ids.append(token)
                    if len(s.ids) - s.n_prompt >= sampling.max_new_tokens:
                        s.finish_reason = "length"
                if s.finish_reason is not None:
                    active.remove(s)
                    if on_done is not None:
                        on_done(s)
    return seqs


# ----------------------------------------------------------------------------------------------
# checkpoints -> samples


def checkpoint_id(path: Path) -> str:
    """Readable and tied to the weights: '<run>/<checkpoint>-<sha256 of the weights, 10 hex>'."""
    weights = path / "model.safetensors" if path.is_dir() else path
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    name = f"{path.parent.name}/{path.name}" if path.is_dir() else path.stem
    return f"{name}-{digest.hexdigest()[:10]}"


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no GPU")
    return device


def iter_samples(
    checkpoint: str | Path,
    prompt_set: PromptSet,
    sampling: SamplingConfig,
    *,
    device: str = "cpu",
) -> Iterator[dict[str, Any]]:
    """Load one checkpoint and yield one sample dict per prompt, in prompt order (samples.jsonl rows)."""
    from trainers.checkpoint import load_checkpoint

    device = resolve_device(device)
    loaded = load_checkpoint(checkpoint, device=device)
    tok = loaded.tokenizer
    block_size = min(loaded.config.train.block_size, loaded.config.model.max_seq_len)
    ckpt_path = Path(loaded.path) if loaded.path is not None else Path(checkpoint)
    encoded = []
    for prompt in prompt_set.prompts:
        ids = tok.encode(prompt.text)
        if tok.unk_id is not None and tok.unk_id in ids:
            raise UserError(
                f"prompt {prompt.id} has characters the checkpoint's tokenizer ({tok.name}) does not know; "
                "a char-level model can only continue text made of characters it was trained on"
            )
        encoded.append((prompt, [tok.eot_id, *ids]))
    seqs = generate_ids(loaded.model, encoded, eot_id=tok.eot_id, block_size=block_size, sampling=sampling, device=device)
    state = loaded.state
    facts = {
        "checkpoint": str(checkpoint),
        "checkpoint_id": checkpoint_id(ckpt_path),
        "val_loss": state.get("val_loss"),
        "val_bpc": state.get("val_bpc"),
        "tokens_seen": state.get("tokens_seen"),
        "iter_num": state.get("iter_num"),
        "model_family": loaded.config.model.family,
        "tokenizer": tok.name,
        "tokenizer_identity": tok.identity,
    }
    settings = {k: v for k, v in asdict(sampling).items() if k != "batch_size"}
    for s in seqs:
        completion_ids = s.ids[s.n_prompt:]
        yield {
            "prompt_id": s.prompt.id,
            "prompt": s.prompt.text,
            "completion": tok.decode(completion_ids),
            **facts,
            **settings,
            "prompt_set": prompt_set.name,
            "finish_reason": s.finish_reason,
            "n_prompt_tokens": s.n_prompt - 1,
            "n_completion_tokens": len(completion_ids),
            "device": device,
        }


def generate_samples(
    checkpoints: list[str | Path], prompt_set: PromptSet, sampling: SamplingConfig, *, device: str = "cpu"
) -> list[dict[str, Any]]:
    """All samples for several checkpoints (see `iter_samples`)."""
    return [row for ckpt in checkpoints for row in iter_samples(ckpt, prompt_set, sampling, device=device)]


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"

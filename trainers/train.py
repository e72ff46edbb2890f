"""The training loop (nanoGPT style): one function, `train(run_config) -> TrainResult`.

What a step does: `grad_accum` micro-batches of random contiguous blocks (trainers.data), forward
under bf16 autocast on CUDA (fp32 on CPU), cross-entropy (optionally with article tokens weighted),
backward, gradient clipping, AdamW (fused on CUDA; weight decay on weight matrices only: not on norms, scales or
the head mixer), learning rate (and weight decay) from `train.schedule`: linear warmup then cosine
decay to min_lr over lr_decay_iters (= max_iters; config.py refuses anything else unless
force_schedule), or BitNet b1.58's two-stage schedule (`schedule_at`).

With train.compile the model and the training cross-entropy are compiled (two graphs, in
train.compile_mode); many small runs at once on one GPU: trainers.multirun (N processes, or N runs in one
process as one batched stack, trainers.stack, which drives `run_steps`, the generator `train` drives).

Every `eval_interval` steps (and at step 0, at the last step and at snapshot steps) the model is
evaluated on the same fixed validation blocks (train.eval_tokens; the same for every batch_size and
training seed), with the standard error over blocks, reported in nats per token and in bits per
character of raw text, and the run directory is checkpointed (trainers.checkpoint): `latest/`
always, `best/` when the validation loss improved, `step_XXXXXXX/` at configured steps and the first
time the validation loss drops below each configured threshold.

`metrics_stream.jsonl` gets one line per log step with the same keys every time (null when a value
was not measured at that step). A resumed run truncates the lines after the step it resumes from,
so the stream never holds a step twice, and continues the same loss curve: model, optimizer, the
step counter, every RNG and the data sampler's position come back from `latest/`.

Multi-GPU: launch with `torchrun --nproc_per_node=K -m evalsuite.cli train ...`; when WORLD_SIZE > 1
the loop initialises torch.distributed and wraps the model in DistributedDataParallel. Each rank
draws its own blocks (sampler seeded by rank); rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from corpora.errors import UserError
from corpora.tokenized import bits_per_char
from corpora.tokenizers import article_token_ids
from trainers import checkpoint as ckpt
from trainers.config import ABLATIONS, RunConfig, TrainConfig
from trainers.data import BlockSampler, PreparedData, fixed_eval_batches, prepare_data, train_seed
from trainers.metrics import METRIC_KEYS, METRICS_FILE, MetricsStream, read_metrics  # noqa: F401 (re-exported)
from trainers.model import build_model

CONFIG_YAML = "config.yaml"
# Settings that may differ when a run is resumed: they do not change what is computed.
RESUMABLE_CHANGES = {"compile", "compile_mode", "device", "snapshot_steps", "snapshot_val_losses", "out_dir", "data", "val_data"}


@dataclass
class RunInfo:
    """What a run is about to do; handed to `on_start` before the first step."""

    run_dir: Path
    device: str
    dtype: str
    world_size: int
    model_family: str
    n_params: int
    n_params_non_embedding: int
    train_tokens: int
    val_tokens: int
    tokenizer: str
    tokens_per_step: int
    planned_tokens: int
    start_step: int
    max_iters: int
    resumed: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    tokens_seen: int
    val_loss: float | None
    val_bpc: float | None
    best_val_loss: float | None
    best_val_bpc: float | None
    metrics_path: Path
    checkpoints: list[str]
    elapsed_s: float
    stopped_early: bool
    info: RunInfo


@dataclass
class EvalResult:
    val_loss: float
    val_bpc: float
    article_loss: float | None
    other_loss: float | None
    n_tokens: int
    # Standard error of val_loss over the evaluation BLOCKS (each block_size contiguous tokens, all
    # of equal size): sd of the per-block mean losses / sqrt(n_blocks). Blocks rather than tokens,
    # because neighbouring tokens' losses are correlated. None with fewer than 2 blocks.
    val_loss_se: float | None = None
    n_blocks: int = 0
    # Mean loss of each evaluation block, in block order (the same blocks for every model on the same
    # split and block_size): saved in trainer_state.json so two checkpoints can be compared block by
    # block (`paired_val_difference`), which removes the evaluation-sampling noise from a difference.
    block_losses: list[float] | None = None

    @property
    def article_other_ratio(self) -> float | None:
        if self.article_loss is None or not self.other_loss:
            return None
        return self.article_loss / self.other_loss


# ----------------------------------------------------------------------------------------------
# schedule, optimizer, loss


# BitNet b1.58 two-stage schedule (the 2B4T technical report, section "Pre-training"; the
# "Training Tips, Code and FAQ" note): stage 1 peaks at lr and decays to 8e-4/1.5e-3 of it; stage 2
# restarts at 5e-4/1.5e-3 of lr and decays to min_lr. Weight decay: cosine from weight_decay to 0 in
# stage 1, none in stage 2 (latent weights are then free to settle into their trits).
TWO_STAGE_END_OF_STAGE1 = 8e-4 / 1.5e-3
TWO_STAGE_START_OF_STAGE2 = 5e-4 / 1.5e-3


def _cosine(progress: float, high: float, low: float) -> float:
    return low + 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0))) * (high - low)


def schedule_at(step: int, cfg: TrainConfig) -> tuple[float, float]:
    """(learning rate, weight decay of the decayed group) at `step`, per `train.schedule` (configs
    from before the option, e.g. diagnose's view of an old run, have the cosine schedule)."""
    if getattr(cfg, "schedule", "cosine") == "cosine":
        return _cosine_lr_at(step, cfg), getattr(cfg, "weight_decay", 0.0)
    assert cfg.min_lr is not None and cfg.lr_decay_iters is not None
    middle = cfg.lr_decay_iters // 2
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1), cfg.weight_decay
    if step < middle:
        progress = (step - cfg.warmup_iters) / max(1, middle - cfg.warmup_iters)
        lr = _cosine(progress, cfg.lr, cfg.lr * TWO_STAGE_END_OF_STAGE1)
        return lr, _cosine(progress, cfg.weight_decay, 0.0)
    progress = (step - middle) / max(1, cfg.lr_decay_iters - middle)
    start = max(cfg.lr * TWO_STAGE_START_OF_STAGE2, cfg.min_lr)
    return _cosine(progress, start, cfg.min_lr), 0.0


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate at `step` (see `schedule_at`)."""
    return schedule_at(step, cfg)[0]


def _cosine_lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over warmup_iters, then cosine from lr to min_lr reaching min_lr at lr_decay_iters."""
    assert cfg.min_lr is not None and cfg.lr_decay_iters is not None  # resolved by TrainConfig
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1)
    if step >= cfg.lr_decay_iters:
        return cfg.min_lr
    progress = (step - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def decays(name: str, param: torch.nn.Parameter) -> bool:
    """Weight decay applies to weight matrices (embedding, dense and SpinNet component matrices), not
    to norm gains, biases or scales (vectors), nor to the octonion head mixer: its weights start at
    the identity e0, and decay would pull that gain toward zero rather than toward "no mixing"."""
    return param.dim() >= 2 and ".mixer." not in f".{name}"


def configure_optimizer(model: torch.nn.Module, cfg: TrainConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (see `decays`); group 0 is the decayed one."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if decays(n, p)]
    no_decay = [p for n, p in named if not decays(n, p)]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    extra = {"fused": True} if device_type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **extra)


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy in nats, in fp32, flattened to (B*T,)."""
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), reduction="none")


def weighted_objective(
    losses: torch.Tensor, targets: torch.Tensor, article_ids: torch.Tensor | None, weight: float
) -> torch.Tensor:
    """Mean of per-token losses with article targets weighted by `weight` (normalised by the total
    weight). weight 1.0 (the default) or no article ids gives the plain mean cross-entropy."""
    if weight == 1.0 or article_ids is None or article_ids.numel() == 0:
        return losses.mean()
    is_article = torch.isin(targets.reshape(-1), article_ids)
    weights = torch.where(is_article, torch.full_like(losses, weight), torch.ones_like(losses))
    return (weights * losses).sum() / weights.sum().clamp(min=1e-12)


# ----------------------------------------------------------------------------------------------
# distributed


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str) -> Dist:
    """Initialise torch.distributed when launched by torchrun with WORLD_SIZE > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    import torch.distributed as dist

    use_cuda = device_pref != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")), world_size=world_size)


def resolve_device(pref: str, d: Dist) -> torch.device:
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"train.device={pref} but CUDA is not available here")
        if d.enabled or pref == "cuda":
            pref = f"cuda:{d.local_rank}"
        torch.cuda.set_device(torch.device(pref))
    elif pref != "cpu":
        raise UserError(f"train.device must be auto, cpu or cuda[:N], got {pref!r}")
    return torch.device(pref)


def resolve_dtype(pref: str, device: torch.device) -> torch.dtype:
    if pref == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[pref]
    if dtype == torch.float16 and device.type != "cuda":
        raise UserError("train.dtype=float16 needs CUDA; use bfloat16 or float32 on the CPU")
    return dtype


def _all_reduce_sum(values: list[float], d: Dist, device: torch.device) -> list[float]:
    if not d.enabled:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def _gather_objects(obj: Any, d: Dist) -> list[Any]:
    if not d.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------------------------
# evaluation and metrics


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
    article_ids: torch.Tensor | None,
    val_meta: Any,
    d: Dist | None = None,
) -> EvalResult:
    """Mean plain cross-entropy over the fixed validation blocks (nats/token), its standard error over
    blocks, its bits per character, and the mean loss on article targets vs all other targets.
    Ranks split the batches; sums are float64, so the result does not depend on how the fixed
    blocks are batched (beyond float rounding)."""
    d = d or Dist()
    was_training = model.training
    model.eval()
    # loss, n, article loss, n, other loss, n, sum of block means, sum of squared block means, blocks
    sums = torch.zeros(9, dtype=torch.float64, device=device)
    mine: list[tuple[int, list[float]]] = []
    for i, (x, y) in enumerate(batches):
        if i % d.world_size != d.rank:
            continue
        x, y = x.to(device), y.to(device)
        with autocast():
            logits = model(x).logits
        losses = token_losses(logits, y).double()
        sums[0] += losses.sum()
        sums[1] += losses.numel()
        block_means = losses.view(y.shape).mean(dim=1)
        mine.append((i, block_means.tolist()))
        sums[6] += block_means.sum()
        sums[7] += block_means.pow(2).sum()
        sums[8] += block_means.numel()
        if article_ids is not None and article_ids.numel():
            is_article = torch.isin(y.reshape(-1), article_ids)
            sums[2] += losses[is_article].sum()
            sums[3] += is_article.sum()
            sums[4] += losses[~is_article].sum()
            sums[5] += (~is_article).sum()
    if was_training:
        model.train()
    total = _all_reduce_sum(sums.tolist(), d, device)
    val_loss = total[0] / total[1]
    n_blocks = int(total[8])
    gathered = sorted(item for part in _gather_objects(mine, d) for item in part)
    block_losses = [loss for _, means in gathered for loss in means]
    se = None
    if n_blocks >= 2:
        variance = max(0.0, (total[7] - total[6] ** 2 / n_blocks) / (n_blocks - 1))
        se = math.sqrt(variance / n_blocks)
    return EvalResult(
        val_loss=val_loss,
        val_bpc=bits_per_char(val_loss, val_meta),
        article_loss=total[2] / total[3] if total[3] else None,
        other_loss=total[4] / total[5] if total[5] else None,
        n_tokens=int(total[1]),
        val_loss_se=se,
        n_blocks=n_blocks,
        block_losses=block_losses,
    )


def paired_val_difference(state_a: dict[str, Any], state_b: dict[str, Any]) -> dict[str, float | int]:
    """val_loss(a) - val_loss(b) from two checkpoints' trainer_state.json, paired over the same
    evaluation blocks: {difference, se, n_blocks}; se = sd of per-block differences / sqrt(blocks).
    Refuses checkpoints evaluated on different blocks (another split, tokenizer or block set)."""
    keys = ("tokenizer_identity", "val_tokens", "val_chars")
    data_a, data_b = state_a.get("data", {}), state_b.get("data", {})
    a, b = state_a.get("val_block_losses"), state_b.get("val_block_losses")
    if not a or not b:
        raise UserError("both checkpoints need val_block_losses in trainer_state.json (written since issue 12)")
    if len(a) != len(b) or any(data_a.get(k) != data_b.get(k) for k in keys) \
            or state_a.get("val_eval_tokens") != state_b.get("val_eval_tokens"):
        raise UserError("the checkpoints were evaluated on different validation blocks; a paired difference needs the same")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in diffs) / (n - 1) / n) if n >= 2 else float("nan")
    return {"difference": mean, "se": se, "n_blocks": n}


# ----------------------------------------------------------------------------------------------
# setup helpers


def resolve_vocab(config: RunConfig, vocab_size: int) -> RunConfig:
    """Fill model.vocab_size from the tokenizer; refuse a model too small for the tokenizer's ids."""
    model_cfg = config.model
    if model_cfg.vocab_size is None:
        model_cfg = dataclasses.replace(model_cfg, vocab_size=vocab_size)
    elif model_cfg.vocab_size < vocab_size:
        raise UserError(
            f"model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's {vocab_size} ids"
        )
    return RunConfig(model=model_cfg, train=config.train)


def config_differences(saved: RunConfig, new: RunConfig, may_differ: set[str] = RESUMABLE_CHANGES) -> list[str]:
    """`section.key: old -> new` for every setting that differs, except the train settings in `may_differ`
    (by default those a resumed run may change; trainers.stack passes the ones its runs may differ in)."""
    old_d, new_d = saved.to_dict(), new.to_dict()
    diffs = []
    for section in ("model", "train"):
        for key, value in new_d[section].items():
            if old_d[section].get(key) != value and not (section == "train" and key in may_differ):
                diffs.append(f"{section}.{key}: {old_d[section].get(key)!r} -> {value!r}")
    return diffs


def _count_params(model: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    emb = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    return total, total - emb


def _article_ids(tokenizer: Any, device: torch.device) -> torch.Tensor:
    # context_free: a per-token weight cannot tell the article "a" from the piece "a" inside "p|a|rk"
    ids = sorted({i for group in article_token_ids(tokenizer, context_free=True).values() for i in group})
    return torch.tensor(ids, dtype=torch.long, device=device)


def _eval_steps(cfg: TrainConfig) -> set[int]:
    return set(cfg.snapshot_steps) | {cfg.max_iters}


# ----------------------------------------------------------------------------------------------
# the loop


def train(
    run_config: RunConfig,
    resume: bool = False,
    progress: bool = True,
    *,
    on_start: Callable[[RunInfo], None] | None = None,
    stop_at_step: int | None = None,
    time_limit_s: float | None = None,
) -> TrainResult:
    """Train a model as `run_config` says, writing checkpoints and metrics into `train.out_dir`.

    resume: continue from `<out_dir>/latest/` (starts fresh when there is none yet; the reason is in
    RunInfo.notes). Without resume, an out_dir that already holds a checkpoint is refused.
    stop_at_step: return after that step without any extra checkpoint, as if the process had been
    killed there (tests use it to check that resuming continues the same curve).
    time_limit_s: once this many seconds have passed, evaluate and checkpoint the current step and
    return (stopped_early), so a job with a wall-clock limit ends resumable without losing steps.
    """
    started = time.perf_counter()
    cfg = run_config.train
    d = setup_distributed(cfg.device)
    try:
        return drive_alone(run_steps(run_config, resume, progress, on_start, stop_at_step, time_limit_s, d, started))
    finally:
        if d.enabled:
            import gc

            import torch.distributed as dist

            # the run's objects hold each other in cycles (the model, for one, outlives train() until a collection):
            # free them while the process group still exists; left to the interpreter's exit, a rank aborted at exit
            # ("terminate called without an active exception") in 4 of 20 runs of test_ddp_two_processes_gloo, 0 of 40
            # with this collection
            gc.collect()
            if dist.is_initialized():
                dist.destroy_process_group()


@dataclass
class BuiltModel:
    """run_steps' first request: the freshly built model, before its optimizer exists (trainers.stack re-binds
    its parameters to a slice of stacked tensors here). Answer None."""

    model: torch.nn.Module


@dataclass
class MicroBatch:
    """run_steps' request for one micro-batch's forward and backward. Answer (mean loss, objective), detached
    scalars, once the gradient of objective / grad_accum has reached the model's parameters.

    `objective(logits, y) -> (mean loss, objective)` is the run's loss (weighted_objective), computed outside
    `autocast()`, the run's mixed-precision context for the forward pass; `alone` does the whole answer with the
    run's own model (what `train` does)."""

    x: torch.Tensor
    y: torch.Tensor
    grad_accum: int
    objective: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    autocast: Callable[[], contextlib.AbstractContextManager]
    alone: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def drive_alone(steps: Generator[BuiltModel | MicroBatch, Any, TrainResult]) -> TrainResult:
    """Run a run_steps generator by itself: every micro-batch through the run's own model."""
    request = next(steps)
    try:
        while True:
            request = steps.send(None if isinstance(request, BuiltModel) else request.alone(request.x, request.y))
    except StopIteration as done:
        return done.value


def run_steps(
    run_config: RunConfig,
    resume: bool,
    progress: bool,
    on_start: Callable[[RunInfo], None] | None,
    stop_at_step: int | None,
    time_limit_s: float | None,
    d: Dist,
    started: float,
    time_up: Callable[[int], bool] | None = None,
) -> Generator[BuiltModel | MicroBatch, Any, TrainResult]:
    """The training run as a generator: it asks its driver for the model's forward and backward passes
    (BuiltModel once, then one MicroBatch per micro-batch) and does everything else itself: data, schedule,
    clipping, optimizer, metrics, evaluation, checkpoints, resume. `drive_alone` answers with the run's own
    model (`train`); trainers.stack answers N runs' requests with one batched pass.

    time_up(step): whether the time limit has passed, asked on log steps (default: time_limit_s after `started`);
    a stack shares one answer per step so that its runs stop together."""
    cfg = run_config.train
    unlabelled = run_config.model.unlabelled_ablations()
    if unlabelled:
        raise UserError(
            f"this SpinNet has {', '.join(ABLATIONS[u] for u in unlabelled)} but does not label it an ablation: add "
            f"model.ablations=[{','.join(run_config.model.ablations + unlabelled)}] to train it as an ablation"
        )
    device = resolve_device(cfg.device, d)
    dtype = resolve_dtype(cfg.dtype, device)
    if run_config.model.residual_dtype == "autocast" and dtype == torch.float32:
        raise UserError("model.residual_dtype=autocast keeps the residual stream in the autocast dtype, but this run "
                        "trains in float32 (no autocast): set train.dtype=bfloat16, or leave residual_dtype float32")
    run_dir = Path(cfg.out_dir).expanduser()
    notes: list[str] = []
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        notes += ckpt.recover_run_dir(run_dir)
    _barrier(d)

    latest = run_dir / "latest"
    has_latest = ckpt.is_checkpoint_dir(latest)
    if has_latest and not resume:
        raise UserError(f"{run_dir} already holds a checkpoint (latest/): pass --resume, or choose another --out-dir")
    if resume and not has_latest:
        notes.append(f"nothing to resume in {run_dir}: starting from step 0")

    # Data: rank 0 tokenizes (once, cached in <run>/data); the others then open the same arrays.
    data: PreparedData | None = None
    for turn in ("main", "others"):
        if (turn == "main") == d.is_main:
            data = prepare_data(
                cfg.data, cfg.tokenizer, run_dir / "data", val_data=cfg.val_data,
                val_fraction=cfg.val_fraction, seed=cfg.split_seed, progress=progress and d.is_main,
            )
        _barrier(d)
    assert data is not None
    config = resolve_vocab(run_config, data.tokenizer.vocab_size)

    state: dict[str, Any] = {}
    if resume and has_latest:
        saved_config = ckpt.read_config(latest)
        diffs = config_differences(saved_config, config)
        if diffs:
            raise UserError(f"cannot resume {run_dir} with a different config: {'; '.join(diffs)}")
        state = ckpt.read_state(latest)
        saved_data = state.get("data", {})
        for key in ("tokenizer_identity", "train_tokens", "val_tokens"):
            if saved_data.get(key) != data.summary()[key]:
                raise UserError(
                    f"cannot resume {run_dir}: its data changed ({key} {saved_data.get(key)!r} -> "
                    f"{data.summary()[key]!r})"
                )

    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    raw_model = build_model(config.model).to(device)
    yield BuiltModel(raw_model)  # the driver may re-bind the parameters (trainers.stack): before the optimizer
    optimizer = configure_optimizer(raw_model, cfg, device.type)
    if state:
        ckpt.load_model_weights(raw_model, latest)
        ckpt.load_optimizer_state(optimizer, latest)
    model: torch.nn.Module = raw_model
    # compiled: the loss too (its own graph), which spares the eager fp32 copy of the logits and the
    # eager softmax kernels (benchmarks/train_throughput.py variant compile-sep-loss measures it)
    loss_fn = token_losses
    cudagraphs = cfg.compile and cfg.compile_mode in ("reduce-overhead", "max-autotune")
    if cfg.compile:
        mode = None if cfg.compile_mode == "default" else cfg.compile_mode
        model = torch.compile(model, mode=mode)  # type: ignore[assignment]
        loss_fn = torch.compile(token_losses)
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    sampler = BlockSampler(data.train, cfg.block_size, cfg.batch_size, train_seed(cfg.seed, d.rank))
    eval_batches = fixed_eval_batches(data.val, cfg.block_size, cfg.batch_size, cfg.eval_tokens)
    article_ids = _article_ids(data.tokenizer, device)
    if cfg.article_loss_weight != 1.0 and article_ids.numel() == 0:
        notes.append(f"train.article_loss_weight={cfg.article_loss_weight} has no effect: the {data.tokenizer.name} "
                     "tokenizer has no article tokens (plain cross-entropy is used)")
    use_autocast = dtype != torch.float32

    def autocast() -> contextlib.AbstractContextManager:
        if not use_autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    def objective_of(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        losses = loss_fn(logits, y)
        return losses.mean(), weighted_objective(losses, y, article_ids, cfg.article_loss_weight)

    def forward_backward(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if cudagraphs:  # a new step for CUDA graph trees: the previous outputs are consumed
            torch.compiler.cudagraph_mark_step_begin()
        with autocast():
            logits = model(x).logits
        loss, objective = objective_of(logits, y)
        scaled = objective / cfg.grad_accum
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        return loss.detach(), objective.detach()

    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    if scaler is not None and state.get("grad_scaler"):
        # fp16 only: the loss scale is part of the exact continuation (a fresh 65536 could skip steps)
        scaler.load_state_dict(state["grad_scaler"])

    step = int(state.get("iter_num", 0))
    tokens_seen = int(state.get("tokens_seen", 0))
    best_val_loss = state.get("best_val_loss")
    best_val_bpc = state.get("best_val_bpc")
    best_iter = state.get("best_iter")
    thresholds_reached: list[list[float]] = [list(t) for t in state.get("thresholds_reached", [])]
    last_eval: EvalResult | None = None
    if state:
        last_eval = EvalResult(state["val_loss"], state["val_bpc"], state.get("article_loss"),
                               state.get("other_loss"), state.get("val_eval_tokens", 0),
                               state.get("val_loss_se"), state.get("val_eval_blocks", 0))
        saved_rng = state.get("rng") or []
        if len(saved_rng) == d.world_size:
            ckpt.restore_rng_state(saved_rng[d.rank], sampler.generator)
        else:
            notes.append(
                f"checkpoint has RNG states for {len(saved_rng)} ranks, this run has {d.world_size}: "
                "data order and dropout are reseeded, so the curve is not an exact continuation"
            )
            torch.manual_seed(cfg.seed + step)
            sampler.generator.manual_seed(train_seed(cfg.seed, d.rank) + step)

    metrics = MetricsStream(run_dir / METRICS_FILE, enabled=d.is_main)
    dropped = metrics.truncate_after(step if state else -1)
    if dropped and state:
        notes.append(f"dropped {dropped} metrics lines after step {step} (they are recomputed)")
    if d.is_main:
        config.save_yaml(run_dir / CONFIG_YAML)

    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum * d.world_size
    n_params, n_non_emb = _count_params(raw_model)
    info = RunInfo(
        run_dir=run_dir, device=str(device), dtype=str(dtype).replace("torch.", ""), world_size=d.world_size,
        model_family=config.model.family, n_params=n_params, n_params_non_embedding=n_non_emb,
        train_tokens=data.train_meta.n_tokens, val_tokens=data.val_meta.n_tokens, tokenizer=data.tokenizer.name,
        tokens_per_step=tokens_per_step, planned_tokens=cfg.max_iters * tokens_per_step, start_step=step,
        max_iters=cfg.max_iters, resumed=bool(state), notes=notes,
    )
    if on_start is not None and d.is_main:
        on_start(info)

    written: list[str] = []

    eval_model = model.module if d.enabled else model  # no DDP hooks for the no-grad eval passes

    def evaluate_now() -> EvalResult:
        return evaluate(eval_model, eval_batches, device=device, autocast=autocast, article_ids=article_ids,
                        val_meta=data.val_meta, d=d)

    def checkpoint(result: EvalResult) -> None:
        nonlocal best_val_loss, best_val_bpc, best_iter
        improved = best_val_loss is None or result.val_loss < best_val_loss
        if improved:
            best_val_loss, best_val_bpc, best_iter = result.val_loss, result.val_bpc, step
        newly = [t for t in sorted(cfg.snapshot_val_losses, reverse=True)
                 if result.val_loss < t and t not in [r[0] for r in thresholds_reached]]
        thresholds_reached.extend([t, step] for t in newly)
        rng = _gather_objects(ckpt.capture_rng_state(sampler.generator), d)
        if not d.is_main:
            return
        state_now = {
            "iter_num": step, "tokens_seen": tokens_seen, "val_loss": result.val_loss, "val_bpc": result.val_bpc,
            "article_loss": result.article_loss, "other_loss": result.other_loss,
            "val_eval_tokens": result.n_tokens, "val_loss_se": result.val_loss_se,
            "val_eval_blocks": result.n_blocks, "val_block_losses": result.block_losses, "best_val_loss": best_val_loss, "best_val_bpc": best_val_bpc,
            "best_iter": best_iter, "thresholds_reached": thresholds_reached, "snapshot_reason": None,
            "model_family": config.model.family, "n_params": n_params, "world_size": d.world_size,
            "data": data.summary(), "rng": rng, "torch_version": torch.__version__,
            "grad_scaler": scaler.state_dict() if scaler is not None else None,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        path = ckpt.write_checkpoint(run_dir, "latest", model=raw_model, config=config,
                                     tokenizer=data.tokenizer, state=state_now, optimizer=optimizer)
        written.append("latest")
        if improved:
            ckpt.copy_checkpoint(path, run_dir, "best")
            written.append("best")
        reasons = ([f"step {step} in train.snapshot_steps"] if step in cfg.snapshot_steps else []) + [
            f"val_loss first below {t}" for t in newly
        ]
        if reasons:
            name = ckpt.snapshot_name(step)
            ckpt.copy_checkpoint(path, run_dir, name, include_optimizer=False,
                                 state_update={"snapshot_reason": "; ".join(reasons)})
            written.append(name)

    eval_steps = _eval_steps(cfg)
    bar = _progress_bar(progress and d.is_main, cfg.max_iters, step)
    try:
        if step == 0 and not state:
            last_eval = evaluate_now()
            # metrics line first, checkpoint second: a kill in between resumes from the previous
            # checkpoint and rewrites the line, while the other order would lose this step's line
            metrics.write(_eval_record(0, 0, last_eval, lr_at(0, cfg)))
            checkpoint(last_eval)
        model.train()
        interval_tokens, interval_time = 0, 0.0
        stopped_early = False
        while step < cfg.max_iters:
            t0 = time.perf_counter()
            lr, weight_decay = schedule_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.param_groups[0]["weight_decay"] = weight_decay  # group 0: the decayed matrices
            next_step = step + 1
            # checked on log steps only: those synchronise the device anyway
            out_of_time = (
                time_limit_s is not None and next_step % cfg.log_interval == 0
                and _any_rank(time_up(next_step) if time_up else time.perf_counter() - started > time_limit_s, d)
            )
            is_eval = next_step % cfg.eval_interval == 0 or next_step in eval_steps or out_of_time
            is_log = is_eval or next_step % cfg.log_interval == 0
            loss_sum = torch.zeros((), device=device)
            objective_sum = torch.zeros((), device=device)
            for micro in range(cfg.grad_accum):
                x, y = sampler.next_batch()
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with _no_sync(model, d, sync=micro == cfg.grad_accum - 1):
                    loss, objective = yield MicroBatch(x, y, cfg.grad_accum, objective_of, autocast, forward_backward)
                loss_sum += loss
                objective_sum += objective
            if scaler is not None:
                scaler.unscale_(optimizer)
            component_norms = raw_model.component_grad_norms() if is_log else None
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), max_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step = next_step
            tokens_seen += tokens_per_step
            interval_tokens += tokens_per_step
            if is_log:
                train_loss = _mean_over_ranks(loss_sum / cfg.grad_accum, d)
                train_objective = _mean_over_ranks(objective_sum / cfg.grad_accum, d)
                interval_time += time.perf_counter() - t0  # .item() above synchronised the device
                record: dict[str, Any] = {
                    "step": step, "tokens_seen": tokens_seen, "train_loss": train_loss,
                    "train_objective": train_objective, "lr": lr, "grad_norm": float(grad_norm),
                    "tokens_per_s": interval_tokens / interval_time if interval_time > 0 else None,
                    "component_grad_norms": component_norms.tolist() if component_norms is not None else None,
                }
                interval_tokens, interval_time = 0, 0.0
                if is_eval:
                    last_eval = evaluate_now()
                    record.update(_eval_fields(last_eval))
                metrics.write(record)  # before the checkpoint (see step 0 above)
                if is_eval:
                    checkpoint(last_eval)
                bar.set_postfix(_postfix(train_loss, last_eval), refresh=False)
            else:
                interval_time += time.perf_counter() - t0
            bar.update(1)
            if step < cfg.max_iters and (out_of_time or (stop_at_step is not None and step >= stop_at_step)):
                stopped_early = True
                break
    finally:
        bar.close()
        metrics.close()
    return TrainResult(
        run_dir=run_dir, steps=step, tokens_seen=tokens_seen,
        val_loss=last_eval.val_loss if last_eval else None, val_bpc=last_eval.val_bpc if last_eval else None,
        best_val_loss=best_val_loss, best_val_bpc=best_val_bpc, metrics_path=run_dir / METRICS_FILE,
        checkpoints=written, elapsed_s=time.perf_counter() - started, stopped_early=stopped_early, info=info,
    )


def _barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def _any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank when it is true on any (ranks must agree on when to stop)."""
    if not d.enabled:
        return flag
    import torch.distributed as dist

    tensor = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def _no_sync(model: torch.nn.Module, d: Dist, sync: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's gradient all-reduce on all but the last micro-batch of an accumulated step."""
    if d.enabled and not sync:
        return model.no_sync()  # type: ignore[operator]
    return contextlib.nullcontext()


def _mean_over_ranks(value: torch.Tensor, d: Dist) -> float:
    if not d.enabled:
        return float(value.item())
    import torch.distributed as dist

    tensor = value.detach().clone().double()
    dist.all_reduce(tensor)
    return float(tensor.item()) / d.world_size


def _eval_fields(result: EvalResult) -> dict[str, Any]:
    return {
        "val_loss": result.val_loss, "val_bpc": result.val_bpc, "article_loss": result.article_loss,
        "other_loss": result.other_loss, "article_other_ratio": result.article_other_ratio,
        "val_tokens": result.n_tokens, "val_loss_se": result.val_loss_se,
    }


def _eval_record(step: int, tokens_seen: int, result: EvalResult, lr: float) -> dict[str, Any]:
    return {"step": step, "tokens_seen": tokens_seen, "lr": lr, **_eval_fields(result)}


def _postfix(train_loss: float, last_eval: EvalResult | None) -> dict[str, str]:
    out = {"loss": f"{train_loss:.3f}"}
    if last_eval is not None:
        out.update(val=f"{last_eval.val_loss:.3f}", bpc=f"{last_eval.val_bpc:.3f}")
    return out


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, *args: Any, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


def _progress_bar(enabled: bool, total: int, initial: int) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", desc="train", dynamic_ncols=True)

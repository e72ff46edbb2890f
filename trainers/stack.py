"""N models of one config trained in one process as one batched model (torch.func.vmap).

A small model's eager training step is launch-bound: the host spends most of it issuing a thousand short
kernels. N such models trained side by side as N processes still issue N times as many kernels
(trainers.multirun). Stacked here, the N models run through the same kernels with a leading model dimension:
every GEMM, norm and attention call does N models' work in one launch.

How: `torch.func.stack_module_state` copies the models' parameters into stacked leaf tensors (model index
first); each model's own parameters are then re-bound as views of its slice, so the N models stay ordinary
modules that share storage with the stack. `losses(x, y)` evaluates the stack under
`vmap(functional_call(...))` (dropout draws differ between models: randomness="different"), and
`scatter_grads()` hands every model its slice of the stacked gradients (views, no copy). From there each
model is trained as alone: its own gradient clipping and its own optimizer, which update its parameters in
place, hence the stack. Evaluation, checkpoints and resume use the models themselves.

    stack = ModelStack(models)                 # before building the optimizers: parameters are re-bound
    optimizers = [configure_optimizer(m, ...) for m in stack.models]
    losses = stack.losses(x, y)                # x, y: (N, B, T); losses (N,) mean cross-entropy per model
    losses.sum().backward()                    # model i's loss reaches only model i's slice
    stack.scatter_grads()
    for m, opt in zip(stack.models, optimizers): clip and step as trainers.train does

A stacked model computes the same function as alone (tests: losses and gradients equal to each model's own
up to float rounding), but its dropout masks come from the shared generator, so a run trained in a stack does
not reproduce the curve of the same seed trained alone (with dropout 0 it does, up to float rounding).

How much this gains, measured against N processes: results/benchmarks/issue17/README.md, section 7.

Training: `train_stack(run_configs)` trains N runs that differ only in train.seed and train.out_dir as one
stack (one config and one data source, hence one tokenizer: the first run's loss serves all). Each run is
`trainers.train.run_steps`, the same generator `train` drives: its own data order, schedule,
clipping, optimizer, metrics, evaluation and checkpoints in its own run directory, resumable (`resume=True`, as
the same stack: the runs share the process's RNG, which every checkpoint of the stack records alike). Only the
forward and backward passes are answered here, for all runs at once.

    results = train_stack([load_config("spinnet-3m", [f"train.seed={s}", f"train.out_dir=runs/s{s}"])
                           for s in (1, 2, 3, 4)])

One process, one device, bf16 or float32 (float16's loss scaler is per run: refused). With train.compile the
vmapped forward and objective compile as one graph (modes without CUDA graphs, STACK_COMPILE_MODES), with cuDNN
attention left out (inductor failed on it under vmap); evaluation runs each run's own compiled model.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from corpora.errors import UserError
from trainers.config import RunConfig
from trainers.train import (
    BuiltModel,
    Dist,
    MicroBatch,
    RunInfo,
    TrainResult,
    config_differences,
    run_steps,
    token_losses,
)

Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# the settings in which the runs of one stack may differ (everything else is one setting for all)
STACK_MAY_DIFFER = {"seed", "out_dir"}
# with train.compile the vmapped forward and objective compile as one graph (ModelStack.compile_mode)
STACK_COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")


def _rebind(model: nn.Module, name: str, value: torch.Tensor) -> None:
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    setattr(owner, leaf, nn.Parameter(value, requires_grad=True))


def _mean_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    loss = token_losses(logits, y).mean()
    return loss, loss


class ModelStack:
    """N models of one architecture whose parameters live in stacked tensors (see the module docstring)."""

    def __init__(self, models: list[nn.Module], compile_mode: str | None = None) -> None:
        if len(models) < 1:
            raise UserError("a model stack needs at least one model")
        shapes = [[(n, tuple(p.shape)) for n, p in m.named_parameters()] for m in models]
        if any(s != shapes[0] for s in shapes[1:]):
            raise UserError("a model stack needs models of one architecture (same parameter names and shapes)")
        self.models = models
        params, buffers = stack_module_state(models)
        self.params: dict[str, torch.Tensor] = params
        # buffers (rotary tables) are equal across models of one config: the first model's, not stacked
        self.buffers = dict(models[0].named_buffers())
        del buffers
        for name, stacked in self.params.items():
            for i, model in enumerate(models):
                _rebind(model, name, stacked.data[i])
        # the skeleton that functional_call runs: parameters on the meta device (never read), the
        # model's switches and buffers as the first model has them
        self.skeleton = copy.deepcopy(models[0]).to("meta")
        # compile_mode: a torch.compile mode for the vmapped forward + objective (None: eager)
        self.compile_mode = compile_mode
        self._batched: dict[tuple[Any, Any], Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {}

    def __len__(self) -> int:
        return len(self.models)

    def apply(self, objective: Objective, x: torch.Tensor, y: torch.Tensor,
              autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """`objective(logits, y) -> (a, b)` of each model on its own batch, the forward pass inside `autocast()`:
        x, y (N, B, T) -> a, b of shape (N,)."""
        if x.shape[0] != len(self) or y.shape[0] != len(self):
            raise UserError(f"a stack of {len(self)} models needs batches with a leading dimension of {len(self)}")

        key = (objective, autocast)
        if key not in self._batched:  # built once per objective: a compiled stack compiles once
            self._batched[key] = self._batch(objective, autocast)
        return self._batched[key](self.params, x, y)

    def _batch(self, objective: Objective, autocast: Callable[[], contextlib.AbstractContextManager],
               ) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        compiled = self.compile_mode is not None
        # compiled on CUDA, inductor called cuDNN attention under vmap with a missing tensor argument and failed
        # (torch 2.11, results/benchmarks/issue17/run6-h100-stack): the compiled stack leaves cuDNN out
        backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        attention = (lambda: sdpa_kernel(backends)) if compiled else contextlib.nullcontext

        def one(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with autocast(), attention():
                logits = functional_call(self.skeleton, (params, self.buffers), (x,)).logits
            return objective(logits, y)

        batched = vmap(one, randomness="different")
        if not compiled:
            return batched
        return torch.compile(batched, mode=None if self.compile_mode == "default" else self.compile_mode)

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of each model on its own batch: x, y (N, B, T) -> (N,)."""
        return self.apply(_mean_cross_entropy, x, y)[0]

    def scatter_grads(self) -> None:
        """Hand every model its slice of the stacked gradients: a view where the model has no gradient yet,
        added to it where it has one (gradient accumulation over micro-batches); the stack then lets go of
        its stacked gradients."""
        for name, stacked in self.params.items():
            grad = stacked.grad
            if grad is None:
                continue
            for i, model in enumerate(self.models):
                param = model.get_parameter(name)
                if param.grad is None:
                    param.grad = grad[i]
                else:
                    param.grad.add_(grad[i])
            stacked.grad = None


def check_stackable(run_configs: list[RunConfig]) -> None:
    """Refuse runs that cannot train as one stack (UserError, saying which setting)."""
    if not run_configs:
        raise UserError("a stack needs at least one run")
    for config in run_configs[1:]:
        diffs = config_differences(run_configs[0], config, STACK_MAY_DIFFER)
        if diffs:
            raise UserError(f"the runs of a stack may differ only in train.seed and train.out_dir; these differ: "
                            f"{'; '.join(diffs)}")
    dirs = [str(c.train.out_dir) for c in run_configs]
    if len(set(dirs)) != len(dirs):
        raise UserError("two runs of the stack share a train.out_dir")
    train = run_configs[0].train
    if train.compile and train.compile_mode not in STACK_COMPILE_MODES:
        raise UserError(f"a stack compiles with train.compile_mode in {', '.join(STACK_COMPILE_MODES)}, not "
                        f"{train.compile_mode} (CUDA graphs over the vmapped stack were never measured)")
    if train.dtype == "float16":
        raise UserError("a stack cannot train in float16 (each run's loss scaler would skip its own steps): "
                        "use bfloat16 or float32")


def train_stack(
    run_configs: list[RunConfig],
    resume: bool = False,
    progress: bool = True,
    *,
    on_start: Callable[[RunInfo], None] | None = None,
    stop_at_step: int | None = None,
    time_limit_s: float | None = None,
) -> list[TrainResult]:
    """Train the runs as one stack in this process (module docstring); one TrainResult per run, in order.
    resume, stop_at_step and time_limit_s as `trainers.train.train` takes them, for every run alike;
    progress: the first run's bar (it shows the stack's steps)."""
    check_stackable(run_configs)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("a stack runs in one process: launch it without torchrun")
    started = time.perf_counter()
    verdicts: dict[int, bool] = {}

    def time_up(step: int) -> bool:  # one answer per step for every run: the stack stops together
        if step not in verdicts:
            verdicts[step] = time_limit_s is not None and time.perf_counter() - started > time_limit_s
        return verdicts[step]

    runs = [run_steps(config, resume, progress and i == 0, on_start, stop_at_step, time_limit_s, Dist(), started,
                      time_up) for i, config in enumerate(run_configs)]
    built = [next(run) for run in runs]
    if not all(isinstance(b, BuiltModel) for b in built):
        raise RuntimeError("trainers.train.run_steps must ask for its built model first")
    train = run_configs[0].train
    stack = ModelStack([b.model for b in built], compile_mode=train.compile_mode if train.compile else None)
    return _drive(runs, [run.send(None) for run in runs], stack)


def _drive(runs: list[Any], requests: list[Any], stack: ModelStack) -> list[TrainResult]:
    results: list[TrainResult | None] = [None] * len(runs)
    while True:
        if not all(isinstance(r, MicroBatch) for r in requests):
            raise RuntimeError("the runs of a stack fell out of step")
        first: MicroBatch = requests[0]
        losses, objectives = stack.apply(first.objective, torch.stack([r.x for r in requests]),
                                         torch.stack([r.y for r in requests]), first.autocast)
        (objectives.sum() / first.grad_accum).backward()  # each run's gradient reaches only its own slice
        stack.scatter_grads()
        requests = []
        for i, run in enumerate(runs):
            try:
                requests.append(run.send((losses[i].detach(), objectives[i].detach())))
            except StopIteration as done:
                results[i] = done.value
        finished = [r is not None for r in results]
        if all(finished):
            return results  # type: ignore[return-value]
        if any(finished):
            raise RuntimeError("the runs of a stack fell out of step: some finished before the others")

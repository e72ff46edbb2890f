"""trainers.stack: N models trained as one vmapped stack compute what each model computes alone."""

import pytest
import torch
import torch.nn.functional as F

from corpora.errors import UserError
from trainers.config import load_config
from trainers.model import build_model
from trainers.stack import ModelStack
from trainers.train import configure_optimizer


def _models(preset: str, n: int, **over: str) -> list[torch.nn.Module]:
    sets = ["model.vocab_size=97", "model.dropout=0.0", *(f"{k}={v}" for k, v in over.items())]
    cfg = load_config(preset, sets)
    models = []
    for seed in range(n):
        torch.manual_seed(seed)
        models.append(build_model(cfg.model))
    return models


def _alone(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x).logits
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))


@pytest.mark.parametrize("preset,batched", [("spinnet-tiny", False), ("spinnet-tiny", True), ("baseline-tiny", None)])
def test_stacked_losses_and_gradients_equal_each_model_alone(preset, batched):
    models = _models(preset, 3)
    for m in models:
        m.batch_quantize = batched
    twins = [build_model(m.config) for m in models]
    for twin, m in zip(twins, models, strict=True):
        twin.load_state_dict(m.state_dict())
        twin.batch_quantize = batched
    stack = ModelStack(models)
    gen = torch.Generator().manual_seed(1)
    x, y = (torch.randint(0, 97, (3, 2, 16), generator=gen) for _ in range(2))
    losses = stack.losses(x, y)
    losses.sum().backward()
    stack.scatter_grads()
    assert all(p.grad is None for p in stack.params.values())
    for i, (twin, m) in enumerate(zip(twins, models, strict=True)):
        alone = _alone(twin, x[i], y[i])
        alone.backward()
        torch.testing.assert_close(losses[i], alone, rtol=1e-5, atol=1e-6)
        for (name, p), (_, q) in zip(m.named_parameters(), twin.named_parameters(), strict=True):
            assert p.grad is not None, name
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    # different seeds are different models: the stack did not collapse them
    assert not torch.equal(losses[0], losses[1])


def test_each_models_optimizer_updates_the_stack_in_place():
    models = _models("spinnet-tiny", 2)
    stack = ModelStack(models)
    cfg = load_config("spinnet-tiny", ["model.vocab_size=97"]).train
    optimizers = [configure_optimizer(m, cfg, "cpu") for m in stack.models]
    before = {k: v.detach().clone() for k, v in stack.params.items()}
    x = torch.randint(0, 97, (2, 2, 16))
    stack.losses(x, x).sum().backward()
    stack.scatter_grads()
    optimizers[1].step()  # only model 1 steps
    name = "blocks.0.attn.q.weight" if "blocks.0.attn.q.weight" in stack.params else next(iter(stack.params))
    assert torch.equal(stack.params[name][0], before[name][0])
    assert not torch.equal(stack.params[name][1], before[name][1])
    # the model's own parameter is the stack's slice: its forward sees the update
    assert stack.models[1].get_parameter(name).data_ptr() == stack.params[name][1].data_ptr()


def test_stack_refuses_mixed_architectures_and_wrong_batches():
    a = _models("spinnet-tiny", 1)
    b = _models("baseline-tiny", 1)
    with pytest.raises(UserError, match="one architecture"):
        ModelStack(a + b)
    stack = ModelStack(_models("baseline-tiny", 2))
    with pytest.raises(UserError, match="leading dimension of 2"):
        stack.losses(torch.zeros(3, 2, 8, dtype=torch.long), torch.zeros(3, 2, 8, dtype=torch.long))


# ---- train_stack: N real runs in one process

TINY = ["train.max_iters=6", "train.eval_interval=2", "train.log_interval=1", "train.eval_iters=1",
        "train.batch_size=2", "train.block_size=16", "train.val_fraction=0.2", "train.device=cpu",
        "model.n_layer=1", "model.d_model=32", "train.warmup_iters=1"]


def _configs(sample, root, seeds=(1, 2), preset="spinnet-tiny", extra=()):
    return [load_config(preset, [f"train.data={sample}", *TINY, *extra, f"train.seed={s}",
                                 f"train.out_dir={root / f's{s}'}"]) for s in seeds]


def _weights(run_dir):
    from trainers.checkpoint import read_model_tensors

    return read_model_tensors(run_dir / "latest")


def test_a_stack_writes_each_runs_own_files_and_resumes_the_same_curve(sample, tmp_path):
    from trainers.metrics import read_metrics
    from trainers.stack import train_stack

    straight = train_stack(_configs(sample, tmp_path / "a"), progress=False)
    assert [r.steps for r in straight] == [6, 6]
    for r in straight:
        assert (r.run_dir / "latest" / "model.safetensors").is_file() and (r.run_dir / "config.yaml").is_file()
        assert [m["step"] for m in read_metrics(r.run_dir)] == list(range(7))
    curves = [[m["train_loss"] for m in read_metrics(r.run_dir)] for r in straight]
    assert curves[0] != curves[1]  # two seeds, two runs

    # killed after step 3 (no checkpoint there), resumed from latest/ (step 2) as the same stack
    cut = train_stack(_configs(sample, tmp_path / "b"), progress=False, stop_at_step=3)
    assert [r.steps for r in cut] == [3, 3]
    with pytest.raises(UserError, match="already holds a checkpoint"):
        train_stack(_configs(sample, tmp_path / "b"), progress=False)
    resumed = train_stack(_configs(sample, tmp_path / "b"), resume=True, progress=False)
    assert [r.info.start_step for r in resumed] == [2, 2] and [r.steps for r in resumed] == [6, 6]
    for a, b in zip(straight, resumed, strict=True):
        assert [m["train_loss"] for m in read_metrics(a.run_dir)] == [m["train_loss"] for m in read_metrics(b.run_dir)]
        wa, wb = _weights(a.run_dir), _weights(b.run_dir)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_without_dropout_a_stacked_run_follows_the_same_seed_trained_alone(sample, tmp_path):
    from trainers.metrics import read_metrics
    from trainers.stack import train_stack
    from trainers.train import train

    extra = ["model.dropout=0.0", "train.grad_accum=2"]
    stacked = train_stack(_configs(sample, tmp_path / "stack", extra=extra), progress=False)
    alone = train(_configs(sample, tmp_path / "alone", seeds=(2,), extra=extra)[0], progress=False)
    got = [m["train_loss"] for m in read_metrics(stacked[1].run_dir)]
    want = [m["train_loss"] for m in read_metrics(alone.run_dir)]
    assert got[1:] == pytest.approx(want[1:], rel=1e-4)  # step 0 logs no train loss
    assert [m["val_loss"] for m in read_metrics(stacked[1].run_dir) if m["val_loss"]] == pytest.approx(
        [m["val_loss"] for m in read_metrics(alone.run_dir) if m["val_loss"]], rel=1e-4)


def test_train_stack_refuses_what_it_cannot_do(sample, tmp_path):
    from trainers.stack import train_stack

    mixed = _configs(sample, tmp_path, seeds=(1,)) + _configs(sample, tmp_path, seeds=(2,), extra=["train.lr=0.1"])
    with pytest.raises(UserError, match="train.lr"):
        train_stack(mixed, progress=False)
    with pytest.raises(UserError, match="CUDA graphs"):
        train_stack(_configs(sample, tmp_path, extra=["train.compile=true", "train.compile_mode=reduce-overhead"]),
                    progress=False)
    with pytest.raises(UserError, match="float16"):
        train_stack(_configs(sample, tmp_path, extra=["train.dtype=float16"]), progress=False)
    same_dir = _configs(sample, tmp_path, seeds=(1,)) * 2
    with pytest.raises(UserError, match="share a train.out_dir"):
        train_stack(same_dir, progress=False)


def test_a_compiled_stack_trains_the_curves_of_the_eager_stack(sample, tmp_path):
    from torch._dynamo.utils import counters

    from trainers.metrics import read_metrics
    from trainers.stack import train_stack

    extra = ["model.dropout=0.0", "train.max_iters=3"]
    eager = train_stack(_configs(sample, tmp_path / "eager", extra=extra), progress=False)
    frames = counters["frames"]["ok"]
    compiled = train_stack(_configs(sample, tmp_path / "compiled", extra=[*extra, "train.compile=true"]),
                           progress=False)
    assert counters["frames"]["ok"] > frames  # dynamo compiled something: not the eager path again
    for a, b in zip(eager, compiled, strict=True):
        want, got = read_metrics(a.run_dir), read_metrics(b.run_dir)
        assert [m["train_loss"] for m in got][1:] == pytest.approx([m["train_loss"] for m in want][1:], rel=1e-4)
        assert b.val_loss == pytest.approx(a.val_loss, rel=1e-4)
    assert read_metrics(compiled[0].run_dir)[1]["train_loss"] != read_metrics(compiled[1].run_dir)[1]["train_loss"]

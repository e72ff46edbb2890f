"""Issue 12 in the training loop: the octonion head mixer on a trained checkpoint, ablation labels,
a fixed validation set (independent of batch size and training seed, with its standard error),
BitNet's two-stage schedule, no weight decay on the mixer or norms, and the bpe:N tokenizer spec."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from corpora.errors import UserError
from corpora.tokenized import open_tokenized
from corpora.tokenizers import load_tokenizer
from trainers.checkpoint import load_checkpoint, read_state
from trainers.config import DEFAULT_SPLIT_SEED, load_config
from trainers.data import fixed_eval_batches, fixed_eval_blocks, prepare_data
from trainers.model import build_model
from trainers.train import (
    METRIC_KEYS,
    configure_optimizer,
    evaluate,
    paired_val_difference,
    read_metrics,
    schedule_at,
    train,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(sample: Path, out: Path, *extra: str):
    return load_config("spinnet-tiny", [
        f"train.data={sample}", f"train.out_dir={out}", "train.val_fraction=0.2", "train.block_size=32",
        "train.batch_size=4", "train.warmup_iters=1", "train.max_iters=3", "train.eval_interval=3",
        "train.log_interval=1", "model.d_model=64", "model.n_layer=1", *extra,
    ])


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    """Two 3-step spinnet-tiny runs on the real sample that differ only in train.seed."""
    sample = shared_data / "tinystories" / "tinystories_sample.txt"
    root = tmp_path_factory.mktemp("fidelity")
    runs = {}
    for seed in (1, 2):
        train(tiny(sample, root / f"seed{seed}", f"train.seed={seed}"), progress=False)
        runs[seed] = root / f"seed{seed}"
    return runs


def test_mixer_is_on_by_default_and_matters_in_a_trained_checkpoint(trained):
    loaded = load_checkpoint(trained[1])
    assert loaded.config.model.octonion_attention is True and loaded.config.model.ablations == []
    mixers = [b.attn.mixer for b in loaded.model.blocks]
    assert all(m is not None for m in mixers)
    idx = torch.tensor([loaded.tokenizer.encode("Once upon a time there was a dog.")[:24]])
    with torch.no_grad():
        with_mixer = loaded.model(idx).logits
        for block in loaded.model.blocks:
            block.attn.mixer = None
        without = loaded.model(idx).logits
    assert (with_mixer - without).abs().max().item() > 1e-4  # the mixer changes the logits
    for block, mixer in zip(loaded.model.blocks, mixers, strict=True):
        block.attn.mixer = mixer
    loaded.model.train()
    loaded.model(idx[:, :-1], targets=idx[:, 1:]).loss.backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in mixers)


def test_metrics_carry_validation_tokens_and_standard_error(trained):
    assert METRIC_KEYS[-2:] == ("val_tokens", "val_loss_se")
    evals = [r for r in read_metrics(trained[1]) if r["val_loss"] is not None]
    assert len(evals) == 2  # step 0 and step 3
    for record in evals:
        assert record["val_tokens"] > 0 and record["val_tokens"] % 32 == 0
        assert 0 < record["val_loss_se"] < record["val_loss"]
    assert {r["val_tokens"] for r in evals} == {evals[0]["val_tokens"]}  # the same blocks every time


def test_validation_split_does_not_depend_on_the_training_seed(trained):
    val = [open_tokenized(trained[s] / "data" / "val.bin")[0] for s in (1, 2)]
    assert np.array_equal(np.asarray(val[0]), np.asarray(val[1]))
    assert load_config("spinnet-tiny", ["train.seed=5"]).train.split_seed == DEFAULT_SPLIT_SEED
    first = [r["val_tokens"] for r in read_metrics(trained[1]) if r["val_loss"] is not None]
    second = [r["val_tokens"] for r in read_metrics(trained[2]) if r["val_loss"] is not None]
    assert first == second


def test_split_seed_changes_the_split(sample, tmp_path):
    a = prepare_data(sample, "char", tmp_path / "a", val_fraction=0.4, seed=1)
    b = prepare_data(sample, "char", tmp_path / "b", val_fraction=0.4, seed=2)
    c = prepare_data(sample, "char", tmp_path / "c", val_fraction=0.4, seed=1)
    assert np.array_equal(np.asarray(a.val), np.asarray(c.val))
    assert a.val_meta.n_chars != b.val_meta.n_chars or not np.array_equal(np.asarray(a.val), np.asarray(b.val))


def test_val_loss_is_the_same_for_any_batch_size(trained):
    loaded = load_checkpoint(trained[1])
    val, meta = open_tokenized(trained[1] / "data" / "val.bin")
    results = []
    for batch_size in (2, 4, 7):
        batches = fixed_eval_batches(val, 32, batch_size, None)
        results.append(evaluate(loaded.model, batches, device=torch.device("cpu"),
                                autocast=lambda: __import__("contextlib").nullcontext(),
                                article_ids=None, val_meta=meta))
    assert len({r.n_tokens for r in results}) == 1 and results[0].n_tokens == 32 * ((len(val) - 1) // 32)
    for r in results[1:]:
        assert r.val_loss == pytest.approx(results[0].val_loss, rel=1e-9)
        assert r.val_loss_se == pytest.approx(results[0].val_loss_se, rel=1e-6)
    # the SE is over blocks: sd of the per-block mean losses / sqrt(blocks)
    with torch.no_grad():
        means = [torch.nn.functional.cross_entropy(loaded.model(x).logits.transpose(1, 2), y, reduction="none")
                 .double().mean(dim=1) for x, y in fixed_eval_batches(val, 32, 4, None)]
    means = torch.cat(means).numpy()
    assert results[0].n_blocks == len(means)
    assert results[0].val_loss_se == pytest.approx(np.std(means, ddof=1) / math.sqrt(len(means)), rel=1e-6)


def test_fixed_eval_blocks_cover_the_split_evenly():
    data = np.arange(1001)
    assert fixed_eval_blocks(data, 10, None) == list(range(0, 1000, 10))
    subset = fixed_eval_blocks(data, 10, 50)
    assert subset == [0, 250, 500, 740, 990]  # evenly spaced over the 100 blocks, first and last included
    assert fixed_eval_blocks(data, 10, 10**9) == fixed_eval_blocks(data, 10, None)
    with pytest.raises(UserError, match="fewer than train.block_size"):
        fixed_eval_blocks(np.arange(5), 10, None)


def test_unlabelled_ablation_is_refused_and_labels_must_be_true(sample, tmp_path):
    with pytest.raises(UserError, match=r"has model.octonion_attention=false but.*model.ablations=\[mixer-off\]"):
        train(tiny(sample, tmp_path / "r", "model.octonion_attention=false"), progress=False)
    assert not (tmp_path / "r" / "latest").exists()
    ok = tiny(sample, tmp_path / "r", "model.octonion_attention=false", "model.ablations=[mixer-off]")
    assert ok.model.unlabelled_ablations() == []
    with pytest.raises(UserError, match="lists 'ternary-off' but"):
        tiny(sample, tmp_path / "r", "model.ablations=[ternary-off]")
    with pytest.raises(UserError, match="unknown ablation"):
        tiny(sample, tmp_path / "r", "model.ablations=[mixer-of]")
    with pytest.raises(UserError, match="n_head divisible by 8"):
        load_config("spinnet-tiny", ["model.n_head=4"])


def test_bitnet_two_stage_schedule():
    cfg = load_config("spinnet-tiny", ["train.schedule=bitnet-two-stage", "train.lr=1.5e-3", "train.min_lr=0",
                                       "train.warmup_iters=10", "train.max_iters=200", "train.weight_decay=0.1"]).train
    lr = [schedule_at(s, cfg)[0] for s in range(201)]
    wd = [schedule_at(s, cfg)[1] for s in range(201)]
    assert lr[10] == pytest.approx(1.5e-3) and lr[99] == pytest.approx(8e-4, rel=0.01)  # stage 1: 1.5e-3 -> 8e-4
    assert lr[100] == pytest.approx(5e-4) and lr[200] == pytest.approx(0.0)  # stage 2: 5e-4 -> 0
    assert wd[10] == pytest.approx(0.1) and wd[99] < 0.001 and all(w == 0.0 for w in wd[100:])
    plain = load_config("spinnet-tiny", ["train.weight_decay=0.1"]).train
    assert {schedule_at(s, plain)[1] for s in range(0, 200, 7)} == {0.1}


def test_no_weight_decay_on_mixer_norms_or_subln():
    cfg = load_config("spinnet-tiny", ["model.vocab_size=40", "model.subln=true"])
    model = build_model(cfg.model)
    optimizer = configure_optimizer(model, cfg.train, "cpu")
    decayed = {id(p) for p in optimizer.param_groups[0]["params"]}
    names = {n: id(p) in decayed for n, p in model.named_parameters()}
    assert optimizer.param_groups[0]["weight_decay"] == cfg.train.weight_decay
    assert optimizer.param_groups[1]["weight_decay"] == 0.0
    assert not any(v for n, v in names.items() if "mixer" in n or "norm" in n)
    assert any("mixer" in n for n in names) and any("in_norm" in n for n in names)
    assert names["wte.weight"] and names["blocks.0.attn.q.weight"]


def test_bpe_spec_trains_on_the_training_split_only(sample, tmp_path):
    data = prepare_data(sample, "bpe:300", tmp_path / "d", val_fraction=0.4, seed=3)
    saved = load_tokenizer(tmp_path / "d" / "tokenizer")
    assert saved.identity == data.tokenizer.identity and data.tokenizer.vocab_size <= 300
    meta = json.loads((tmp_path / "d" / "tokenizer" / "tokenizer_meta.json").read_text())
    assert _find(meta, "n_documents") == data.train_meta.n_documents  # trained on the training split only
    assert data.val_meta.n_documents >= 1
    again = prepare_data(sample, "bpe:300", tmp_path / "d", val_fraction=0.4, seed=3)
    assert again.tokenizer.identity == data.tokenizer.identity  # reused, not retrained
    with pytest.raises(UserError, match="bpe:10000"):
        prepare_data(sample, "bpe:x", tmp_path / "e")


def _find(tree, key):
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for value in tree.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def test_paired_difference_over_the_same_blocks(trained, tmp_path):
    a, b = read_state(trained[1] / "latest"), read_state(trained[2] / "latest")
    assert len(a["val_block_losses"]) == a["val_eval_blocks"] >= 2
    paired = paired_val_difference(a, b)
    assert paired["n_blocks"] == a["val_eval_blocks"]
    assert paired["difference"] == pytest.approx(a["val_loss"] - b["val_loss"], abs=1e-9)
    assert paired["se"] > 0
    same = paired_val_difference(a, a)
    assert same["difference"] == 0.0 and same["se"] == 0.0
    other = dict(b, data=dict(b["data"], val_tokens=b["data"]["val_tokens"] + 1))
    with pytest.raises(UserError, match="different validation blocks"):
        paired_val_difference(a, other)

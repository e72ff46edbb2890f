"""Transformer skeleton for both families: parameter counts, octonion mixer, hidden states, causality."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from corpora.errors import UserError
from trainers.algebra import multiply
from trainers.config import PRESET_DIR, ModelConfig, load_config
from trainers.layers import HypercomplexLinear
from trainers.model import OctonionHeadMixer, build_model, split_components


def tiny(family: str = "spinnet", **changes) -> ModelConfig:
    cfg = load_config(f"{family}-tiny", ["model.vocab_size=50"]).model
    return dataclasses.replace(cfg, **changes)


def build_on_meta(cfg: ModelConfig):
    with torch.device("meta"):
        return build_model(cfg)


def test_spinnet_28m_parameter_counts():
    model = build_on_meta(load_config("spinnet-28m").model)
    total, non_embedding = model.num_parameters(), model.num_parameters(exclude_embeddings=True)
    embedding = total - non_embedding
    assert embedding == 50257 * 512 == 25_731_584  # about 25.7M
    # block linears: 8 layers x (4 d^2 attention + 8 d^2 MLP) / 8 components; norms: 2 per layer + final;
    # the octonion head mixer (on by default): 8 layers x 8 components x head_dim 64
    assert non_embedding == 8 * 12 * 512 * 512 // 8 + 8 * 2 * 512 + 512 + 8 * 8 * 64 == 3_158_528
    assert total == 28_890_112 and abs(total / 28.9e6 - 1) < 0.005  # about 28.9M
    assert f"{total:,}" in (PRESET_DIR / "spinnet-28m.yaml").read_text()


def test_baseline_28m_parameter_counts_match_its_yaml_comment():
    model = build_on_meta(load_config("baseline-28m").model)
    total, non_embedding = model.num_parameters(), model.num_parameters(exclude_embeddings=True)
    assert non_embedding == 8 * 12 * 512 * 512 + 8 * 2 * 512 + 512
    text = (PRESET_DIR / "baseline-28m.yaml").read_text()
    assert f"{total:,}" in text and f"{non_embedding:,}" in text


def test_every_block_linear_is_hypercomplex_for_spinnet_and_dense_for_baseline():
    spin, base = build_model(tiny("spinnet")), build_model(tiny("baseline"))
    spin_linears = [m for m in spin.blocks.modules() if isinstance(m, (nn.Linear, HypercomplexLinear))]
    assert spin_linears and all(isinstance(m, HypercomplexLinear) and m.ternary and m.n == 8 for m in spin_linears)
    assert not any(isinstance(m, HypercomplexLinear) for m in base.modules())
    assert spin.n_components == 8 and base.n_components == 8
    assert build_model(tiny("baseline", component_split=4)).n_components == 4
    # tied head: the embedding matrix is the only vocab-sized parameter
    assert sum(p.shape[0] == 50 for p in spin.parameters()) == 1
    assert spin.num_parameters() - spin.num_parameters(exclude_embeddings=True) == 50 * 64


def test_hidden_states_and_loss():
    torch.manual_seed(0)
    model = build_model(tiny()).eval()
    idx = torch.randint(0, 50, (2, 12))
    out = model(idx, targets=idx, return_hidden=True)
    assert out.logits.shape == (2, 12, 50)
    assert len(out.hidden) == model.config.n_layer + 1 == len(model.blocks) + 1
    assert all(h.shape == (2, 12, 64) for h in out.hidden)
    assert torch.equal(out.hidden[0], model.wte(idx))
    assert torch.equal(model.blocks[0](out.hidden[0], model.rope_cos[:12], model.rope_sin[:12]), out.hidden[1])
    expected = nn.functional.cross_entropy(out.logits.reshape(-1, 50), idx.reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    assert model(idx).hidden is None and model(idx).loss is None
    targets = idx.clone()
    targets[:, :6] = -1  # ignored positions
    masked = nn.functional.cross_entropy(out.logits[:, 6:].reshape(-1, 50), idx[:, 6:].reshape(-1))
    torch.testing.assert_close(model(idx, targets=targets).loss, masked)


def test_split_components_is_contiguous():
    h = torch.arange(2 * 3 * 16, dtype=torch.float32).view(2, 3, 16)
    parts = split_components(h, 8)
    assert parts.shape == (2, 3, 8, 2)
    assert torch.equal(parts[1, 2, 5], h[1, 2, 10:12])
    with pytest.raises(ValueError):
        split_components(h, 5)


@pytest.mark.parametrize("family", ["spinnet", "baseline"])
def test_causal_masking(family):
    torch.manual_seed(1)
    model = build_model(tiny(family, octonion_attention=True)).eval()
    idx = torch.randint(0, 50, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 50
    a, b = model(idx).logits, model(changed).logits
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=1e-6)
    assert (a[:, 10:] - b[:, 10:]).abs().amax(dim=-1).min() > 1e-4


def test_octonion_attention_reaches_the_model():
    cfg = load_config("spinnet-tiny", ["model.vocab_size=50", "model.octonion_attention=true"]).model
    torch.manual_seed(2)
    with_mixer = build_model(cfg).eval()
    mixers = [m for m in with_mixer.modules() if isinstance(m, OctonionHeadMixer)]
    assert len(mixers) == cfg.n_layer
    without = build_model(dataclasses.replace(cfg, octonion_attention=False)).eval()
    assert not any(isinstance(m, OctonionHeadMixer) for m in without.modules())
    # same weights everywhere else: the only difference is the mixer
    missing = with_mixer.load_state_dict(without.state_dict(), strict=False).missing_keys
    assert missing and all(key.endswith("attn.mixer.weight") for key in missing)
    idx = torch.randint(0, 50, (2, 10))
    assert not torch.allclose(with_mixer(idx).logits, without(idx).logits, atol=1e-4)
    with torch.no_grad():  # an exact identity octonion makes the mixer a no-op
        for mixer in mixers:
            mixer.weight.zero_()
            mixer.weight[:, 0] = 1.0
    torch.testing.assert_close(with_mixer(idx).logits, without(idx).logits, rtol=0, atol=1e-6)
    with pytest.raises(UserError, match="did you mean 'octonion_attention'"):
        load_config("spinnet-tiny", ["model.octonion_atention=true"])


def test_octonion_mixer_is_the_octonion_product():
    torch.manual_seed(3)
    mixer = OctonionHeadMixer(n_head=16, head_dim=4, init_std=0.5).double()
    y = torch.randn(2, 16, 3, 4, dtype=torch.float64)
    out = mixer(y)
    # group g, channel c: heads 8g..8g+7 form an octonion o; the mixer returns w[g, :, c] (x) o
    o = y.view(2, 2, 8, 3, 4).permute(0, 1, 3, 4, 2)  # (B, G, T, C, 8)
    w = mixer.weight.detach().permute(0, 2, 1)[None, :, None]  # (1, G, 1, C, 8)
    expected = multiply(w, o).permute(0, 1, 4, 2, 3).reshape(2, 16, 3, 4)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_swiglu_and_float_and_activation_variants_run_and_train():
    for changes in ({"mlp": "swiglu"}, {"ternary": False}, {"act_bits": 8}, {"algebra_n": 4}):
        torch.manual_seed(4)
        model = build_model(tiny(**changes))
        idx = torch.randint(0, 50, (2, 8))
        out = model(idx, targets=idx)
        out.loss.backward()
        norms = model.component_grad_norms()
        assert norms.shape == (model.n_components,) and (norms > 0).all()
    assert build_model(tiny("baseline")).component_grad_norms() is None


def test_flops_estimate_counts_the_dense_gemms():
    spin = build_on_meta(load_config("spinnet-28m").model)
    base = build_on_meta(load_config("baseline-28m").model)
    expected = 6 * (50257 * 512 + 8 * 12 * 512 * 512) + 12 * 8 * 512 * 256
    assert base.estimate_flops_per_token(256) == expected
    # SpinNet adds its octonion head mixer: 64 multiply-adds per channel of each 8-head group per layer
    assert spin.estimate_flops_per_token(256) == expected + 6 * 8 * 1 * 64 * 64


def test_vocab_size_must_be_set():
    with pytest.raises(UserError, match="vocab_size"):
        build_model(load_config("spinnet-tiny").model)


@pytest.mark.slow
def test_torch_compile_traces_the_spinnet_graph():
    torch.manual_seed(5)
    model = build_model(tiny(octonion_attention=True, n_layer=1))
    idx = torch.randint(0, 50, (2, 8))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(idx, targets=idx, return_hidden=True)
    torch.testing.assert_close(out.logits, model(idx).logits)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())



@pytest.mark.parametrize("n_head", [8, 16])
def test_mixer_folded_into_proj_matches_the_einsum_mixer(n_head):
    cfg = tiny("spinnet", n_head=n_head, d_model=64, octonion_attention=True, init_std=0.3)
    model = build_model(cfg)
    attn = model.blocks[0].attn
    y = torch.randn(2, n_head, 5, cfg.d_model // n_head)
    flat = lambda z: z.transpose(1, 2).reshape(2, 5, cfg.d_model)  # noqa: E731
    torch.testing.assert_close(F.linear(flat(y), attn.mixer.dense_matrix()), flat(attn.mixer(y)), rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    idx, targets = torch.randint(0, 50, (2, 12)), torch.randint(0, 50, (2, 12))
    folded = model(idx, targets)
    folded.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    for block in model.blocks:
        block.attn.fold_mixer = False
    plain = model(idx, targets)
    plain.loss.backward()
    torch.testing.assert_close(folded.logits, plain.logits, rtol=1e-4, atol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-3, atol=1e-6, msg=name)
    assert grads["blocks.0.attn.mixer.weight"].abs().sum() > 0  # the mixer still learns through the fold


def test_mixer_is_not_folded_where_proj_quantises_its_input():
    model = build_model(tiny("spinnet", octonion_attention=True, act_bits=8))
    assert model.blocks[0].attn.proj_weight_with_mixer() is None


def test_a_hook_on_proj_sees_its_input_and_the_same_logits():
    model = build_model(tiny("spinnet", octonion_attention=True, dropout=0.0)).train()  # training folds
    idx = torch.randint(0, 50, (1, 9))
    folded = model(idx).logits
    seen = []
    handle = model.blocks[0].attn.proj.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))
    try:
        hooked = model(idx).logits
    finally:
        handle.remove()
    assert len(seen) == 1 and seen[0].shape[-1] == model.config.d_model  # proj ran as a module: its input seen
    torch.testing.assert_close(hooked, folded, rtol=1e-4, atol=1e-5)



def test_only_training_folds_the_mixer_and_evaluation_gives_the_same_logits(monkeypatch):
    model = build_model(tiny("spinnet", octonion_attention=True, dropout=0.0))
    idx = torch.randint(0, 50, (2, 9))
    folds = []
    fold = type(model.blocks[0].attn).proj_weight_with_mixer
    monkeypatch.setattr(type(model.blocks[0].attn), "proj_weight_with_mixer",
                        lambda self, proj_dense=None: folds.append(self.training) or fold(self, proj_dense))
    trained = model.train()(idx).logits
    assert folds == [True] * len(model.blocks)
    evaluated = model.eval()(idx).logits
    assert folds == [True] * len(model.blocks)  # evaluation did not fold
    torch.testing.assert_close(evaluated, trained, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["spinnet", "baseline"])
def test_residual_dtype_autocast_keeps_the_stream_in_bf16_only_under_autocast(family):
    """model.residual_dtype=autocast: under bf16 autocast every hidden state (the residual stream) is bf16
    and the loss and gradients stay within bf16 rounding of the float32 stream; without autocast nothing
    changes, bit for bit."""
    idx, targets = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1)).unbind(0)
    idx, targets = idx[None], targets[None]
    runs = {}
    for residual in ("float32", "autocast"):
        torch.manual_seed(0)
        model = build_model(tiny(family, residual_dtype=residual))
        plain = model(idx, targets, return_hidden=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(idx, targets, return_hidden=True)
        mixed.loss.backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        runs[residual] = (plain, mixed, grad)
    (plain32, mixed32, grad32), (plain16, mixed16, grad16) = runs["float32"], runs["autocast"]
    assert torch.equal(plain32.logits, plain16.logits) and plain16.hidden[-1].dtype == torch.float32
    assert {h.dtype for h in mixed32.hidden} == {torch.float32}
    assert {h.dtype for h in mixed16.hidden} == {torch.bfloat16}
    assert abs(mixed16.loss.item() - mixed32.loss.item()) < 0.02
    assert not torch.equal(grad16, grad32)  # the setting took effect ...
    assert (grad16 - grad32).norm() < 0.05 * grad32.norm()  # ... within bf16 rounding
    with pytest.raises(UserError, match="residual_dtype"):
        load_config(f"{family}-tiny", ["model.residual_dtype=bfloat16"])


def test_training_refuses_a_bf16_residual_stream_without_autocast(tmp_path):
    from trainers.train import train

    cfg = load_config("baseline-tiny", ["model.residual_dtype=autocast", "train.device=cpu", "train.dtype=float32",
                                        f"train.out_dir={tmp_path}", "train.data=unused.txt"])
    with pytest.raises(UserError, match="residual_dtype=autocast"):
        train(cfg)


@pytest.mark.parametrize("changes", [
    {}, {"ternary": False, "ablations": ["ternary-off"]}, {"mlp": "swiglu"}, {"subln": True, "act_bits": 8},
    {"algebra_n": 4}, {"algebra_table": "shuffled", "ablations": ["shuffled-table"]},
])
def test_batched_quantisation_gives_each_layers_weights_logits_and_gradients(changes):
    """Training quantises and assembles all block linears of one shape at once (batched_block_weights); the
    per-layer path (batch_quantize=False) is the reference: the same trits, logits and gradients (gamma's sum
    may run in another order, so equal to float rounding)."""
    torch.manual_seed(0)
    batched = build_model(tiny("spinnet", **changes)).train()
    single = build_model(tiny("spinnet", **changes)).train()
    single.load_state_dict(batched.state_dict())
    assert batched.batched_block_weights() is None  # the default batches on CUDA only
    batched.batch_quantize, single.batch_quantize = True, False
    assert single.batched_block_weights() is None
    dense = batched.batched_block_weights()
    for i, block in enumerate(batched.blocks):
        names = [name for name, m in block.named_modules() if isinstance(m, HypercomplexLinear)]
        assert sorted(dense[i]) == sorted(names) and len(names) == (7 if changes.get("mlp") == "swiglu" else 6)
        for name in names:
            own = block.get_submodule(name).dense_weight()
            assert torch.equal(dense[i][name].sign(), own.sign())
            torch.testing.assert_close(dense[i][name], own, rtol=1e-6, atol=0)
    idx, targets = torch.randint(0, 50, (2, 2, 9), generator=torch.Generator().manual_seed(3)).unbind(0)
    out_b, out_s = batched(idx, targets), single(idx, targets)
    out_b.loss.backward()
    out_s.loss.backward()
    torch.testing.assert_close(out_b.logits, out_s.logits, rtol=1e-5, atol=1e-6)
    for (name, p_b), p_s in zip(batched.named_parameters(), single.parameters(), strict=True):
        # atol 1e-6 against gradients up to ~0.7: a rounding-level difference on a near-zero entry (seen 3e-7 on an AMD
        # EPYC) is not a different gradient
        torch.testing.assert_close(p_b.grad, p_s.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert batched.eval().batched_block_weights() is None  # evaluation: each layer computes its own

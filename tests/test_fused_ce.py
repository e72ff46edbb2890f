"""trainers.fused.chunked_head_losses is F.cross_entropy over the tied head, in values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainers.config import load_config
from trainers.fused import chunked_head_losses
from trainers.model import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight).float()
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction="none", ignore_index=-1)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])  # 1000 > tokens: a single chunk
def test_values_and_gradients_match_cross_entropy(chunk):
    gen = torch.Generator().manual_seed(chunk)
    hidden = torch.randn(3, 21, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (3, 21), generator=gen)
    targets[0, :4] = -1  # ignored positions: loss 0, no gradient
    upstream = torch.rand(3 * 21, generator=gen, dtype=torch.float64)  # not all ones: per-token weights

    ours = chunked_head_losses(hidden, weight, targets, chunk_tokens=chunk)
    (ours * upstream).sum().backward()
    g_hidden, g_weight = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    ref = reference(hidden, weight, targets)
    (ref * upstream).sum().backward()

    assert ours.dtype == torch.float32 and ours.shape == (63,)
    assert torch.allclose(ours.double(), ref.double(), rtol=1e-6, atol=1e-6)
    assert torch.equal(ours[:4], torch.zeros(4))
    # the fp32 softmax bounds the agreement of the gradients
    assert torch.allclose(g_hidden, hidden.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(g_weight, weight.grad, rtol=1e-5, atol=1e-6)
    assert g_hidden.abs().sum() > 0 and torch.equal(g_hidden[0, :4], torch.zeros(4, 16, dtype=torch.float64))


def test_bf16_autocast_matches_the_plain_head_within_bf16_rounding():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(64, 32, generator=gen)
    weight = torch.randn(100, 32, generator=gen) * 0.2
    targets = torch.randint(0, 100, (64,), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = chunked_head_losses(hidden, weight, targets, chunk_tokens=16)
        ref = F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="none")
    exact = reference(hidden, weight, targets)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5)  # the same bf16 logits, then fp32
    assert not torch.allclose(ours, exact, rtol=1e-6, atol=1e-6)  # ... which really were bf16
    assert (ours - exact).abs().max() < 0.1


def test_chunk_tokens_must_be_positive():
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunked_head_losses(torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(2, dtype=torch.long), chunk_tokens=0)


@pytest.mark.parametrize("preset", ["baseline-tiny", "spinnet-tiny"])
def test_model_final_hidden_is_what_the_head_multiplies(preset):
    torch.manual_seed(0)
    model = build_model(load_config(preset, ["model.vocab_size=40"]).model).eval()
    idx = torch.randint(0, 40, (2, 12))
    targets = torch.randint(0, 40, (2, 12))
    out = model(idx, targets=targets)
    assert torch.allclose(F.linear(model.final_hidden(idx), model.embedding_weight()), out.logits, atol=1e-6)
    losses = chunked_head_losses(model.final_hidden(idx), model.embedding_weight(), targets, chunk_tokens=5)
    assert losses.mean().item() == pytest.approx(out.loss.item(), rel=1e-5)

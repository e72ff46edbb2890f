"""HypercomplexLinear: the block matrix computes the algebra's product; ternary quantization and STE."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainers.algebra import cayley_dickson_table, multiply
from trainers.layers import HypercomplexLinear, quantize_activations, ternarize


def explicit_product(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y = W (x) x with algebra.multiply: W (n, o, p), x (B, n*p) -> (B, n*o).

    Per output unit a: y[a] = sum_b Wvec[a, b] * xvec[b], Wvec[a, b] = (W_0[a, b], ..., W_{n-1}[a, b])
    and xvec[b] = (x_0[b], ..., x_{n-1}[b]) are hypercomplex numbers, multiplied in the algebra.
    """
    n, o, p = weight.shape
    w_vec = weight.permute(1, 2, 0)  # (o, p, n)
    x_vec = x.view(x.shape[0], n, p).permute(0, 2, 1)  # (B, p, n)
    y_vec = multiply(w_vec[None], x_vec[:, None]).sum(dim=2)  # (B, o, n)
    return y_vec.permute(0, 2, 1).reshape(x.shape[0], n * o)


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_float_layer_equals_explicit_hypercomplex_product(n):
    torch.manual_seed(n)
    layer = HypercomplexLinear(3 * n, 5 * n, n, ternary=False).double()
    x = torch.randn(7, 3 * n, dtype=torch.float64)
    torch.testing.assert_close(layer(x), explicit_product(layer.weight, x), rtol=0, atol=1e-12)


def test_block_layout_follows_the_table():
    n = 8
    layer = HypercomplexLinear(16, 24, n, ternary=False)
    w, m = layer.weight.detach(), layer.dense_weight().detach()
    sign, index = cayley_dickson_table(n)
    o, p = 3, 2
    for k in range(n):
        for j in range(n):
            i = index[k, j].item()
            assert torch.equal(m[i * o:(i + 1) * o, j * p:(j + 1) * p], sign[k, j].item() * w[k])


def test_parameter_count_is_dense_over_n():
    for n in (1, 2, 4, 8, 16):
        layer = HypercomplexLinear(64, 128, n)
        assert sum(p.numel() for p in layer.parameters()) == 64 * 128 // n
        assert layer.dense_weight().shape == (128, 64)


def test_ternary_weights_take_three_values_with_absmean_scale():
    torch.manual_seed(0)
    layer = HypercomplexLinear(64, 32, 8, ternary=True)
    gamma = layer.weight.detach().abs().mean()
    m = layer.dense_weight().detach()
    values = set(m.unique().tolist())
    assert values == {-gamma.item(), 0.0, gamma.item()}
    # absmean of the assembled matrix equals absmean of the components (blocks are signed copies)
    torch.testing.assert_close(m.abs().mean() / gamma, (m != 0).float().mean())


def test_ternary_off_uses_float_weights():
    layer = HypercomplexLinear(16, 16, 4, ternary=False)
    assert len(layer.dense_weight().unique()) > 3


def test_straight_through_gradient_equals_gradient_at_quantized_weights():
    torch.manual_seed(1)
    x = torch.randn(5, 32)
    layer = HypercomplexLinear(32, 16, 8, ternary=True)
    (layer(x) ** 2).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    # STE: d loss / d W equals d loss / d W_q, i.e. the gradient of a float layer sitting at W_q.
    trits, gamma = ternarize(layer.weight.detach())
    reference = HypercomplexLinear(32, 16, 8, ternary=False)
    with torch.no_grad():
        reference.weight.copy_(trits * gamma)
    (reference(x) ** 2).sum().backward()
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad)


def test_n1_is_a_plain_ternary_linear():
    torch.manual_seed(2)
    layer = HypercomplexLinear(12, 10, 1, ternary=True)
    x = torch.randn(4, 12)
    w = layer.weight.detach()[0]
    gamma = w.abs().mean()
    w_q = (w / gamma).round().clamp(-1, 1) * gamma
    assert torch.equal(layer(x), F.linear(x, w_q))


def test_eight_bit_activations():
    torch.manual_seed(3)
    x = torch.randn(6, 32, requires_grad=True)
    x_q = quantize_activations(x, 8)
    scale = 127 / x.detach().abs().amax(dim=-1, keepdim=True)
    ints = x_q.detach() * scale
    torch.testing.assert_close(ints, ints.round(), rtol=0, atol=1e-4)
    assert (x_q - x).abs().max() <= (0.5 / scale).max() + 1e-6
    x_q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # straight-through
    layer = HypercomplexLinear(32, 16, 8, act_bits=8)
    assert torch.equal(layer(x.detach()), F.linear(quantize_activations(x.detach()), layer.dense_weight()))
    assert not torch.equal(layer(x.detach()), F.linear(x.detach(), layer.dense_weight()))


def test_frozen_trits_reproduce_outputs_exactly():
    torch.manual_seed(4)
    layer = HypercomplexLinear(32, 64, 8).eval()
    x = torch.randn(3, 32)
    expected = layer(x)
    trits, gamma = layer.ternary_state()
    assert trits.dtype == torch.int8 and set(trits.unique().tolist()) <= {-1, 0, 1}
    frozen = HypercomplexLinear(32, 64, 8)
    frozen.load_ternary(trits, gamma)
    assert frozen.weight is None
    assert torch.equal(frozen(x), expected)


def test_rejects_indivisible_sizes():
    with pytest.raises(ValueError):
        HypercomplexLinear(12, 16, 8)

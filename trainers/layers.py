"""SpinNet's linear layer: hypercomplex weight structure + BitNet b1.58 ternary quantization.

Hypercomplex structure
----------------------
The input (in features) and output (out features) are split into n contiguous components:
component k of a d-vector is the slice [k*d/n, (k+1)*d/n) (the layout DEVELOPING.md fixes for
dim-probe). The layer holds n component matrices W_0..W_{n-1}, each (out/n, in/n), so it has 1/n of
a dense layer's parameters. It computes the hypercomplex product with the weight on the LEFT:

    y = W (x) x,   y_i = sum over (k, j) with index[k, j] = i of  sign[k, j] * W_k @ x_j

where e_k e_j = sign[k, j] e_index[k, j] is the Cayley-Dickson table (trainers.algebra). Written as
one dense (out, in) block matrix M applied as y = M x (F.linear), block (i, j) is sign[k, j] * W_k
with k the unique component that satisfies index[k, j] = i (index[k, j] = k XOR j, so k = i XOR j).
M is assembled once per forward with a single gather (no Python loop over the n^2 blocks), and the
product is one GEMM, so the layer costs about what a dense layer costs and torch.compile traces it.

Ternary quantization (BitNet b1.58)
-----------------------------------
One absmean scale per layer, gamma = mean|W| over all n component matrices (which equals mean|M|,
since M's blocks are signed copies of the W_k), clamped below at 1e-5. Trits t = clamp(round(W /
gamma), -1, 1); the forward pass uses W_q = t * gamma, so every entry of M is in {-gamma, 0, +gamma}.
Gradients pass straight through to the latent float weights (STE). The STE is written
`W_q.detach() + (W - W.detach())`, whose forward value is exactly W_q (W - W is exactly 0), so a
model rebuilt from stored trits and gamma computes bit-identical outputs (see trainers.compress).
Optional 8-bit activations: per-token absmax scaling to [-128, 127], also with an STE.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainers.algebra import block_table, block_table_from

SCALE_EPS = 1e-5


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a bf16 input (model.residual_dtype=autocast) takes the gain in its dtype: torch's fused kernel
        # needs equal dtypes; a float32 input is unchanged
        weight = self.weight if x.dtype == torch.float32 else self.weight.to(x.dtype)
        return F.rms_norm(x, (x.shape[-1],), weight, self.eps)


def ternarize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BitNet b1.58 absmean quantization: (trits in {-1, 0, 1} as weight's dtype, scalar gamma)."""
    gamma = weight.abs().mean().clamp(min=SCALE_EPS)
    trits = (weight / gamma).round().clamp(-1, 1)
    return trits, gamma


def quantize_activations(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Per-token absmax quantization to signed `bits` integers (rescaled back), with an STE."""
    qmax = 2 ** (bits - 1) - 1
    scale = qmax / x.abs().amax(dim=-1, keepdim=True).clamp(min=SCALE_EPS)
    x_q = (x * scale).round().clamp(-qmax - 1, qmax) / scale
    return x_q.detach() + (x - x.detach())


class HypercomplexLinear(nn.Module):
    """y = W (x) x over an n-dim Cayley-Dickson algebra, optionally with ternary weights."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n: int,
        ternary: bool = True,
        act_bits: int | None = None,
        bias: bool = False,
        table: tuple[torch.Tensor, torch.Tensor] | None = None,
        subln: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if in_features % n or out_features % n:
            raise ValueError(f"features ({in_features}, {out_features}) must be divisible by n={n}")
        if act_bits not in (None, 8):
            raise ValueError(f"act_bits must be None or 8, got {act_bits}")
        self.in_features, self.out_features, self.n = in_features, out_features, n
        self.ternary, self.act_bits = ternary, act_bits
        self.weight: nn.Parameter | None = nn.Parameter(torch.empty(n, out_features // n, in_features // n))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        # Block (i, j) of M is block_sign[i, j] * W_{block_source[i, j]} (see trainers.algebra.block_table);
        # `table` = (sign, index) of another signed Latin square (the shuffled control) replaces the algebra's.
        source, block_sign = block_table(n) if table is None else block_table_from(*table)
        # BitNet's SubLN: RMSNorm on the layer's input, before activation quantization.
        self.in_norm = RMSNorm(in_features, norm_eps) if subln else None
        self.register_buffer("block_source", source.flatten(), persistent=False)
        self.register_buffer("block_sign", block_sign.flatten().float(), persistent=False)
        # Set by load_ternary() for inference from a .spinnet file: int8 trits and a fp32 scale.
        self.register_buffer("frozen_trits", None)
        self.register_buffer("frozen_scale", None)
        self.reset_parameters()

    def reset_parameters(self, std: float | None = None) -> None:
        if self.weight is None:
            return
        # Every entry of M is one entry of some W_k, so M has the same std as W.
        nn.init.normal_(self.weight, mean=0.0, std=std if std is not None else 1 / math.sqrt(self.in_features))

    def ternary_state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 trits (n, out/n, in/n), fp32 scalar gamma) of the current weights, for compression."""
        if self.frozen_trits is not None:
            return self.frozen_trits.clone(), self.frozen_scale.clone()
        with torch.no_grad():
            trits, gamma = ternarize(self.weight.float())
        return trits.to(torch.int8), gamma

    def load_ternary(self, trits: torch.Tensor, scale: torch.Tensor) -> None:
        """Freeze the layer to stored trits and scale (inference only; the float weights are dropped)."""
        expected = (self.n, self.out_features // self.n, self.in_features // self.n)
        if tuple(trits.shape) != expected:
            raise ValueError(f"trits shape {tuple(trits.shape)} != {expected}")
        self.weight = None
        self.frozen_trits = trits.to(torch.int8)
        self.frozen_scale = scale.to(torch.float32).reshape(())

    def component_weight(self) -> torch.Tensor:
        """The (n, out/n, in/n) weights the forward pass uses: ternary (with STE) or float."""
        if self.frozen_trits is not None:
            return self.frozen_trits.to(self.frozen_scale.dtype) * self.frozen_scale
        if not self.ternary:
            return self.weight
        trits, gamma = ternarize(self.weight)
        return (trits * gamma).detach() + (self.weight - self.weight.detach())

    def assemble(self, w: torch.Tensor) -> torch.Tensor:
        """(n, o, p) component weights -> the (n*o, n*p) block matrix M, with one gather."""
        n, o, p = w.shape
        blocks = w.index_select(0, self.block_source) * self.block_sign.to(w.dtype)[:, None, None]
        return blocks.view(n, n, o, p).permute(0, 2, 1, 3).reshape(n * o, n * p)

    def dense_weight(self) -> torch.Tensor:
        return self.assemble(self.component_weight())

    def forward(self, x: torch.Tensor, dense: torch.Tensor | None = None) -> torch.Tensor:
        """`dense`: this layer's dense_weight() computed by the caller (batched_dense_weights), else here."""
        if self.in_norm is not None:
            x = self.in_norm(x)
        if self.act_bits is not None:
            x = quantize_activations(x, self.act_bits)
        return F.linear(x, self.dense_weight() if dense is None else dense, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, n={self.n}, ternary={self.ternary}, "
            f"act_bits={self.act_bits}, bias={self.bias is not None}, subln={self.in_norm is not None}, "
            f"frozen={self.frozen_trits is not None}"
        )


def batched_dense_weights(layers: list[HypercomplexLinear]) -> list[torch.Tensor]:
    """dense_weight() of many layers of one weight shape and one table, computed together: one stack, one
    absmean reduction and one quantise-and-assemble pass for all of them instead of a few small kernels per
    layer. A small SpinNet's training step is launch-bound (spinnet-1m compiles to 582 kernels against its
    same-shape baseline's 366, most of the difference these per-layer ones). Each layer's gamma is still
    the mean over its own weights; only the order of that sum may differ from ternarize's (last bit)."""
    first = layers[0]
    # layers on dim 1: the gather below then runs over dim 0, whose backward (index_add) has the fast path
    w = torch.stack([layer.weight for layer in layers], dim=1)  # (n, L, o, p)
    if first.ternary:
        gamma = w.abs().mean(dim=(0, 2, 3), keepdim=True).clamp(min=SCALE_EPS)  # one per layer
        trits = (w / gamma).round().clamp(-1, 1)
        w = (trits * gamma).detach() + (w - w.detach())  # straight-through, as component_weight()
    n, n_layers, o, p = w.shape
    blocks = w.index_select(0, first.block_source) * first.block_sign.to(w.dtype)[:, None, None, None]
    dense = blocks.view(n, n, n_layers, o, p).permute(2, 0, 3, 1, 4).reshape(n_layers, n * o, n * p)
    return list(dense.unbind(0))

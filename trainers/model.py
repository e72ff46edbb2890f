"""Decoder-only transformer for both families, readable top to bottom.

One skeleton, two kinds of linear layer:
- baseline: dense full-precision linears (a GPT/llama-style transformer);
- SpinNet: every linear inside the blocks (q, k, v, attention output, MLP) is a HypercomplexLinear
  (n-dim Cayley-Dickson structure, ternary weights by default). Token embeddings stay dense and are
  tied to the output head.

Shared choices: pre-norm RMSNorm, rotary position embeddings (no learned positions), causal
F.scaled_dot_product_attention, GELU MLP (ratio 4) by default (SwiGLU available with model.mlp),
no biases anywhere, weight tying done by using the embedding matrix as the head
(logits = h @ wte.T), so the state dict holds the matrix once and safetensors can save it.

Components: hidden vectors are split into n contiguous components, component k = h[..., k*D/n:(k+1)*D/n]
(`split_components`). For SpinNet n = algebra_n; for the baseline n = component_split, a control split
with no algebra behind it. q/k/v are separate n-component layers, so with n_head = n head h reads
exactly component h of q, k and v.

Octonion head mixer (model.octonion_attention, needs n_head % 8 == 0): the heads are taken in groups
of 8 consecutive heads; in a group, head h's output (a head_dim vector) is component h of an
octonion-valued vector. For every group g and channel c the mixer holds a learnable octonion
w[g, :, c] and replaces the group's outputs by the octonion product w (x) o (w on the left):

    mixed[g, i, c] = sum over (k, j) with index[k, j] = i of sign[k, j] * w[g, k, c] * o[g, j, c]

It runs after attention and before the output projection. w is initialised to e0 plus N(0, init_std)
noise on all 8 components, so the mixer is near-identity but active from the first step (a model
with the mixer computes different outputs than one without it, even before training).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from corpora.errors import UserError
from trainers.algebra import block_table_from, product_table
from trainers.config import ModelConfig
from trainers.layers import HypercomplexLinear, RMSNorm, batched_dense_weights

__all__ = ["RMSNorm", "build_model", "split_components", "ModelOutput", "Transformer"]


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, T, vocab)
    loss: torch.Tensor | None  # mean cross-entropy over targets != -1, when targets are given
    hidden: list[torch.Tensor] | None  # [embedding output, after block 1, ..., after block L], (B, T, D)


def split_components(h: torch.Tensor, n: int) -> torch.Tensor:
    """(..., D) -> (..., n, D/n): component k is the contiguous slice k*D/n:(k+1)*D/n."""
    if h.shape[-1] % n:
        raise ValueError(f"hidden size {h.shape[-1]} is not divisible by n={n}")
    return h.reshape(*h.shape[:-1], n, h.shape[-1] // n)


def layer_table(cfg: ModelConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sign, index) the n-component layers (or, with n = 8, the head mixer) of `cfg` multiply with."""
    return product_table(n, cfg.algebra_table, cfg.table_seed)


def make_linear(cfg: ModelConfig, in_features: int, out_features: int) -> nn.Module:
    if cfg.family == "spinnet":
        return HypercomplexLinear(
            in_features, out_features, cfg.n_components, ternary=bool(cfg.ternary), act_bits=cfg.act_bits,
            table=layer_table(cfg, cfg.n_components), subln=cfg.subln, norm_eps=cfg.norm_eps,
        )
    return nn.Linear(in_features, out_features, bias=False)


def rotary_tables(head_dim: int, max_seq_len: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (max_seq_len, head_dim/2) for rotating pairs (x[i], x[i + head_dim/2])."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, hd); cos/sin: (T, hd/2). Rotates the two halves of each head as complex pairs."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def quantize_embedding(weight: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(integer codes as weight's dtype, float32 per-row scale (V, 1)) of `model.embedding_quant`:
    int8 = per-row absmax to [-127, 127]; ternary = per-row absmean trits (BitNet's rule, per row)."""
    w = weight.float()
    if kind == "int8":
        scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0
        return (w / scale).round().clamp(-127, 127), scale
    if kind == "ternary":
        scale = w.abs().mean(dim=1, keepdim=True).clamp(min=1e-8)
        return (w / scale).round().clamp(-1, 1), scale
    raise ValueError(f"unknown embedding quantization {kind!r}")


class OctonionHeadMixer(nn.Module):
    """Mix each group of 8 heads through the octonion product with a learnable octonion per channel."""

    def __init__(
        self, n_head: int, head_dim: int, init_std: float, table: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> None:
        super().__init__()
        if n_head % 8:
            raise ValueError(f"octonion head mixer needs n_head divisible by 8, got {n_head}")
        self.n_groups, self.head_dim = n_head // 8, head_dim
        weight = torch.randn(self.n_groups, 8, head_dim) * init_std
        weight[:, 0, :] += 1.0  # e0 = identity, plus small noise on every component
        self.weight = nn.Parameter(weight)
        source, sign = block_table_from(*(table if table is not None else product_table(8)))
        self.register_buffer("source", source.flatten(), persistent=False)
        self.register_buffer("sign", sign.flatten().float(), persistent=False)

    def mixing_matrices(self) -> torch.Tensor:
        """(groups, 8, 8, head_dim): entry [g, i, j, c] = sign[k, j] * w[g, k, c] with index[k, j] = i."""
        w = self.weight.index_select(1, self.source) * self.sign[None, :, None]
        return w.view(self.n_groups, 8, 8, self.head_dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y: (B, n_head, T, head_dim) attention outputs -> same shape, mixed within groups of 8 heads."""
        b, h, t, d = y.shape
        groups = y.view(b, self.n_groups, 8, t, d)
        mixed = torch.einsum("gijc,bgjtc->bgitc", self.mixing_matrices().to(y.dtype), groups)
        return mixed.reshape(b, h, t, d)

    def dense_matrix(self) -> torch.Tensor:
        """The mixer as one (D, D) matrix on the token-major layout (head h's channels at h*hd:(h+1)*hd):
        forward(y) with heads flattened equals F.linear(y_flat, dense_matrix()). Entry
        [(g, i, c), (g, j, c)] = mixing_matrices()[g, i, j, c]; zero across groups and channels."""
        m = self.mixing_matrices()  # (G, i, j, c)
        width = 8 * self.head_dim
        blocks = torch.diag_embed(m).permute(0, 1, 3, 2, 4).reshape(self.n_groups, width, width)  # [(i,c), (j,c')]
        return torch.block_diag(*blocks.unbind(0))


# The dense weights of one block's HypercomplexLinears ("attn.q", ..., "mlp.down"), computed for all blocks at
# once by Transformer.batched_block_weights; None: each layer computes its own.
BlockWeights = dict[str, torch.Tensor] | None


def run_linear(layer: nn.Module, x: torch.Tensor, dense: BlockWeights, name: str) -> torch.Tensor:
    """layer(x), handing a HypercomplexLinear its precomputed dense weight (called as a module: hooks still run)."""
    return layer(x) if dense is None else layer(x, dense[name])


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim, self.dropout = cfg.n_head, cfg.head_dim, cfg.dropout
        self.q = make_linear(cfg, cfg.d_model, cfg.d_model)
        self.k = make_linear(cfg, cfg.d_model, cfg.d_model)
        self.v = make_linear(cfg, cfg.d_model, cfg.d_model)
        self.proj = make_linear(cfg, cfg.d_model, cfg.d_model)
        self.mixer = (
            OctonionHeadMixer(cfg.n_head, cfg.head_dim, cfg.init_std, layer_table(cfg, 8))
            if cfg.octonion_attention else None
        )
        # in training, merge the mixer into proj's weight where exact (proj_weight_with_mixer); False keeps
        # the einsum path (the benchmark's reference)
        self.fold_mixer = True

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dense: BlockWeights = None) -> torch.Tensor:
        b, t, d = x.shape

        def heads(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

        q, k, v = (heads(run_linear(layer, x, dense, f"attn.{name}"))
                   for name, layer in (("q", self.q), ("k", self.k), ("v", self.v)))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        # Training only: there a step's many tokens make the D x D x D weight product cheap beside the einsum
        # over every activation; generation and evaluation (few tokens, often on a CPU) keep the einsum.
        # A hook on proj or the mixer (evalsuite.dynamics reads proj's input) sees the modules run as written.
        hooked = any(m._forward_pre_hooks or m._forward_hooks for m in (self.proj, self.mixer) if m is not None)
        fold = self.training and self.mixer is not None and self.fold_mixer and not hooked
        folded = self.proj_weight_with_mixer(None if dense is None else dense["attn.proj"]) if fold else None
        if folded is not None:
            return F.linear(y.transpose(1, 2).reshape(b, t, d), folded, self.proj.bias)
        if self.mixer is not None:
            y = self.mixer(y)
        return run_linear(self.proj, y.transpose(1, 2).reshape(b, t, d), dense, "attn.proj")  # head h at h*hd:(h+1)*hd

    def proj_weight_with_mixer(self, proj_dense: torch.Tensor | None = None) -> torch.Tensor | None:
        """proj(mixer(y)) is linear in y: its (D, D) weight W_proj @ M_mixer, so the head mixer costs a
        (D x D x D) weight product per step instead of a reshuffle of every activation (the einsum over
        (B, H, T, hd) cost as much as the attention). None where proj does more than a matrix product
        (SubLN or 8-bit activations quantise the mixer's output, so the two cannot be merged)."""
        proj = self.proj
        if isinstance(proj, nn.Linear):
            weight = proj.weight
        elif proj.in_norm is None and proj.act_bits is None:
            weight = proj.dense_weight() if proj_dense is None else proj_dense
        else:
            return None
        return weight @ self.mixer.dense_matrix().to(weight.dtype)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind, hidden = cfg.mlp, cfg.mlp_hidden
        self.up = make_linear(cfg, cfg.d_model, hidden)
        self.gate = make_linear(cfg, cfg.d_model, hidden) if cfg.mlp == "swiglu" else None
        self.down = make_linear(cfg, hidden, cfg.d_model)

    def forward(self, x: torch.Tensor, dense: BlockWeights = None) -> torch.Tensor:
        up = run_linear(self.up, x, dense, "mlp.up")
        hidden = F.gelu(up) if self.gate is None else F.silu(run_linear(self.gate, x, dense, "mlp.gate")) * up
        return run_linear(self.down, hidden, dense, "mlp.down")


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dense: BlockWeights = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, dense))
        return x + self.drop(self.mlp(self.mlp_norm(x), dense))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab_size is None:
            raise UserError("model.vocab_size is not set (it is filled from the tokenizer at train time)")
        self.config = cfg
        self.n_components = cfg.n_components
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        # in training, quantise and assemble all block linears in one batch per weight shape (SpinNet): None = on
        # CUDA only, where a small model's step is launch-bound (on a CPU the stacked weights fall out of the
        # cache and a step of spinnet-1m took 1.6x as long); True = always; False = each layer does its own
        # (the benchmark's reference; same values up to the order of a sum)
        self.batch_quantize: bool | None = None
        cos, sin = rotary_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # Set by load_quantized_embedding() for inference from a .spinnet file (int8 codes, fp32 row scales).
        self.register_buffer("frozen_emb_codes", None)
        self.register_buffer("frozen_emb_scale", None)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 init: N(0, init_std); residual output projections scaled by 1/sqrt(2 * n_layer)."""
        std = self.config.init_std
        nn.init.normal_(self.wte.weight, mean=0.0, std=std)
        for name, module in self.named_modules():
            residual_out = name.endswith(("attn.proj", "mlp.down"))
            layer_std = std / math.sqrt(2 * self.config.n_layer) if residual_out else std
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=layer_std)
            elif isinstance(module, HypercomplexLinear):
                module.reset_parameters(layer_std)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, return_hidden: bool = False
    ) -> ModelOutput:
        emb = self.embedding_weight()
        hidden: list[torch.Tensor] | None = [] if return_hidden else None
        x = self.trunk(idx, emb, hidden)
        logits = F.linear(self.norm(x), emb)  # tied head
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return ModelOutput(logits=logits, loss=loss, hidden=hidden)

    def embedding_weight(self) -> torch.Tensor:
        """The (tied) embedding the forward pass uses: float, or quantized per model.embedding_quant
        (straight-through: the forward value is exactly codes * scale, the gradient reaches wte)."""
        if self.frozen_emb_codes is not None:
            return self.frozen_emb_codes.to(torch.float32) * self.frozen_emb_scale
        kind = self.config.embedding_quant
        w = self.wte.weight
        if kind == "none":
            return w
        codes, scale = quantize_embedding(w, kind)
        return (codes * scale).to(w.dtype).detach() + (w - w.detach())

    def embedding_state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 codes (V, D), float32 scales (V, 1)) of the quantized embedding, for compression."""
        if self.frozen_emb_codes is not None:
            return self.frozen_emb_codes.clone(), self.frozen_emb_scale.clone()
        with torch.no_grad():
            codes, scale = quantize_embedding(self.wte.weight, self.config.embedding_quant)
        return codes.to(torch.int8), scale

    def load_quantized_embedding(self, codes: torch.Tensor, scale: torch.Tensor) -> None:
        """Freeze the embedding to stored codes and row scales (inference only)."""
        expected = tuple(self.wte.weight.shape)
        if tuple(codes.shape) != expected or tuple(scale.shape) != (expected[0], 1):
            raise ValueError(f"embedding codes {tuple(codes.shape)} / scales {tuple(scale.shape)} do not fit {expected}")
        self.frozen_emb_codes = codes.to(torch.int8)
        self.frozen_emb_scale = scale.to(torch.float32)
        with torch.no_grad():
            self.wte.weight.copy_(self.embedding_weight())

    def final_hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """The normed hidden states the tied head multiplies: forward's logits = F.linear(this, embedding_weight()).

        For losses that fuse the head into the cross-entropy (trainers.fused.chunked_head_losses);
        tests/test_fused_ce.py checks that it matches forward.
        """
        return self.norm(self.trunk(idx, self.embedding_weight()))

    def trunk(self, idx: torch.Tensor, emb: torch.Tensor, hidden: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The residual stream after the last block (embedding `emb`); `hidden` collects it before each block
        and after the last."""
        t = idx.shape[1]
        if t > self.config.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds model.max_seq_len={self.config.max_seq_len}")
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        x = self.drop(F.embedding(idx, emb))
        if self.config.residual_dtype == "autocast" and torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))  # then every block's sum stays in it
        dense = self.batched_block_weights()
        if hidden is not None:
            hidden.append(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, None if dense is None else dense[i])
            if hidden is not None:
                hidden.append(x)
        return x

    def batched_block_weights(self) -> list[dict[str, torch.Tensor]] | None:
        """Training a SpinNet: every block linear's dense weight, quantised and assembled in one batch per weight
        shape (layers.batched_dense_weights); None where each layer computes its own (a baseline, evaluation,
        weights frozen from a .spinnet file, a CPU unless `batch_quantize` is True, or `batch_quantize` False:
        the benchmark's per-layer reference)."""
        on = self.rope_cos.is_cuda if self.batch_quantize is None else self.batch_quantize
        if not (self.training and on) or self.config.family != "spinnet":
            return None
        layers = [(i, name, m) for i, block in enumerate(self.blocks)
                  for name, m in block.named_modules() if isinstance(m, HypercomplexLinear)]
        if any(m.weight is None for _, _, m in layers):
            return None
        by_shape: dict[tuple[int, ...], list[tuple[int, str, HypercomplexLinear]]] = {}
        for item in layers:
            by_shape.setdefault(tuple(item[2].weight.shape), []).append(item)
        dense: list[dict[str, torch.Tensor]] = [{} for _ in self.blocks]
        for group in by_shape.values():
            for (i, name, _), weight in zip(group, batched_dense_weights([m for _, _, m in group]), strict=True):
                dense[i][name] = weight
        return dense

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        total = sum(p.numel() for p in self.parameters())
        return total - self.wte.weight.numel() if exclude_embeddings else total

    def hypercomplex_layers(self) -> list[tuple[str, HypercomplexLinear]]:
        return [(name, m) for name, m in self.named_modules() if isinstance(m, HypercomplexLinear)]

    def component_grad_norms(self) -> torch.Tensor | None:
        """SpinNet: L2 norm of the gradient of each weight component W_k, pooled over all layers: (n,)."""
        layers = [m for _, m in self.hypercomplex_layers() if m.weight is not None and m.weight.grad is not None]
        if not layers:
            return None
        squares = sum(m.weight.grad.float().pow(2).sum(dim=(1, 2)) for m in layers)
        return squares.sqrt()

    def estimate_flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), for MFU.

        6 * N_matmul + 12 * n_layer * d_model * T (the PaLM / nanoGPT estimate), where
        N_matmul is the number of weights the matmuls actually multiply: for SpinNet the full
        assembled (out, in) block matrix of each HypercomplexLinear (n times its parameter count:
        the GEMM is dense), plus the tied head (vocab x d_model); the embedding lookup and norms are
        not matmuls. The attention term counts QK^T and AV for the full T x T square (causal masking
        is not discounted, as in nanoGPT), with T = seq_len (default max_seq_len).
        """
        cfg = self.config
        t = seq_len if seq_len is not None else cfg.max_seq_len
        n_matmul = cfg.vocab_size * cfg.d_model
        for module in self.modules():
            if isinstance(module, (nn.Linear, HypercomplexLinear)):
                n_matmul += module.in_features * module.out_features
        if cfg.octonion_attention:  # 64 multiply-adds per (group, channel) per token
            n_matmul += cfg.n_layer * (cfg.n_head // 8) * 64 * cfg.head_dim
        return 6.0 * n_matmul + 12.0 * cfg.n_layer * cfg.d_model * t


def build_model(cfg: ModelConfig) -> Transformer:
    return Transformer(cfg)


def preset_parameter_counts(name: str) -> dict[str, Any]:
    """{preset, family, vocab_size, embedding, non_embedding, total} measured on a model built on
    torch's meta device (no memory); embedding counts are None when the vocabulary is unknown."""
    from trainers.config import load_config, preset_vocab_size

    config = load_config(name)
    vocab = preset_vocab_size(config)
    model_cfg = dataclasses.replace(config.model, vocab_size=vocab or 1)
    with torch.device("meta"):
        model = build_model(model_cfg)
    non_embedding = model.num_parameters(exclude_embeddings=True)
    embedding = vocab * model_cfg.d_model if vocab else None
    return {
        "preset": name, "family": config.model.family, "vocab_size": vocab, "embedding": embedding,
        "non_embedding": non_embedding, "total": embedding + non_embedding if embedding is not None else None,
    }

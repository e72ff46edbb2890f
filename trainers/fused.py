"""Speed levers for the training step that change how, not what, is computed.

Chunked cross-entropy over the tied LM head
-------------------------------------------
`chunked_head_losses(hidden, weight, targets, chunk_tokens)` returns the per-token cross-entropy
(nats, fp32) of `logits = hidden @ weight.T` without ever holding the (tokens, vocab) logits of the
whole batch: the forward pass computes the logits of `chunk_tokens` tokens at a time, keeps only
their log-sum-exp (one fp32 per token), and the backward pass recomputes each chunk's logits to
form (softmax - onehot) * grad and multiplies it into the hidden and head gradients.

It is the same function as `F.cross_entropy(F.linear(hidden, weight).float(), targets,
reduction="none")` (tests/test_fused_ce.py checks values and both gradients against it); the
logits are formed in the input dtype (bf16 under autocast, as the plain head does) and the
softmax in fp32. Cost: the head GEMM is done once more in the backward pass (recompute), in
exchange for O(chunk x vocab) instead of O(tokens x vocab) memory for the logits and their
gradient. Targets equal to `ignore_index` get loss 0 and no gradient, as in F.cross_entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_TOKENS = 8192


def _chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


class _ChunkedHeadCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, ignore_index):  # type: ignore[override]
        n = hidden.shape[0]
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        picked = torch.empty(n, dtype=torch.float32, device=hidden.device)
        valid = targets != ignore_index
        safe_targets = torch.where(valid, targets, torch.zeros_like(targets))
        for s, e in _chunk_bounds(n, chunk):
            logits = F.linear(hidden[s:e], weight).float()
            lse[s:e] = torch.logsumexp(logits, dim=-1)
            picked[s:e] = logits.gather(1, safe_targets[s:e, None]).squeeze(1)
        losses = torch.where(valid, lse - picked, torch.zeros_like(lse))
        ctx.save_for_backward(hidden, weight, safe_targets, valid, lse)
        ctx.chunk = chunk
        return losses

    @staticmethod
    def backward(ctx, grad_losses):  # type: ignore[override]
        hidden, weight, targets, valid, lse = ctx.saved_tensors
        g = torch.where(valid, grad_losses.float(), torch.zeros_like(grad_losses, dtype=torch.float32))
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if ctx.needs_input_grad[1] else None
        for s, e in _chunk_bounds(hidden.shape[0], ctx.chunk):
            h = hidden[s:e]
            probs = torch.exp(F.linear(h, weight).float() - lse[s:e, None])
            probs.scatter_add_(1, targets[s:e, None], -torch.ones_like(probs[:, :1]))
            dlogits = (probs * g[s:e, None]).to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[s:e] = dlogits @ weight.to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += (dlogits.t() @ h).float()
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


def chunked_head_losses(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    ignore_index: int = -1,
) -> torch.Tensor:
    """Per-token cross-entropy (fp32, flattened to (B*T,)) of the head `hidden @ weight.T`.

    hidden: (..., D) final normed hidden states; weight: (V, D) head (the tied embedding);
    targets: (...) token ids. Under autocast the logits are formed in the autocast dtype, as the
    plain head does (the hidden and weight are cast here because a custom Function sits outside
    autocast's op-level casting).
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    h = hidden.reshape(-1, hidden.shape[-1])
    w = weight
    if torch.is_autocast_enabled(h.device.type):
        dtype = torch.get_autocast_dtype(h.device.type)
        h, w = h.to(dtype), w.to(dtype)
    else:
        w = w.to(h.dtype)
    with torch.autocast(h.device.type, enabled=False):
        return _ChunkedHeadCE.apply(h, w, targets.reshape(-1), int(chunk_tokens), int(ignore_index))

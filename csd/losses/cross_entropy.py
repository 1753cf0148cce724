"""Cross-entropy on (B, T, V) logits without a float32 copy of them.

    ce = chunked_cross_entropy(logits, targets, reduction="sum")    # targets (B, T), -100 = ignored

    CE(z, y) = logsumexp(z) − z[y],   ∂CE/∂z = softmax(z) − onehot(y)

Same engine as the distillation objectives (csd/losses/base.py): ignored tokens dropped first, one float32 chunk
at a time, value and gradient computed in the forward pass into one buffer in the logits' dtype (only when a
gradient is needed), backward scales it. ``F.cross_entropy(logits.float(), ...)`` instead holds the float32 copy
and its log-softmax for backward: two (N, V) float32 tensors.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from csd.losses.base import DEFAULT_CHUNK_ELEMENTS, _ChunkedLoss, kept_rows, upcast


def cross_entropy_value_and_grad(logits: Tensor, targets: Tensor, need_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """Per-row CE ``(n,)`` of float32 (or float64) rows ``(n, V)`` and, if asked, its gradient ``(n, V)``."""
    log_normaliser = torch.logsumexp(logits, dim=-1)
    loss = log_normaliser - logits.gather(-1, targets[:, None]).squeeze(-1)
    if not need_grad:
        return loss, None
    grad = torch.exp(logits - log_normaliser[:, None])
    grad[torch.arange(grad.shape[0], device=grad.device), targets] -= 1.0
    return loss, grad


class _HardTargets:
    """Cross-entropy in the chunk engine's place of an objective: the "teacher" rows are the target token ids."""

    def chunk_value_and_grad(self, logits: Tensor, targets: Tensor, need_grad: bool):
        return cross_entropy_value_and_grad(upcast(logits), targets, need_grad)


def chunked_cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean",
                          chunk_size: Optional[int] = None, weights: Optional[Tensor] = None) -> Tensor:
    """Mean (or sum) CE over the non-ignored targets, each token's CE times ``weights`` if given; a gradient
    buffer only when ``logits`` needs one."""
    if logits.dim() < 2 or targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets {tuple(targets.shape)} must match the logits {tuple(logits.shape)} without the "
                         "vocabulary dimension")
    vocab = logits.shape[-1]
    flat_targets = targets.reshape(-1)
    rows, scale = kept_rows(flat_targets, reduction, weights)
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    chunk = chunk_size or max(1, DEFAULT_CHUNK_ELEMENTS // vocab)
    return _ChunkedLoss.apply(logits.reshape(-1, vocab), flat_targets, rows, scale, _HardTargets(), chunk, need_grad)

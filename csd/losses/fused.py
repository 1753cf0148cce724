"""Fused linear + distillation loss: never materialises the (N, V) logits of either model.

Tokens are processed in chunks: the chunk's student and teacher logits are computed from the hidden states
(the teacher's under no_grad), the objective gives the chunk's value and gradient w.r.t. the logits, and that
gradient is pushed straight through the head into preallocated buffers for the hidden states and the head
weight.  Peak extra memory is O(chunk · V + V · H) instead of O(N · V).  The hard cross-entropy of the same
chunk can be mixed in (``ce_weight``), so runs with ``train.kd_ratio < 1`` keep the saving.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from csd.losses.base import DEFAULT_CHUNK_ELEMENTS, Objective, chunk_scale, kept_rows, scaled_gradient, upcast
from csd.losses.cross_entropy import cross_entropy_value_and_grad


class _FusedLinearLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_hidden, student_weight, teacher_hidden, teacher_weight, rows, targets, scale, objective,
                chunk, need_grad, kd_weight, ce_weight, parts):
        dtype = upcast(student_hidden[:0]).dtype
        kd_total = torch.zeros((), dtype=dtype, device=student_hidden.device)
        ce_total = torch.zeros((), dtype=dtype, device=student_hidden.device)
        want_ce = ce_weight != 0.0 or parts is not None
        grad_hidden = torch.zeros_like(student_hidden) if need_grad else None
        # The head gradient sums over every token: accumulate in float32 whatever the weight dtype.
        grad_weight = torch.zeros_like(student_weight, dtype=upcast(student_weight[:0]).dtype) if need_grad else None
        for start in range(0, rows.numel(), chunk):
            index = rows[start : start + chunk]
            hidden = student_hidden[index]
            student_logits = hidden @ student_weight.T
            with torch.no_grad():
                teacher_logits = teacher_hidden[index] @ teacher_weight.T
            loss, logit_grad = objective.chunk_value_and_grad(student_logits, teacher_logits, need_grad)
            row_factor, column_factor = chunk_scale(scale, start, chunk)
            kd_total += (loss * row_factor).sum()
            if want_ce:  # the hard loss of the same chunk, from the logits it already has (Liger's weight_hard_loss)
                ce, ce_grad = cross_entropy_value_and_grad(upcast(student_logits.detach()), targets[index],
                                                           need_grad and ce_weight != 0.0)
                ce_total += (ce * row_factor).sum()
            if need_grad:
                logit_grad = logit_grad * (column_factor * kd_weight)
                if ce_weight != 0.0:
                    logit_grad += ce_grad * (column_factor * ce_weight)
                grad_hidden.index_copy_(0, index, (logit_grad.to(student_weight.dtype) @ student_weight).to(grad_hidden.dtype))
                grad_weight += logit_grad.T.to(grad_weight.dtype) @ upcast(hidden).to(grad_weight.dtype)
        if need_grad:
            grad_weight = grad_weight.to(student_weight.dtype)
        if parts is not None:
            parts["kd"], parts["ce"] = kd_total.detach(), ce_total.detach()
        ctx.save_for_backward(grad_hidden, grad_weight)
        return kd_weight * kd_total + ce_weight * ce_total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (scaled_gradient(grad_hidden, grad_output), scaled_gradient(grad_weight, grad_output)) + (None,) * 11


def check_fused_shapes(student_hidden: Tensor, student_head_weight: Tensor, teacher_hidden: Tensor,
                       teacher_head_weight: Tensor, labels: Tensor) -> None:
    if student_hidden.dim() != 2 or teacher_hidden.dim() != 2 or student_hidden.shape[0] != teacher_hidden.shape[0]:
        raise ValueError(
            f"hidden states must be (N, H) with the same N: student {tuple(student_hidden.shape)}, "
            f"teacher {tuple(teacher_hidden.shape)}"
        )
    if student_head_weight.shape[1] != student_hidden.shape[1] or teacher_head_weight.shape[1] != teacher_hidden.shape[1]:
        raise ValueError(
            f"head weights must be (V, H): student weight {tuple(student_head_weight.shape)} for hidden "
            f"{tuple(student_hidden.shape)}, teacher weight {tuple(teacher_head_weight.shape)} for hidden {tuple(teacher_hidden.shape)}"
        )
    if student_head_weight.shape[0] != teacher_head_weight.shape[0]:
        raise ValueError(
            f"student head {tuple(student_head_weight.shape)} and teacher head {tuple(teacher_head_weight.shape)} have "
            "different vocabulary sizes; slice both to the shared tokenizer length first"
        )
    if labels.shape != student_hidden.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} must be (N,) for hidden states {tuple(student_hidden.shape)}")


def fused_linear_loss_with(objective: Objective, student_hidden: Tensor, student_head_weight: Tensor,
                           teacher_hidden: Tensor, teacher_head_weight: Tensor, labels: Tensor,
                           chunk_size: Optional[int] = None, reduction: str = "mean", *, kd_weight: float = 1.0,
                           ce_weight: float = 0.0, parts: Optional[dict] = None,
                           weights: Optional[Tensor] = None) -> Tensor:
    """``kd_weight · objective + ce_weight · CE`` on ``hidden @ weight.T`` logits, chunk by chunk; ``labels`` (N,)
    are the target token ids (−100 = ignored). ``parts``, if given, receives the detached ``kd`` and ``ce``
    values (same reduction) — the cross-entropy then costs one logsumexp per chunk even when its weight is 0.
    ``weights`` (N,), if given, multiply each token's loss (e.g. 1/length for a per-sequence mean)."""
    check_fused_shapes(student_hidden, student_head_weight, teacher_hidden, teacher_head_weight, labels)
    rows, scale = kept_rows(labels, reduction, weights)
    need_grad = torch.is_grad_enabled() and (student_hidden.requires_grad or student_head_weight.requires_grad)
    chunk = chunk_size or max(1, DEFAULT_CHUNK_ELEMENTS // student_head_weight.shape[0])
    return _FusedLinearLoss.apply(
        student_hidden, student_head_weight, teacher_hidden.detach(), teacher_head_weight.detach(),
        rows, labels, scale, objective, chunk, need_grad, float(kd_weight), float(ce_weight), parts,
    )

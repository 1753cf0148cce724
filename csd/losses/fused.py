"""Fused linear + distillation loss: never materialises the (N, V) logits of either model.

Tokens are processed in chunks: the chunk's student and teacher logits are computed from the hidden states
(the teacher's under no_grad), the objective gives the chunk's value and gradient w.r.t. the logits, and that
gradient is pushed straight through the head into preallocated buffers for the hidden states and the head
weight.  Peak extra memory is O(chunk · V + V · H) instead of O(N · V).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from csd.losses.base import DEFAULT_CHUNK_ELEMENTS, Objective, kept_rows, scaled_gradient, upcast


class _FusedLinearLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_hidden, student_weight, teacher_hidden, teacher_weight, rows, scale, objective, chunk, need_grad):
        total = torch.zeros((), dtype=upcast(student_hidden[:0]).dtype, device=student_hidden.device)
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
            total += loss.sum()
            if need_grad:
                logit_grad = logit_grad * scale
                grad_hidden.index_copy_(0, index, (logit_grad.to(student_weight.dtype) @ student_weight).to(grad_hidden.dtype))
                grad_weight += logit_grad.T.to(grad_weight.dtype) @ upcast(hidden).to(grad_weight.dtype)
        if need_grad:
            grad_weight = grad_weight.to(student_weight.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total * scale

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (scaled_gradient(grad_hidden, grad_output), scaled_gradient(grad_weight, grad_output)) + (None,) * 7


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
                           chunk_size: Optional[int] = None, reduction: str = "mean") -> Tensor:
    check_fused_shapes(student_hidden, student_head_weight, teacher_hidden, teacher_head_weight, labels)
    rows, scale = kept_rows(labels, reduction)
    need_grad = torch.is_grad_enabled() and (student_hidden.requires_grad or student_head_weight.requires_grad)
    chunk = chunk_size or max(1, DEFAULT_CHUNK_ELEMENTS // student_head_weight.shape[0])
    return _FusedLinearLoss.apply(
        student_hidden, student_head_weight, teacher_hidden.detach(), teacher_head_weight.detach(),
        rows, scale, objective, chunk, need_grad,
    )

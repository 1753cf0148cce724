"""The chunked engine every objective plugs into.

An objective only states its per-token formula on float32 rows of logits.  The engine

* validates shapes and drops ignored tokens (``labels == -100``) before any work,
* walks the kept tokens in chunks, upcasting one chunk at a time (bf16/fp16 inputs stay small),
* computes each chunk's value *and* gradient inside the forward pass and writes the gradient into one
  preallocated buffer, so no autograd graph over ``(N, V)`` temporaries is ever kept,
* returns a scalar whose backward scales that buffer (Liger-Kernel's chunked-loss trick).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional, Tuple

import torch
from torch import Tensor

from csd.constants import IGNORE_INDEX  # re-exported: csd.losses.IGNORE_INDEX
# Rows per chunk are chosen so that one float32 chunk holds about this many elements (16 MiB).
DEFAULT_CHUNK_ELEMENTS = 1 << 22


@dataclasses.dataclass
class Objective:
    """A per-token distillation objective: ``loss_fn(student_logits, teacher_logits, labels)``.

    Subclasses implement :meth:`per_token` (differentiable w.r.t. the student row) and may override
    :meth:`value_and_grad` with a closed-form gradient.  ``valid`` marks vocabulary entries where neither
    logit is ``-inf``; it is ``None`` when every entry is (the common, fast case).  Entries outside
    ``valid`` (a padded vocabulary: ``-inf`` in either model) are excluded from the objective and get zero gradient.
    """

    name: ClassVar[str] = ""
    chunk_size: Optional[int] = dataclasses.field(default=None, kw_only=True)
    # torch.compile the per-chunk value-and-gradient (one graph, dynamic chunk length): the elementwise passes
    # over a chunk fuse into a few loops. Costs a compilation (seconds) on first use.
    compile: bool = dataclasses.field(default=False, kw_only=True)

    def per_token(self, student: Tensor, teacher: Tensor, valid: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    def value_and_grad(self, student: Tensor, teacher: Tensor, valid: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """Per-row loss ``(n,)`` and its gradient w.r.t. the student row ``(n, V)``; default: autograd on a chunk."""
        with torch.enable_grad():
            student = student.detach().requires_grad_(True)
            loss = self.per_token(student, teacher, valid)
            (grad,) = torch.autograd.grad(loss.sum(), student)
        return loss.detach(), grad

    def __call__(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, reduction: str = "mean",
                 weights: Optional[Tensor] = None) -> Tensor:
        """Mean (or sum) of the per-token loss over tokens with ``labels != -100``; ``weights`` (same shape as
        ``labels``), if given, multiply each token's loss first (e.g. 1/length for a per-sequence mean)."""
        check_logits(student_logits, teacher_logits, labels)
        vocab = student_logits.shape[-1]
        student_2d = student_logits.reshape(-1, vocab)
        teacher_2d = teacher_logits.reshape(-1, vocab)
        rows, scale = kept_rows(labels.reshape(-1), reduction, weights)
        need_grad = torch.is_grad_enabled() and student_logits.requires_grad
        chunk = self.chunk_size or max(1, DEFAULT_CHUNK_ELEMENTS // vocab)
        return _ChunkedLoss.apply(student_2d, teacher_2d, rows, scale, self, chunk, need_grad)

    # Shared by the engine and the fused linear loss.
    def chunk_value_and_grad(self, student: Tensor, teacher: Tensor, need_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
        student, teacher = upcast(student), upcast(teacher)
        valid = None
        # A row sum is non-finite iff some entry is (a cheap reduction, no (n, V) temporary).
        if not (torch.isfinite(student.sum(-1)).all() and torch.isfinite(teacher.sum(-1)).all()):
            # -inf marks a padded vocabulary entry (as in DistiLLM); NaN and +inf are not padding and propagate.
            valid = ~(torch.isneginf(student) | torch.isneginf(teacher))
            student = torch.where(valid, student, torch.zeros_like(student))
            teacher = torch.where(valid, teacher, torch.zeros_like(teacher))
        if not need_grad:
            with torch.no_grad():
                return self.per_token(student, teacher, valid), None
        loss, grad = self.compiled_value_and_grad()(student, teacher, valid)
        if valid is not None:
            grad = torch.where(valid, grad, torch.zeros_like(grad))
        return loss, grad


    def compiled_value_and_grad(self):
        """``value_and_grad``, compiled once per objective when ``compile`` is set."""
        if not self.compile:
            return self.value_and_grad
        compiled = self.__dict__.get("_compiled")
        if compiled is None:
            compiled = torch.compile(self.value_and_grad, dynamic=True)
            object.__setattr__(self, "_compiled", compiled)
        return compiled


def upcast(x: Tensor) -> Tensor:
    """Half precision is computed in float32; float32 and float64 stay as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def check_logits(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "must have the same shape (B, T, V); if the vocabularies differ only by padding, slice both to the "
            "shared tokenizer length first"
        )
    if student_logits.dim() < 2 or labels.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"labels {tuple(labels.shape)} must match the logits {tuple(student_logits.shape)} without the vocabulary dimension"
        )
    if not student_logits.is_floating_point() or not teacher_logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got {student_logits.dtype} and {teacher_logits.dtype}")


def kept_rows(flat_labels: Tensor, reduction: str, weights: Optional[Tensor] = None):
    """Indices of the non-ignored tokens and the factor turning their summed loss into the reduction: a float,
    or with per-token ``weights`` a float tensor with one factor per kept token (aligned with the indices)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    rows = (flat_labels != IGNORE_INDEX).nonzero().squeeze(-1)
    scale = 1.0 / max(rows.numel(), 1) if reduction == "mean" else 1.0
    if weights is None:
        return rows, scale
    if weights.numel() != flat_labels.numel():
        raise ValueError(f"weights {tuple(weights.shape)} must have one entry per label ({flat_labels.numel()})")
    return rows, weights.reshape(-1)[rows].to(torch.float32) * scale


def chunk_scale(scale, start: int, chunk: int):
    """The scale of rows ``start:start + chunk`` as (per row, for the loss values; as a column, for the gradient
    rows): the float itself twice, or that slice of the per-row factors."""
    if isinstance(scale, float):
        return scale, scale
    rows = scale[start : start + chunk]
    return rows, rows[:, None]


class _ChunkedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student, teacher, rows, scale, objective, chunk, need_grad):
        total = torch.zeros((), dtype=upcast(student[:0]).dtype, device=student.device)
        grad = torch.zeros_like(student) if need_grad else None
        for start in range(0, rows.numel(), chunk):
            index = rows[start : start + chunk]
            loss, chunk_grad = objective.chunk_value_and_grad(student[index], teacher[index], need_grad)
            row_factor, column_factor = chunk_scale(scale, start, chunk)
            total += (loss * row_factor).sum()
            if need_grad:
                grad.index_copy_(0, index, chunk_grad.mul_(column_factor).to(grad.dtype))
        # Kept as an attribute, not a saved tensor, and released in backward: the buffer can then become
        # the student's .grad without a copy.
        ctx.grad = grad
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad, ctx.grad = ctx.grad, None
        if grad is None:
            raise RuntimeError("the loss was backpropagated twice; its gradient buffer is used up")
        return scaled_gradient(grad, grad_output), None, None, None, None, None, None


def scaled_gradient(grad: Tensor, grad_output: Tensor) -> Tensor:
    """The stored gradient times the incoming scalar; no copy in the common ``loss.backward()`` case."""
    if grad_output.item() == 1.0:
        return grad
    return grad * grad_output.to(grad.dtype)

"""Distillation objectives: one registry from names to objectives.

    loss_fn = get_loss("csd", weighting="TS")
    loss = loss_fn(student_logits, teacher_logits, labels)          # (B, T, V), (B, T, V), (B, T)
    loss = fused_linear_loss("csd", h_s, W_s, h_t, W_t, labels)     # never builds the (N, V) logits

``labels == -100`` marks ignored positions; the result is the mean of the per-token loss over the rest
(``reduction="sum"`` for the sum, which the trainer divides by the global token count).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Type

from torch import Tensor

from csd.losses.base import IGNORE_INDEX, Objective
from csd.losses.concrete_score import CSD, DLD
from csd.losses.divergences import (
    AlphaBeta, ForwardKL, Jeffreys, JensenShannon, ReverseKL, SkewedForwardKL, SkewedReverseKL, SymmetricKL,
    TotalVariation,
)
from csd.losses.fused import fused_linear_loss_with

LOSSES: Dict[str, Type[Objective]] = {
    cls.name: cls
    for cls in (CSD, DLD, ForwardKL, ReverseKL, SymmetricKL, Jeffreys, TotalVariation, JensenShannon,
                SkewedForwardKL, SkewedReverseKL, AlphaBeta)
}


def loss_options(name: str) -> Dict[str, object]:
    """Keyword arguments an objective accepts, with their defaults."""
    return {f.name: f.default for f in dataclasses.fields(_lookup(name))}


def _lookup(name: str) -> Type[Objective]:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


def get_loss(name: str, **kwargs) -> Objective:
    """The objective ``name`` with its paper defaults overridden by ``kwargs``; see :data:`LOSSES`."""
    cls = _lookup(name)
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"loss {name!r} got unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return cls(**kwargs)


def fused_linear_loss(name: str, student_hidden: Tensor, student_head_weight: Tensor, teacher_hidden: Tensor,
                      teacher_head_weight: Tensor, labels: Tensor, chunk_size: Optional[int] = None,
                      reduction: str = "mean", weights: Optional[Tensor] = None, **kwargs) -> Tensor:
    """``get_loss(name, **kwargs)`` on ``hidden @ weight.T`` logits, computed chunk by chunk over tokens.

    Hidden states are (N, H) / (N, H_t), head weights (V, H) / (V, H_t), labels (N,).  Same value and
    gradients (w.r.t. the student hidden states and head weight) as the unfused loss.
    """
    return fused_linear_loss_with(get_loss(name, **kwargs), student_hidden, student_head_weight, teacher_hidden,
                                  teacher_head_weight, labels, chunk_size=chunk_size, reduction=reduction,
                                  weights=weights)


__all__ = ["LOSSES", "IGNORE_INDEX", "Objective", "get_loss", "fused_linear_loss", "loss_options", "CSD", "DLD"]

"""Baseline divergences between the teacher distribution p_T = softmax(t) and the student's p_S = softmax(s).

Defaults follow DistiLLM and the paper.  The value reported is the divergence itself (zero when the student
matches the teacher); DistiLLM reports the cross-entropy form for ``fkl`` and ``sfkl``, which differs only by
the teacher entropy (a constant), so the gradients are identical.  Gradients come from autograd on each chunk.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Optional, Tuple

import torch
from torch import Tensor

from csd.losses.base import Objective


def log_probs(logits: Tensor, valid: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """(p, log p) with entries outside ``valid`` excluded: p = 0 and log p = 0 there (finite gradients)."""
    if valid is None:
        logp = torch.log_softmax(logits, dim=-1)
        return logp.exp(), logp
    logp = torch.log_softmax(logits.masked_fill(~valid, float("-inf")), dim=-1)
    logp = torch.where(valid, logp, 0.0)
    return torch.where(valid, logp.exp(), 0.0), logp


def kl(p: Tensor, logp: Tensor, logq: Tensor) -> Tensor:
    """KL(p‖q) = Σ p (log p − log q) per row."""
    return (p * (logp - logq)).sum(-1)


def log_mixture(weight_p: float, logp: Tensor, logq: Tensor, valid: Optional[Tensor]) -> Tensor:
    """log(w·p + (1 − w)·q), computed stably from log-probabilities."""
    mixed = torch.logaddexp(logp + math.log(weight_p), logq + math.log(1.0 - weight_p))
    return mixed if valid is None else torch.where(valid, mixed, 0.0)


def _check_unit(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {value}")


@dataclasses.dataclass
class ForwardKL(Objective):
    """KL(p_T ‖ p_S) (mean-seeking)."""

    name: ClassVar[str] = "fkl"

    def per_token(self, student, teacher, valid):
        p_t, logp_t = log_probs(teacher, valid)
        _, logp_s = log_probs(student, valid)
        return kl(p_t, logp_t, logp_s)


@dataclasses.dataclass
class ReverseKL(Objective):
    """KL(p_S ‖ p_T) (mode-seeking)."""

    name: ClassVar[str] = "rkl"

    def per_token(self, student, teacher, valid):
        _, logp_t = log_probs(teacher, valid)
        p_s, logp_s = log_probs(student, valid)
        return kl(p_s, logp_s, logp_t)


@dataclasses.dataclass
class SymmetricKL(Objective):
    """(1 − λ)·KL(p_T‖p_S) + λ·KL(p_S‖p_T), λ = 0.9 (DistiLLM's symmetric KL)."""

    name: ClassVar[str] = "sym_kl"
    lam: float = 0.9

    def __post_init__(self):
        _check_unit("sym_kl lam", self.lam)

    def per_token(self, student, teacher, valid):
        p_t, logp_t = log_probs(teacher, valid)
        p_s, logp_s = log_probs(student, valid)
        return (1.0 - self.lam) * kl(p_t, logp_t, logp_s) + self.lam * kl(p_s, logp_s, logp_t)


@dataclasses.dataclass
class Jeffreys(Objective):
    """Jeffreys divergence KL(p_T‖p_S) + KL(p_S‖p_T)."""

    name: ClassVar[str] = "jeffreys"

    def per_token(self, student, teacher, valid):
        p_t, logp_t = log_probs(teacher, valid)
        p_s, logp_s = log_probs(student, valid)
        return kl(p_t, logp_t, logp_s) + kl(p_s, logp_s, logp_t)


@dataclasses.dataclass
class TotalVariation(Objective):
    """½ Σ |p_T − p_S|."""

    name: ClassVar[str] = "tvd"

    def per_token(self, student, teacher, valid):
        p_t, _ = log_probs(teacher, valid)
        p_s, _ = log_probs(student, valid)
        return 0.5 * (p_t - p_s).abs().sum(-1)


@dataclasses.dataclass
class JensenShannon(Objective):
    """Generalised JS: m = (1 − λ)p_T + λ p_S,  λ·KL(p_S‖m) + (1 − λ)·KL(p_T‖m), λ = 0.9 (DistiLLM)."""

    name: ClassVar[str] = "js"
    lam: float = 0.9

    def __post_init__(self):
        _check_unit("js lam", self.lam)

    def per_token(self, student, teacher, valid):
        p_t, logp_t = log_probs(teacher, valid)
        p_s, logp_s = log_probs(student, valid)
        log_m = log_mixture(1.0 - self.lam, logp_t, logp_s, valid)
        return self.lam * kl(p_s, logp_s, log_m) + (1.0 - self.lam) * kl(p_t, logp_t, log_m)

    def value_and_grad(self, student, teacher, valid):
        """Closed form, one pass fewer than autograd: with r = log p_S − log m, ∂L/∂p_S = λ·r (the terms from
        m cancel), so ∂L/∂s = λ·p_S ⊙ (r − E_{p_S} r)."""
        p_t, logp_t = log_probs(teacher, valid)
        p_s, logp_s = log_probs(student, valid)
        log_m = log_mixture(1.0 - self.lam, logp_t, logp_s, valid)
        ratio = logp_s - log_m
        student_term = (p_s * ratio).sum(-1)
        loss = self.lam * student_term + (1.0 - self.lam) * kl(p_t, logp_t, log_m)
        grad = (self.lam * p_s) * (ratio - student_term[:, None])
        return loss, grad


@dataclasses.dataclass
class SkewedForwardKL(Objective):
    """Skew KL (DistiLLM): KL(p_T ‖ λ p_T + (1 − λ) p_S), λ = 0.1."""

    name: ClassVar[str] = "sfkl"
    lam: float = 0.1

    def __post_init__(self):
        _check_unit("sfkl lam", self.lam)

    def per_token(self, student, teacher, valid):
        p_t, logp_t = log_probs(teacher, valid)
        _, logp_s = log_probs(student, valid)
        return kl(p_t, logp_t, log_mixture(self.lam, logp_t, logp_s, valid))


@dataclasses.dataclass
class SkewedReverseKL(Objective):
    """Skew reverse KL (DistiLLM): KL(p_S ‖ (1 − λ) p_T + λ p_S), λ = 0.1."""

    name: ClassVar[str] = "srkl"
    lam: float = 0.1

    def __post_init__(self):
        _check_unit("srkl lam", self.lam)

    def per_token(self, student, teacher, valid):
        _, logp_t = log_probs(teacher, valid)
        p_s, logp_s = log_probs(student, valid)
        return kl(p_s, logp_s, log_mixture(1.0 - self.lam, logp_t, logp_s, valid))


@dataclasses.dataclass
class AlphaBeta(Objective):
    """AB-divergence (Cichocki et al.; ABKD), p = p_T, q = p_S, α = 0.2, β = 0.7:

        −1/(αβ) · Σ_k [p^α q^β − α/(α+β) p^(α+β) − β/(α+β) q^(α+β)]

    Powers are taken as exp(γ·log p) so that vanishing probabilities keep finite gradients.
    """

    name: ClassVar[str] = "ab"
    alpha: float = 0.2
    beta: float = 0.7

    def __post_init__(self):
        if self.alpha <= 0 or self.beta <= 0:
            raise ValueError(f"ab needs alpha > 0 and beta > 0, got alpha={self.alpha}, beta={self.beta}")

    def per_token(self, student, teacher, valid):
        _, logp = log_probs(teacher, valid)
        _, logq = log_probs(student, valid)
        a, b = self.alpha, self.beta
        terms = (a * logp + b * logq).exp() - a / (a + b) * ((a + b) * logp).exp() - b / (a + b) * ((a + b) * logq).exp()
        if valid is not None:
            terms = torch.where(valid, terms, 0.0)
        return -terms.sum(-1) / (a * b)

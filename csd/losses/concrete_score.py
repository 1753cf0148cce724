"""Concrete Score Distillation and the direct-logit-distillation (DLD) ablation of Table 5."""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional, Tuple

import torch
from torch import Tensor

from csd.losses.base import Objective

WEIGHT_LETTERS = {
    "U": "uniform 1/V",
    "S": "softmax(student / temperature)",
    "T": "softmax(teacher / temperature)",
    "M": "mix_alpha * T + (1 - mix_alpha) * S",
}
# "no" is the release's spelling of "none" (its own "none" default is an error: a normalisation must be named).
NORMALIZATIONS = ("none", "no", "mean", "min", "max", "std", "range")
# The release's stabiliser, added to the denominators of `std` and `range` (not a clamp).
NORMALIZE_EPS = 1e-9


def masked_softmax(logits: Tensor, valid: Optional[Tensor]) -> Tensor:
    if valid is None:
        return torch.softmax(logits, dim=-1)
    return torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=-1)


def uniform(like: Tensor, valid: Optional[Tensor]) -> Tensor:
    if valid is None:
        return torch.full_like(like, 1.0 / like.shape[-1])
    valid = valid.to(like.dtype)
    return valid / valid.sum(-1, keepdim=True).clamp_min(1.0)


def weights(letter: str, student: Tensor, teacher: Tensor, valid: Optional[Tensor], temperature: float, mix_alpha: float) -> Tensor:
    """The (constant) weight distribution named by ``letter``; see :data:`WEIGHT_LETTERS`."""
    if letter == "U":
        return uniform(student, valid)
    if letter == "S":
        return masked_softmax(student / temperature, valid)
    if letter == "T":
        return masked_softmax(teacher / temperature, valid)
    teacher_probs = masked_softmax(teacher / temperature, valid)
    student_probs = masked_softmax(student / temperature, valid)
    return mix_alpha * teacher_probs + (1.0 - mix_alpha) * student_probs


@dataclasses.dataclass
class CSD(Objective):
    r"""Concrete Score Distillation (Kim et al., ICLR 2026), per token

        L = 1/4 · Σ_y Σ_x a(y) b(x) ((s[x] − s[y]) − (t[x] − t[y]))²

    with s, t the student and teacher logits and a, b constant weights (``weighting`` = "ab", letters from
    :data:`WEIGHT_LETTERS`; τ enters only the weights).  With d = s − t and E_w d = Σ_x w(x) d[x] the double
    sum has the O(V) closed form

        L = 1/4 · [Var_a(d) + Var_b(d) + (E_a d − E_b d)²]        (SS: L = ½ Var_p(d))
        ∂L/∂s[x] = ½ · [b(x)(d[x] − E_a d) + a(x)(d[x] − E_b d)]

    The gradient is the official release's surrogate gradient, so its learning rates carry over; unlike the
    surrogate, the value reported here is the objective itself.  Shift invariant in s and in t.
    """

    name: ClassVar[str] = "csd"
    temperature: float = 1.0
    weighting: str = "SS"
    mix_alpha: float = 0.15

    def __post_init__(self):
        if not isinstance(self.weighting, str) or len(self.weighting) != 2 or any(c not in WEIGHT_LETTERS for c in self.weighting):
            raise ValueError(
                f"csd weighting must be two letters from U, S, T, M (got {self.weighting!r}); "
                + "; ".join(f"{k} = {v}" for k, v in WEIGHT_LETTERS.items())
            )
        if self.temperature <= 0:
            raise ValueError(f"csd temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.mix_alpha <= 1.0:
            raise ValueError(f"csd mix_alpha must lie in [0, 1], got {self.mix_alpha}")

    def value_and_grad(self, student: Tensor, teacher: Tensor, valid: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        # Written to keep (n, V) temporaries few: in-place updates and vecdot reductions.
        a_letter, b_letter = self.weighting
        a = weights(a_letter, student, teacher, valid, self.temperature, self.mix_alpha)
        diff = student - teacher  # entries outside `valid` were zeroed by the engine and carry zero weight
        if a_letter == b_letter:
            centred = diff.sub_(torch.linalg.vecdot(a, diff).unsqueeze(-1))
            grad = a.mul_(centred)
            return 0.5 * torch.linalg.vecdot(grad, centred), grad
        b = weights(b_letter, student, teacher, valid, self.temperature, self.mix_alpha)
        mean_a = torch.linalg.vecdot(a, diff).unsqueeze(-1)
        mean_b = torch.linalg.vecdot(b, diff).unsqueeze(-1)
        centred_a, centred_b = diff - mean_a, diff.sub_(mean_b)
        loss = 0.25 * (torch.linalg.vecdot(a, centred_a.square()) + torch.linalg.vecdot(b, centred_b.square())
                       + (mean_a - mean_b).squeeze(-1).square())
        grad = 0.5 * (b.mul_(centred_a) + a.mul_(centred_b))
        return loss, grad

    def per_token(self, student: Tensor, teacher: Tensor, valid: Optional[Tensor]) -> Tensor:
        return self.value_and_grad(student, teacher, valid)[0]


def normalize_logits(z: Tensor, how: str, valid: Optional[Tensor]) -> Tensor:
    """Per-row normalisation of Table 5 over the valid vocabulary entries (gradient flows through it).

    As in the release, each row of student and of teacher logits is normalised on its own:
    mean z − z̄; min z − min z; max z − max z; std (z − z̄)/(σ + 1e-9) with the unbiased σ (torch.std's
    default, divisor V − 1); range 2·(z − min z)/(max z − min z + 1e-9) − 1, onto [−1, 1].
    """
    if how in ("none", "no"):
        return z
    if valid is None:
        valid = torch.ones_like(z, dtype=torch.bool)
    count = valid.sum(-1, keepdim=True).clamp_min(1)
    mean = torch.where(valid, z, 0.0).sum(-1, keepdim=True) / count
    if how == "mean":
        return z - mean
    low = torch.where(valid, z, float("inf")).amin(-1, keepdim=True)
    high = torch.where(valid, z, float("-inf")).amax(-1, keepdim=True)
    if how == "min":
        return z - low
    if how == "max":
        return z - high
    if how == "std":  # unbiased (Bessel-corrected) standard deviation, as torch.std
        variance = torch.where(valid, z - mean, 0.0).square().sum(-1, keepdim=True) / (count - 1).clamp_min(1)
        return (z - mean) / (variance.sqrt() + NORMALIZE_EPS)
    return 2.0 * (z - low) / (high - low + NORMALIZE_EPS) - 1.0  # range, onto [-1, 1]


@dataclasses.dataclass
class DLD(Objective):
    r"""Direct logit distillation with weights (Table 5 ablation), per token

        L = Σ_x w(x) · (s′[x] − t′[x])² / 4

    w ∈ {S, T, U} (softmax(s/τ), softmax(t/τ), 1/V of the raw logits; held constant) and s′, t′ the logits after
    ``normalize`` ∈ {none (alias no), mean, min, max, std, range}, defined as in the release (see
    :func:`normalize_logits`; std uses the unbiased σ + 1e-9, range maps onto [−1, 1]).  Unlike CSD it is not shift
    invariant unless normalised.
    """

    name: ClassVar[str] = "dld"
    weight: str = "S"
    normalize: str = "none"
    temperature: float = 1.0

    def __post_init__(self):
        if self.weight not in ("S", "T", "U"):
            raise ValueError(f"dld weight must be one of S, T, U (got {self.weight!r})")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"dld normalize must be one of {', '.join(NORMALIZATIONS)} (got {self.normalize!r})")
        if self.temperature <= 0:
            raise ValueError(f"dld temperature must be > 0, got {self.temperature}")

    def per_token(self, student: Tensor, teacher: Tensor, valid: Optional[Tensor]) -> Tensor:
        w = weights(self.weight, student.detach(), teacher, valid, self.temperature, 0.0)
        gap = normalize_logits(student, self.normalize, valid) - normalize_logits(teacher, self.normalize, valid)
        if valid is not None:
            gap = torch.where(valid, gap, 0.0)
        return 0.25 * (w * gap.square()).sum(-1)

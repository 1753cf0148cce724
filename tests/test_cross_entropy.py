"""Chunked cross-entropy (csd/losses/cross_entropy.py) and the fused head with the hard loss mixed in, against
float64 implementations written from the definitions: CE(z, y) = log Σ_v exp z_v − z_y."""
from __future__ import annotations

import pytest
import torch

from csd.losses import get_loss
from csd.losses.cross_entropy import chunked_cross_entropy
from csd.losses.fused import fused_linear_loss_with

IGNORE = -100


def reference_ce(logits: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
    """float64, straight from the definition (no log_softmax, no F.cross_entropy)."""
    z = logits.double()
    kept = targets != IGNORE
    rows, labels = z[kept], targets[kept]
    per_token = torch.log(torch.exp(rows).sum(-1)) - rows[torch.arange(len(labels)), labels]
    return per_token.sum() if reduction == "sum" else per_token.mean()


def example(dtype=torch.float32, vocab=37, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, vocab, generator=generator) * 3
    targets = torch.randint(0, vocab, (3, 5), generator=generator)
    targets[0, :2] = IGNORE
    targets[2, 4] = IGNORE
    return logits.to(dtype), targets


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("chunk_size", [None, 2, 5])
def test_value_and_gradient_match_the_definition(reduction, chunk_size):
    logits, targets = example()
    ours_input = logits.clone().requires_grad_(True)
    ours = chunked_cross_entropy(ours_input, targets, reduction=reduction, chunk_size=chunk_size)
    ours.backward()
    reference_input = logits.double().requires_grad_(True)
    expected = reference_ce(reference_input, targets, reduction)
    expected.backward()
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(ours_input.grad.double(), reference_input.grad, rtol=1e-5, atol=1e-7)
    assert torch.all(ours_input.grad[targets == IGNORE] == 0)


def test_bf16_logits_are_computed_in_float32_and_keep_a_bf16_gradient():
    logits, targets = example(torch.bfloat16)
    logits.requires_grad_(True)
    ours = chunked_cross_entropy(logits, targets)
    ours.backward()
    assert ours.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
    assert ours.item() == pytest.approx(reference_ce(logits.detach(), targets, "mean").item(), rel=1e-6)


def test_padded_vocabulary_entries_get_no_probability():
    logits, targets = example()
    logits[..., -3:] = float("-inf")
    targets[targets >= logits.shape[-1] - 3] = 0
    ours_input = logits.clone().requires_grad_(True)
    chunked_cross_entropy(ours_input, targets).backward()
    expected = reference_ce(logits[..., :-3], targets, "mean")
    assert chunked_cross_entropy(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.all(ours_input.grad[..., -3:] == 0)


def test_without_gradient_no_graph_is_built():
    logits, targets = example()
    assert chunked_cross_entropy(logits, targets).grad_fn is None or not logits.requires_grad
    with torch.no_grad():
        value = chunked_cross_entropy(logits.requires_grad_(True), targets)
    assert value.grad_fn is None


def test_shape_errors_name_both_shapes():
    logits, targets = example()
    with pytest.raises(ValueError, match=r"targets \(3, 4\).*\(3, 5, 37\)"):
        chunked_cross_entropy(logits, targets[:, :4])


@pytest.mark.parametrize("kd_weight, ce_weight", [(1.0, 0.0), (0.5, 0.5), (0.0, 1.0), (0.3, 2.0)])
def test_fused_head_with_cross_entropy_equals_the_unfused_mixture(kd_weight, ce_weight):
    """kd_weight · objective(h W^T) + ce_weight · CE(h W^T): value, parts and gradients (hidden, head)."""
    generator = torch.Generator().manual_seed(1)
    tokens, hidden, teacher_hidden, vocab = 11, 8, 6, 29
    student_hidden = torch.randn(tokens, hidden, generator=generator, dtype=torch.float64)
    head = torch.randn(vocab, hidden, generator=generator, dtype=torch.float64) * 0.5
    teacher_states = torch.randn(tokens, teacher_hidden, generator=generator, dtype=torch.float64)
    teacher_head = torch.randn(vocab, teacher_hidden, generator=generator, dtype=torch.float64) * 0.5
    labels = torch.randint(0, vocab, (tokens,), generator=generator)
    labels[3] = IGNORE
    objective = get_loss("csd", weighting="TS")

    h1, w1 = student_hidden.clone().requires_grad_(True), head.clone().requires_grad_(True)
    parts = {}
    fused = fused_linear_loss_with(objective, h1, w1, teacher_states, teacher_head, labels, chunk_size=4,
                                   reduction="sum", kd_weight=kd_weight, ce_weight=ce_weight, parts=parts)
    fused.backward()

    h2, w2 = student_hidden.clone().requires_grad_(True), head.clone().requires_grad_(True)
    logits = (h2 @ w2.T)[None]
    kd = objective(logits, (teacher_states @ teacher_head.T)[None], labels[None], reduction="sum")
    ce = reference_ce(logits, labels[None], "sum")
    (kd_weight * kd + ce_weight * ce).backward()

    assert fused.item() == pytest.approx((kd_weight * kd + ce_weight * ce).item(), rel=1e-9)
    assert parts["kd"].item() == pytest.approx(kd.item(), rel=1e-9)
    assert parts["ce"].item() == pytest.approx(ce.item(), rel=1e-9)
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-9, atol=1e-12)

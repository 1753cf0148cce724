"""loss.compile=true: the torch.compile'd chunk function gives the eager values and gradients, across chunk lengths."""
from __future__ import annotations

import pytest
import torch

from csd.losses import fused_linear_loss, get_loss


@pytest.mark.parametrize("name", ["js", "csd"])
def test_compiled_chunks_equal_eager(name):
    generator = torch.Generator().manual_seed(0)
    tokens, hidden, vocab = 23, 8, 50
    student_hidden = torch.randn(tokens, hidden, generator=generator)
    head = torch.randn(vocab, hidden, generator=generator) * 0.3
    teacher_hidden = torch.randn(tokens, hidden, generator=generator)
    teacher_head = torch.randn(vocab, hidden, generator=generator) * 0.3
    labels = torch.randint(0, vocab, (tokens,), generator=generator)
    labels[::5] = -100
    results = []
    for compile_ in (False, True):
        h, w = student_hidden.clone().requires_grad_(True), head.clone().requires_grad_(True)
        # chunk 7 over 18 kept rows: lengths 7, 7, 4 — one dynamic graph must serve both
        loss = fused_linear_loss(name, h, w, teacher_hidden, teacher_head, labels, chunk_size=7, compile=compile_)
        loss.backward()
        results.append((loss.detach(), h.grad, w.grad))
    (eager_loss, eager_h, eager_w), (compiled_loss, compiled_h, compiled_w) = results
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(compiled_h, eager_h, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(compiled_w, eager_w, rtol=1e-4, atol=1e-7)
    assert get_loss(name, compile=True).compiled_value_and_grad() is not get_loss(name).value_and_grad

"""The logits path computes the head at the target positions only (csd.step.logits_at_rows): the same numbers as
the whole model's logits at those positions, softcapping included, and the model's own forward for any head that
is not plain (csd.models.PLAIN_HEADS)."""
import contextlib

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma2Config, MistralConfig

import csd.models
from csd.step import logits_at_rows
from csd.testing import make_tiny_model, make_tiny_tokenizer


def tiny(arch: str, tokenizer):
    if arch in ("llama", "gpt2"):
        return make_tiny_model(tokenizer, arch=arch, seed=3)
    torch.manual_seed(3)
    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=16)
    if arch == "gemma2":  # a soft-capped head, the cap small enough that tanh bends every logit
        config = Gemma2Config(**common, final_logit_softcapping=0.5, tie_word_embeddings=True)
    else:
        config = MistralConfig(**common, tie_word_embeddings=False)
    return AutoModelForCausalLM.from_config(config)


@pytest.fixture(autouse=True)
def one_process(monkeypatch):  # no accelerator: ZeRO-3's gathering is a no-op on one process
    monkeypatch.setattr("csd.step.gathered_under_zero3", lambda accelerator, *parameters: contextlib.nullcontext())


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def batch_and_rows():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 60, (3, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0  # a padded row
    rows = torch.zeros(3, 9, dtype=torch.bool)
    rows[0, 4:8], rows[1, 2:5], rows[2, 7] = True, True, True
    return {"input_ids": input_ids, "attention_mask": attention_mask}, rows


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2", "mistral"])
def test_rows_equal_the_whole_models_logits_at_those_rows(arch, tokenizer, monkeypatch):
    model = tiny(arch, tokenizer).eval()
    inputs, rows = batch_and_rows()
    with torch.no_grad():
        whole = model(**inputs, use_cache=False).logits
        got, head = logits_at_rows(model, model, inputs, rows, None, None)
    assert head is model.get_output_embeddings().weight  # plain: the head ran on the rows, outside the forward
    assert got.shape == (1, int(rows.sum()), whole.shape[-1])
    torch.testing.assert_close(got[0], whole[rows], rtol=1e-5, atol=1e-6)
    if arch == "gemma2":  # the cap is applied: every logit inside (-0.5, 0.5)
        assert got.abs().max() < 0.5


def test_rows_slice_the_vocabulary_and_carry_the_gradient(tokenizer, monkeypatch):
    model = tiny("llama", tokenizer)
    inputs, rows = batch_and_rows()
    got, head = logits_at_rows(model, model, inputs, rows, 40, None)
    assert got.shape[-1] == 40
    got.square().sum().backward()
    expected = model(**inputs, use_cache=False).logits[rows][..., :40]
    grads = torch.autograd.grad(expected.square().sum(), head)[0]
    torch.testing.assert_close(head.grad, grads, rtol=1e-5, atol=1e-7)


def test_a_head_that_is_not_plain_runs_in_the_models_forward(tokenizer, monkeypatch):
    model = tiny("llama", tokenizer).eval()
    monkeypatch.setattr(csd.models, "PLAIN_HEADS", frozenset())
    called = []
    monkeypatch.setattr("csd.step.hidden_states_before_head", lambda *a: called.append(a))
    inputs, rows = batch_and_rows()
    with torch.no_grad():
        got, head = logits_at_rows(model, model, inputs, rows, None, None)
        whole = model(**inputs, use_cache=False).logits
    assert head is None and not called
    torch.testing.assert_close(got[0], whole[rows])


def test_a_head_with_a_bias_is_not_plain(tokenizer):
    model = tiny("llama", tokenizer)
    assert csd.models.plain_head(model)
    model.lm_head.bias = torch.nn.Parameter(torch.zeros(model.lm_head.out_features))
    assert not csd.models.plain_head(model)

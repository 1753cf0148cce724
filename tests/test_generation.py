"""Generation: response masks, left padding, seeding, stop strings, training-mode restore."""
import pytest
import torch

from csd.data import PromptCollator
from csd.generation import (cut_at_stop_strings, first_eos_mask, generate, sample_batch,
                            training_batch_from_samples)
from csd.testing import make_tiny_model, make_tiny_tokenizer

PROMPTS = ["Q: hi there", "A much longer prompt about the quick brown fox and the lazy dog", "x"]


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request, tokenizer):
    return make_tiny_model(tokenizer, arch=request.param)


def test_first_eos_mask_by_hand():
    generated = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 9, 9, 9]])
    assert first_eos_mask(generated, [2]).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert first_eos_mask(generated, [7, 2]).tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]]


def test_sample_batch_mask_stops_at_chosen_eos(model, tokenizer):
    batch = PromptCollator(tokenizer)(PROMPTS[:2])
    sequences, _ = sample_batch(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=6,
                                do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    # declare row 0's third greedy token to be EOS: greedy decoding then stops right there
    fake_eos = int(sequences[0, width + 2])
    first = (sequences[0, width:] == fake_eos).nonzero()[0].item()
    sequences, mask = sample_batch(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=6,
                                   do_sample=False, eos_token_id=[fake_eos], pad_token_id=tokenizer.pad_token_id)
    assert mask.shape == sequences.shape
    assert mask[:, :width].sum() == 0                       # prompt block is never a response token
    assert mask[0, width:].tolist()[: first + 2] == [1] * (first + 1) + [0]
    assert sequences[0, width + first] == fake_eos


def test_left_padding_does_not_change_greedy_output(model, tokenizer):
    alone = generate(model, tokenizer, [PROMPTS[0]], max_new_tokens=8, do_sample=False, progress=False)
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=8, do_sample=False, batch_size=3,
                       progress=False)
    assert batched[0] == alone[0]


def test_seeded_sampling_is_reproducible_and_mode_restored(model, tokenizer):
    model.train()
    first = generate(model, tokenizer, PROMPTS, max_new_tokens=8, do_sample=True, seed=10, batch_size=2,
                     progress=False)
    again = generate(model, tokenizer, PROMPTS, max_new_tokens=8, do_sample=True, seed=10, batch_size=2,
                     progress=False)
    other = generate(model, tokenizer, PROMPTS, max_new_tokens=8, do_sample=True, seed=20, batch_size=2,
                     progress=False)
    assert first == again and first != other
    assert model.training
    model.eval()


def test_cut_at_stop_strings():
    assert cut_at_stop_strings("line one\n\nline two", ["\n\n"]) == "line one"
    assert cut_at_stop_strings("a\nuser b\nc", ["\nuser", "\n"]) == "a"
    assert cut_at_stop_strings("no stop", None) == "no stop"


def test_training_batch_from_samples_by_hand():
    pad = 0
    sequences = torch.tensor([[0, 4, 5, 6, 7, 2], [3, 4, 5, 8, 2, 0]])
    prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    response_mask = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0]])
    batch = training_batch_from_samples(sequences, prompt_mask, response_mask, pad)
    assert batch["input_ids"].tolist() == [[4, 5, 6, 7, 2], [3, 4, 5, 8, 2]]
    assert batch["labels"].tolist() == [[-100, -100, 6, 7, 2], [-100, -100, -100, 8, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]


def repeated_ngrams(ids, n):
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) - len(set(grams))


def test_no_repeat_ngram_size_blocks_repeats_in_prompt_and_response(model, tokenizer):
    """HF semantics (MiniLLM's evaluation): no n-gram occurs twice in prompt + response."""
    batch = PromptCollator(tokenizer)([PROMPTS[0]])   # one prompt: no padding in the sequence
    settings = dict(max_new_tokens=24, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id)
    free, _ = sample_batch(model, batch["input_ids"], batch["attention_mask"], **settings)
    assert repeated_ngrams(free[0].tolist(), 3) > 0, "the tiny model must loop without blocking for this test to bite"
    blocked, _ = sample_batch(model, batch["input_ids"], batch["attention_mask"], no_repeat_ngram_size=3, **settings)
    assert repeated_ngrams(blocked[0].tolist(), 3) == 0


def test_generate_passes_no_repeat_ngram_size_to_hf(model, tokenizer, monkeypatch):
    seen = []
    real_generate = model.generate

    def spy(*args, generation_config, **kwargs):
        seen.append(generation_config.no_repeat_ngram_size)
        return real_generate(*args, generation_config=generation_config, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    generate(model, tokenizer, PROMPTS, max_new_tokens=4, do_sample=True, seed=10, batch_size=2,
             no_repeat_ngram_size=6, progress=False)
    generate(model, tokenizer, PROMPTS[:1], max_new_tokens=4, do_sample=False, progress=False)
    assert seen == [6, 6, 0]

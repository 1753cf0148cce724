"""The student's own responses to a micro-batch's prompts, as training rows.

    sampler = StudentSampler(train_set, tokenizer, accelerator, max_new_tokens=256, seed=10)
    rows = sampler(indices, student)   # [{"input_ids": prompt + response, "labels": -100 on prompt + response}]

Generation is `csd.generation.sample_batch`: the unwrapped student in eval mode, no grad, KV cache, prompts
left-padded, stop at EOS, sampling = softmax(logits / temperature) then top-k (0 = off) then top-p (1 = off).
A row keeps its response up to and including the first EOS; tokens sampled after it (HF pads finished rows,
and a row may run on after an EOS) are dropped, so they become right padding with label −100.

Under multi-process ZeRO-3 every process keeps stepping until the last one has finished (``synced_gpus``):
each forward gathers the partitioned weights collectively.

Reproducibility: call n on process r samples under `torch.manual_seed(f(seed, n, r))` inside a forked RNG, so
the samples depend only on (train.seed, call number, process) — a resumed run draws the same responses — and
the training RNG stream (dropout) is the same as without sampling.
"""
from __future__ import annotations

from typing import Optional

import torch

from csd.data import PromptCollator, pad_token_id_of, response_end_ids
from csd.distributed import synced_generation
from csd.generation import eos_token_ids, eval_mode, sample_batch, seeded_rng, training_batch_from_samples


def sampling_seed(seed: int, call: int, process: int) -> int:
    """A distinct 63-bit seed per (run seed, call, process)."""
    return ((int(seed) * 1_000_003 + int(call)) * 10_007 + int(process)) % (2**63 - 1)


def rows_of(batch: dict) -> list[dict]:
    """A right-padded batch -> unpadded rows (CPU int lists) for the buffer or the collator."""
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    return [{"input_ids": batch["input_ids"][row, :length].tolist(), "labels": batch["labels"][row, :length].tolist()}
            for row, length in enumerate(lengths)]


class StudentSampler:
    def __init__(self, train_set, tokenizer, accelerator, *, max_new_tokens: int, max_prompt_length: Optional[int] = None,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                 prompt_format: str = "minillm"):
        self.train_set, self.tokenizer, self.accelerator = train_set, tokenizer, accelerator
        self.prompts = PromptCollator(tokenizer, max_prompt_length)
        self.pad_token_id = pad_token_id_of(tokenizer)
        self.max_new_tokens, self.temperature, self.top_k, self.top_p = int(max_new_tokens), temperature, top_k, top_p
        self.seed = seed
        # Chat responses end with the template's turn-end token (e.g. <|im_end|>): stop there as well as at EOS.
        self.extra_stop_ids = response_end_ids(tokenizer, prompt_format)[:1]
        self.calls = 0

    def stop_ids(self, model) -> list[int]:
        ids = eos_token_ids(model, self.tokenizer)
        return ids + [i for i in self.extra_stop_ids if i not in ids]

    def __call__(self, indices: torch.Tensor, student) -> list[dict]:
        model = self.accelerator.unwrap_model(student)
        device = self.accelerator.device
        prompts = self.prompts([self.train_set[int(i)] for i in indices])
        input_ids, attention_mask = prompts["input_ids"].to(device), prompts["attention_mask"].to(device)
        with seeded_rng(sampling_seed(self.seed, self.calls, self.accelerator.process_index), device), eval_mode(model):
            sequences, response_mask = sample_batch(
                model, input_ids, attention_mask, max_new_tokens=self.max_new_tokens, do_sample=True,
                temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, eos_token_id=self.stop_ids(model),
                pad_token_id=self.pad_token_id, synced_gpus=synced_generation(self.accelerator))
        self.calls += 1
        batch = training_batch_from_samples(sequences, attention_mask, response_mask, self.pad_token_id)
        return rows_of({k: v.cpu() for k, v in batch.items()})

"""Tokenisation and batching for training (right padding) and generation (left padding).

Layout of one training example (MiniLLM / DistiLLM):
    input_ids = prompt_ids[:max_prompt_length] + response_ids + end_ids, cut to max_length
    labels    = -100 on prompt positions, = input_ids on response and end positions
With truncate_prompt="end" (chat pairs, Table 4) long examples are cut as TRL's DPOTrainer (the release's chat
trainer) cuts them instead: see encode_example.
Labels are aligned with input_ids (HF convention); the trainer compares logits[:, :-1]
with labels[:, 1:]. The prompt is tokenised without special tokens, except that a BOS is
kept in front when the tokenizer would add one (Llama, Gemma). `end_ids` is [eos] by
default; chat data ends with the template's turn-end token instead (e.g. <|im_end|>).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from csd.data.loading import load_examples
from csd.data.prompts import chat_turn_end
from csd.data.sources import as_plain_dict
from csd.constants import IGNORE_INDEX

log = logging.getLogger(__name__)


def tokenizer_adds_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return len(ids) > 0 and ids[0] == bos


def encode_prompt(tokenizer, prompt: str, max_prompt_length: int | None = None) -> list[int]:
    """Prompt ids without special tokens, BOS kept in front when the tokenizer adds one."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if tokenizer_adds_bos(tokenizer) and (not ids or ids[0] != tokenizer.bos_token_id):
        ids = [tokenizer.bos_token_id] + ids
    return ids[:max_prompt_length] if max_prompt_length else ids


def response_end_ids(tokenizer, prompt_format: str = "minillm") -> list[int]:
    """Tokens appended after a response: the chat turn-end token for chat data, else EOS."""
    if prompt_format == "chat" and getattr(tokenizer, "chat_template", None):
        turn_end = chat_turn_end(tokenizer)
        if turn_end:
            return tokenizer(turn_end, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos_token; cannot terminate responses")
    return [tokenizer.eos_token_id]


TRUNCATE_PROMPT = ("start", "end")


def response_ids_after(tokenizer, prompt: str, prompt_ids: Sequence[int], response: str,
                       end_ids: Sequence[int] | None = None) -> list[int]:
    """Token ids of ``response`` following ``prompt`` (whose ids are ``prompt_ids``), then ``end_ids`` (default EOS).

    MiniLLM tokenises prompt+response jointly and slices off the prompt; the response is tokenised alone if the
    joint tokenisation changed the prompt boundary."""
    joint = encode_prompt(tokenizer, prompt + response)
    if joint[:len(prompt_ids)] == list(prompt_ids):
        ids = joint[len(prompt_ids):]
    else:
        ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return ids + list(end_ids if end_ids is not None else [tokenizer.eos_token_id])


def encode_example(tokenizer, prompt: str, response: str, max_length: int, max_prompt_length: int,
                   end_ids: Sequence[int] | None = None, truncate_prompt: str = "start",
                   longest_response: int = 0) -> dict:
    """-> {"input_ids", "labels", "prompt_length"} (lists), see the module docstring.

    truncate_prompt="start" (MiniLLM/DistiLLM): the prompt keeps its first max_prompt_length tokens, the whole
    example its first max_length. truncate_prompt="end" (TRL 0.9 DPOTrainer.tokenize_row, the release's Table 4
    trainer): only when prompt + the longer response of the pair (``longest_response`` tokens, end tokens included;
    at least this response) exceed max_length, the prompt keeps its LAST max_prompt_length tokens (a leading BOS
    goes too, as there); if that is still too long, the response keeps its first max_length - max_prompt_length."""
    if truncate_prompt not in TRUNCATE_PROMPT:
        raise ValueError(f"truncate_prompt={truncate_prompt!r}; choose one of {TRUNCATE_PROMPT}")
    full_prompt_ids = encode_prompt(tokenizer, prompt)
    response_ids = response_ids_after(tokenizer, prompt, full_prompt_ids, response, end_ids)
    if truncate_prompt == "start":
        prompt_ids = full_prompt_ids[:max_prompt_length]
    else:
        longer = max(longest_response, len(response_ids))
        prompt_ids = full_prompt_ids
        if len(prompt_ids) + longer > max_length:
            prompt_ids = prompt_ids[-max_prompt_length:]
        if len(prompt_ids) + longer > max_length:
            response_ids = response_ids[:max_length - max_prompt_length]
    input_ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    return {"input_ids": input_ids, "labels": labels, "prompt_length": min(len(prompt_ids), max_length)}


class EncodedDataset(Dataset):
    """A list of encoded examples (dicts of int lists) plus the source examples."""

    def __init__(self, encoded: list[dict], examples: list[dict]):
        self.encoded, self.examples = encoded, examples

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int) -> dict:
        return self.encoded[index]


def build_dataset(data_cfg: Any, split: str, tokenizer, max_length: int, max_prompt_length: int,
                  response_key: str = "response", max_examples: int | None = None) -> EncodedDataset:
    """Encoded examples of one split. `response_key` picks the target text (e.g.
    'student_response' for chat pairs). Prompts longer than max_prompt_length are cut to their
    first max_prompt_length tokens and the example kept, as DistiLLM's (and so the release's) Dolly
    processing does; with `drop_long_prompts: true` such examples are dropped instead, as MiniLLM's
    original processing did. With `truncate_prompt: end` (chat pairs) prompts are cut from the front only when
    prompt + the longer of the example's responses (teacher_response / student_response where both exist) exceed
    max_length, as TRL's DPOTrainer (encode_example); both rows of a pair are then cut alike. How many prompts
    are longer than max_prompt_length, and what was done with them, is logged."""
    cfg = as_plain_dict(data_cfg)
    examples = load_examples(cfg, split, tokenizer, max_examples=max_examples)
    end_ids = response_end_ids(tokenizer, cfg.get("prompt_format", "minillm"))
    drop = bool(cfg.get("drop_long_prompts"))
    truncate_prompt = cfg.get("truncate_prompt") or "start"
    kept, encoded, long_prompts = [], [], 0
    for example in examples:
        prompt_ids = encode_prompt(tokenizer, example["prompt"])
        if len(prompt_ids) > max_prompt_length:
            long_prompts += 1
            if drop:
                continue
        longest = 0
        if truncate_prompt == "end":  # TRL compares with the longer response of the pair
            longest = max(len(response_ids_after(tokenizer, example["prompt"], prompt_ids, example.get(key) or "",
                                                 end_ids)) for key in ("response", "teacher_response", "student_response")
                          if key in example)
        encoded.append(encode_example(tokenizer, example["prompt"], example.get(response_key) or "",
                                      max_length, max_prompt_length, end_ids=end_ids, truncate_prompt=truncate_prompt,
                                      longest_response=longest))
        kept.append(example)
    if long_prompts:
        action = "dropped" if drop else "truncated (start kept)" if truncate_prompt == "start" else \
            f"truncated (end kept) where prompt + longer response exceed {max_length}"
        log.info("%s/%s: %d of %d prompts are longer than %d tokens: %s", cfg.get("name"), split, long_prompts,
                 len(examples), max_prompt_length, action)
    return EncodedDataset(encoded, kept)


def pad_token_id_of(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


class TrainCollator:
    """Encoded examples -> right-padded LongTensors input_ids, attention_mask, labels (B, T); examples that carry
    ``teacher_hidden`` (csd/teacher_cache.py) also -> their concatenation (target positions, H)."""

    def __init__(self, pad_token_id: int, max_length: int | None = None):
        self.pad_token_id, self.max_length = pad_token_id, max_length

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        rows = [(ex["input_ids"][:self.max_length] if self.max_length else ex["input_ids"],
                 ex["labels"][:self.max_length] if self.max_length else ex["labels"]) for ex in batch]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for row, (ids, labs) in enumerate(rows):
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, :len(ids)] = 1
            labels[row, :len(labs)] = torch.tensor(labs, dtype=torch.long)
        collated = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if batch and "teacher_hidden" in batch[0]:  # examples read through a teacher cache: their rows in row order
            collated["teacher_hidden"] = torch.cat([ex["teacher_hidden"] for ex in batch])
        return collated


def left_pad(sequences: Sequence[Sequence[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    width = max((len(s) for s in sequences), default=0)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        if len(ids):
            input_ids[row, width - len(ids):] = torch.tensor(list(ids), dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


class PromptCollator:
    """Prompts -> LEFT-padded input_ids + attention_mask, for generation.

    Items may be prompt strings, token-id lists, or encoded examples (their first
    `prompt_length` input_ids). Prompts are cut to max_prompt_length (keeping the start,
    as MiniLLM does)."""

    def __init__(self, tokenizer, max_prompt_length: int | None = None, pad_token_id: int | None = None):
        self.tokenizer = tokenizer
        self.max_prompt_length = max_prompt_length
        self.pad_token_id = pad_token_id if pad_token_id is not None else pad_token_id_of(tokenizer)

    def prompt_ids(self, item) -> list[int]:
        if isinstance(item, str):
            ids = encode_prompt(self.tokenizer, item)
        elif isinstance(item, dict):
            ids = list(item["input_ids"][:item["prompt_length"]])
        else:
            ids = list(item)
        return ids[:self.max_prompt_length] if self.max_prompt_length else ids

    def __call__(self, items: Sequence) -> dict[str, torch.Tensor]:
        return left_pad([self.prompt_ids(item) for item in items], self.pad_token_id)

"""Batched generation: left-padded prompts, KV cache (HF `generate`), stop at EOS.

    texts = generate(model, tokenizer, prompts, max_new_tokens=256, do_sample=True, seed=10)
    sequences, response_mask = sample_batch(model, input_ids, attention_mask, max_new_tokens=...,
                                            eos_token_id=..., pad_token_id=...)
    batch = training_batch_from_samples(sequences, attention_mask, response_mask, pad_token_id)

Sampling is exactly "softmax(logits / temperature), then top-k (0 = off), then top-p
(1.0 = off)", optionally with no n-gram of size `no_repeat_ngram_size` repeated within the
sequence (prompt included, as HF applies it; 0 = off; MiniLLM/DistiLLM evaluate with 6). Every decoding
field of the GenerationConfig is set explicitly, because
transformers fills unset (None) fields from the checkpoint's generation_config.json
(e.g. Qwen ships top_k=20, repetition_penalty=1.05), which would silently change the
evaluation protocol. vLLM (`generate_vllm`) is an optional faster backend on GPU.
"""
from __future__ import annotations

import contextlib
from contextlib import contextmanager
from typing import Sequence

import torch

from csd.data.encoding import IGNORE_INDEX, PromptCollator, encode_prompt, pad_token_id_of


def eos_token_ids(model, tokenizer) -> list[int]:
    """EOS ids of the tokenizer and of the model's generation config (chat models list several)."""
    ids = []
    for value in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        for token in (value if isinstance(value, (list, tuple)) else [value]):
            if token is not None and token not in ids:
                ids.append(int(token))
    return ids


def decoding_config(*, max_new_tokens: int, do_sample: bool, temperature: float = 1.0, top_k: int = 0,
                    top_p: float = 1.0, no_repeat_ngram_size: int = 0, eos_token_id, pad_token_id: int,
                    model=None):
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=max_new_tokens, min_length=0, do_sample=do_sample, num_beams=1,
        num_return_sequences=1, repetition_penalty=1.0, no_repeat_ngram_size=int(no_repeat_ngram_size),
        length_penalty=1.0,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id, use_cache=True,
        return_dict_in_generate=False, output_scores=False)
    if do_sample:
        config.temperature, config.top_k, config.top_p = float(temperature), int(top_k), float(top_p)
        config.typical_p, config.epsilon_cutoff, config.eta_cutoff = 1.0, 0.0, 0.0
        if getattr(getattr(model, "generation_config", None), "min_p", None) is not None:
            config.min_p = 0.0  # a checkpoint default would otherwise be inherited
    # greedy: sampling fields are left unset; generate ignores them when do_sample=False
    return config


def first_eos_mask(generated: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    """1 on generated tokens up to and including the first EOS of each row, 0 after it."""
    is_eos = torch.isin(generated, torch.tensor(list(eos_ids), device=generated.device))
    eos_seen_before = (torch.cumsum(is_eos.long(), dim=1) - is_eos.long()) > 0
    return (~eos_seen_before).long()


@torch.no_grad()
def sample_batch(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
                 do_sample: bool = True, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 no_repeat_ngram_size: int = 0, eos_token_id, pad_token_id: int, stop_strings: Sequence[str] | None = None,
                 tokenizer=None, synced_gpus: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Continue left-padded prompts. Returns (sequences, response_mask), both (B, P + N):
    sequences = prompt block + generated block; response_mask = 1 only on generated tokens
    up to and including the first EOS. With stop strings a row that stopped on a string is
    padded afterwards; when the pad id is not an EOS id those trailing pads are masked too.
    ``synced_gpus``: keep stepping until every process is done (needed under multi-process ZeRO-3).
    """
    eos_ids = list(eos_token_id) if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]
    config = decoding_config(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                             top_k=top_k, top_p=top_p, no_repeat_ngram_size=no_repeat_ngram_size,
                             eos_token_id=eos_ids, pad_token_id=pad_token_id, model=model)
    extra = {"stop_strings": list(stop_strings), "tokenizer": tokenizer} if stop_strings else {}
    if synced_gpus:
        extra["synced_gpus"] = True
    sequences = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config, **extra)
    prompt_width = input_ids.shape[1]
    generated = sequences[:, prompt_width:]
    mask = first_eos_mask(generated, eos_ids)
    if stop_strings and pad_token_id not in eos_ids:
        not_pad = (generated != pad_token_id).long()
        last_real = not_pad.shape[1] - torch.argmax(not_pad.flip(1), dim=1)  # index after the last non-pad
        positions = torch.arange(generated.shape[1], device=generated.device)[None]
        mask = mask * (positions < last_real[:, None]).long()
    response_mask = torch.cat([torch.zeros_like(input_ids), mask], dim=1)
    return sequences, response_mask


def training_batch_from_samples(sequences: torch.Tensor, prompt_attention_mask: torch.Tensor,
                                response_mask: torch.Tensor, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Repack sampled rows as right-padded training rows [prompt ; response] (no inner
    padding, so default position ids are right), labels = response tokens, -100 elsewhere."""
    prompt_width = prompt_attention_mask.shape[1]
    rows = []
    for row in range(sequences.shape[0]):
        prompt = sequences[row, :prompt_width][prompt_attention_mask[row].bool()]
        response = sequences[row][response_mask[row].bool()]
        rows.append((prompt, response))
    width = max(len(p) + len(r) for p, r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long, device=sequences.device)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for row, (prompt, response) in enumerate(rows):
        length = len(prompt) + len(response)
        input_ids[row, :length] = torch.cat([prompt, response])
        attention_mask[row, :length] = 1
        labels[row, len(prompt):length] = response
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@contextmanager
def eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def seeded_rng(seed: int | None, device: torch.device):
    """Sample under ``torch.manual_seed(seed)`` in a forked RNG (CPU and ``device``'s CUDA generator), so that
    generation is reproducible and leaves the caller's random stream (e.g. training dropout) untouched."""
    if seed is None:
        yield
        return
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def autocast(precision: str | None, device: torch.device):
    """Mixed-precision autocast for ``precision`` in (bf16, fp16) on ``device``; none for None/"no"/"fp32".

    Weights stay as they are; matrix products run in the low precision (on CPUs with native bf16, about 4x
    faster than float32)."""
    dtypes = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if precision in (None, "no", "fp32", "float32"):
        return contextlib.nullcontext()
    if precision not in dtypes:
        raise ValueError(f"precision must be one of no, bf16, fp16; got {precision!r}")
    return torch.autocast(device_type=device.type, dtype=dtypes[precision])


def cut_at_stop_strings(text: str, stop_strings: Sequence[str] | None) -> str:
    """Text before the earliest stop string (the stop string itself removed, as vLLM does)."""
    cut = len(text)
    for stop in stop_strings or []:
        index = text.find(stop)
        if index >= 0:
            cut = min(cut, index)
    return text[:cut]


def generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, do_sample: bool,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, no_repeat_ngram_size: int = 0,
             seed: int | None = None, batch_size: int = 8, stop_strings: Sequence[str] | None = None,
             max_prompt_length: int | None = None, progress: bool = True, desc: str = "generate",
             synced_gpus: bool = False, precision: str | None = None) -> list[str]:
    """Responses (decoded, special tokens removed, cut at stop strings, stripped) in prompt order.

    Prompts are sorted by length into batches to limit padding; `seed` seeds a forked RNG before
    the first batch, so a run is reproducible for a fixed batch size and the global stream is untouched."""
    from tqdm.auto import tqdm

    collator = PromptCollator(tokenizer, max_prompt_length)
    pad_id, eos_ids = pad_token_id_of(tokenizer), eos_token_ids(model, tokenizer)
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    outputs: list[str] = [""] * len(prompts)
    with eval_mode(model), seeded_rng(seed, device), autocast(precision, device):
        batches = range(0, len(order), batch_size)
        for start in tqdm(batches, desc=desc, disable=not progress, total=len(batches)):
            indices = order[start:start + batch_size]
            batch = collator([prompts[i] for i in indices])
            sequences, response_mask = sample_batch(
                model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k,
                top_p=top_p, no_repeat_ngram_size=no_repeat_ngram_size, eos_token_id=eos_ids, pad_token_id=pad_id,
                stop_strings=stop_strings, tokenizer=tokenizer, synced_gpus=synced_gpus)
            for row, index in enumerate(indices):
                tokens = sequences[row][response_mask[row].bool()].tolist()
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                outputs[index] = cut_at_stop_strings(text, stop_strings).strip()
    return outputs


def generate_vllm(model_path: str, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, do_sample: bool,
                  temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, no_repeat_ngram_size: int = 0,
                  seed: int | None = None, stop_strings: Sequence[str] | None = None,
                  max_prompt_length: int | None = None, dtype: str = "auto", llm=None) -> list[str]:
    """Same contract as `generate`, run by vLLM (optional dependency, GPU). Prompts are
    passed as token ids built exactly as for the HF backend (no second BOS)."""
    if no_repeat_ngram_size:
        raise ValueError("vLLM has no no_repeat_ngram_size; use backend=hf for the instruction-following sets "
                         "(MiniLLM/DistiLLM evaluate with 6) or set generation.no_repeat_ngram_size=0 knowingly")
    try:
        from vllm import LLM, SamplingParams
    except ImportError as err:
        raise ImportError("backend=vllm needs `pip install vllm` (GPU); use backend=hf otherwise") from err
    llm = llm or LLM(model=model_path, tokenizer=getattr(tokenizer, "name_or_path", None) or model_path,
                     dtype=dtype, seed=seed if seed is not None else 0)
    params = SamplingParams(n=1, temperature=float(temperature) if do_sample else 0.0,
                            top_k=int(top_k) if (do_sample and top_k) else -1,
                            top_p=float(top_p) if do_sample else 1.0, max_tokens=max_new_tokens,
                            stop=list(stop_strings) if stop_strings else None, seed=seed)
    requests = [{"prompt_token_ids": encode_prompt(tokenizer, p, max_prompt_length)} for p in prompts]
    results = llm.generate(requests, params)
    return [cut_at_stop_strings(r.outputs[0].text, stop_strings).strip() for r in results]

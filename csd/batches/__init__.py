"""Where the trainer's micro-batches come from (config group ``batches``), and the pretraining-corpus batches.

| batches=    | micro-batch                                                              | paper          |
|-------------|--------------------------------------------------------------------------|----------------|
| reference   | the data set's reference responses                                       | Tables 1, 3, 5 |
| imitkd      | student samples → replay buffer (capacity 1000) → random rows from it,   | Table 2        |
|             | with probability mixed_alpha (1.0), else references                      |                |
| gkd         | student samples with probability student_ratio λ, else references         | (beyond paper) |
| chat_pairs  | teacher response and student response of each prompt, two rows            | Table 4        |

    batch_source = build_batch_source(cfg, ReferenceBatches(train_set, collate), tokenizer, accelerator)
    lm_batches = build_lm_batches(cfg, tokenizer, accelerator)   # None unless train.lm_data is set

Sources with state (coins, sampling counters, the replay buffer, the corpus position) have
state_dict/load_state_dict; the trainer registers them with accelerate so `train.resume` restores them.
The Table 2 student starts from an SFT checkpoint: that stage is the same trainer with `loss=sft`.
"""
from __future__ import annotations

from typing import Optional

from omegaconf import DictConfig

from csd.batches.buffer import ReplayBuffer
from csd.batches.sampling import StudentSampler
from csd.batches.sources import ChatPairBatches, ReferenceBatches, StudentBatches
from csd.data.pretraining import PretrainingBatches

BATCH_SOURCES = ("reference", "imitkd", "gkd", "chat_pairs")


def build_sampler(cfg: DictConfig, train_set, tokenizer, accelerator) -> StudentSampler:
    source = cfg.batches
    max_new_tokens = source.get("max_new_tokens") or cfg.train.max_length - cfg.train.max_prompt_length
    return StudentSampler(train_set, tokenizer, accelerator, max_new_tokens=max_new_tokens,
                          max_prompt_length=cfg.train.max_prompt_length, temperature=source.temperature,
                          top_k=source.top_k, top_p=source.top_p, seed=cfg.train.seed,
                          prompt_format=cfg.data.get("prompt_format") or "minillm")


def build_batch_source(cfg: DictConfig, references, tokenizer, accelerator, student_set=None):
    """The micro-batch source that ``cfg.batches.name`` asks for; ``references`` is the off-policy one; ``student_set``
    the encoded student responses of chat pairs when already built (else built here)."""
    name = cfg.batches.name
    if name == "reference":
        return references
    if name == "imitkd":
        buffer = ReplayBuffer(int(cfg.batches.buffer_capacity), seed=cfg.train.seed * 1000 + accelerator.process_index)
        return StudentBatches(references, build_sampler(cfg, references.train_set, tokenizer, accelerator),
                              cfg.batches.mixed_alpha, cfg.train.seed, buffer, process=accelerator.process_index)
    if name == "gkd":
        return StudentBatches(references, build_sampler(cfg, references.train_set, tokenizer, accelerator),
                              cfg.batches.student_ratio, cfg.train.seed)
    from csd.data import build_dataset  # chat_pairs

    if student_set is None:
        student_set = build_dataset(cfg.data, "train", tokenizer, cfg.train.max_length, cfg.train.max_prompt_length,
                                    response_key="student_response")
    return ChatPairBatches(references, student_set)


def build_lm_batches(cfg: DictConfig, tokenizer, accelerator) -> Optional[PretrainingBatches]:
    """Pretraining-corpus micro-batches (``train.batch_size`` chunks of ``train.max_length`` tokens) when
    ``train.lm_data`` names a data config (configs/data/<name>.yaml or a yaml path), else None."""
    if not cfg.train.get("lm_data"):
        return None
    from csd.data import load_data_config

    return PretrainingBatches.from_config(load_data_config(cfg.train.lm_data), tokenizer,
                                          chunk_length=cfg.train.max_length, batch_size=cfg.train.batch_size,
                                          seed=cfg.train.seed, process=accelerator.process_index,
                                          processes=accelerator.num_processes)


__all__ = ["BATCH_SOURCES", "ReferenceBatches", "ReplayBuffer", "StudentSampler", "StudentBatches", "ChatPairBatches",
           "PretrainingBatches", "build_sampler", "build_batch_source", "build_lm_batches"]

"""Where the trainer's micro-batches come from (config group ``onpolicy``), and the pretraining-corpus batches.

| onpolicy=   | micro-batch                                                              | paper          |
|-------------|--------------------------------------------------------------------------|----------------|
| none        | the data set's reference responses                                       | Tables 1, 3, 5 |
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

from csd.onpolicy.buffer import ReplayBuffer
from csd.onpolicy.pretraining import PretrainingBatches
from csd.onpolicy.sampling import StudentSampler
from csd.onpolicy.sources import ChatPairBatches, ReferenceBatches, StudentBatches

ONPOLICY_NAMES = ("none", "imitkd", "gkd", "chat_pairs")



def build_sampler(cfg: DictConfig, train_set, tokenizer, accelerator) -> StudentSampler:
    onpolicy = cfg.onpolicy
    max_new_tokens = onpolicy.get("max_new_tokens") or cfg.train.max_length - cfg.train.max_prompt_length
    return StudentSampler(train_set, tokenizer, accelerator, max_new_tokens=max_new_tokens,
                          max_prompt_length=cfg.train.max_prompt_length, temperature=onpolicy.temperature,
                          top_k=onpolicy.top_k, top_p=onpolicy.top_p, seed=cfg.train.seed,
                          prompt_format=cfg.data.get("prompt_format") or "minillm")


def build_batch_source(cfg: DictConfig, references, tokenizer, accelerator):
    """The micro-batch source that ``cfg.onpolicy.name`` asks for; ``references`` is the off-policy one."""
    name = cfg.onpolicy.name
    if name == "none":
        return references
    if name == "imitkd":
        buffer = ReplayBuffer(int(cfg.onpolicy.buffer_capacity), seed=cfg.train.seed * 1000 + accelerator.process_index)
        return StudentBatches(references, build_sampler(cfg, references.train_set, tokenizer, accelerator),
                              cfg.onpolicy.mixed_alpha, cfg.train.seed, buffer, process=accelerator.process_index)
    if name == "gkd":
        return StudentBatches(references, build_sampler(cfg, references.train_set, tokenizer, accelerator),
                              cfg.onpolicy.student_ratio, cfg.train.seed)
    from csd.data import build_dataset  # chat_pairs

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


__all__ = ["ONPOLICY_NAMES", "ReferenceBatches", "ReplayBuffer", "StudentSampler", "StudentBatches", "ChatPairBatches",
           "PretrainingBatches", "build_sampler", "build_batch_source", "build_lm_batches"]

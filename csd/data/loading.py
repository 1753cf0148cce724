"""`load_examples`: a data config and a split -> list of examples with the model's prompt text.

Every example has
  prompt      exact text given to the model (template applied),
  response    reference/training text ('' for prompt-only sets),
  references  list of reference texts for metrics (several for some sets),
plus format extras (answer for GSM8K, source for translation, teacher_response /
student_response for chat pairs, question_id / turns for MT-Bench, ...).
"""
from __future__ import annotations

from typing import Any

from csd.data.formats import READERS
from csd.data.prompts import format_prompt
from csd.data.sources import as_plain_dict, load_raw_records

REQUIRED_KEYS = ("name", "format", "path", "splits", "prompt_format")


def check_data_config(data_cfg: dict) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in data_cfg]
    if missing:
        raise KeyError(f"data config {data_cfg.get('name', '?')!r} lacks keys {missing}")
    if data_cfg["format"] not in READERS:
        raise ValueError(f"unknown data format {data_cfg['format']!r}; known: {sorted(READERS)}")


def load_examples(data_cfg: Any, split: str, tokenizer=None, max_examples: int | None = None) -> list[dict]:
    """Examples of one split; `max_examples` (argument, else the config's) keeps the first N.

    Config keys used: format, prompt_format, path/splits (or hub_id), max_examples,
    min_response_words (drop examples whose first reference has fewer words; S-NI/UnNI use 11),
    empty_system_message (chat prompts open with an empty system turn, csd.data.prompts.chat_prompt).
    """
    cfg = as_plain_dict(data_cfg)
    check_data_config(cfg)
    read = READERS[cfg["format"]]
    limit = max_examples if max_examples is not None else cfg.get("max_examples")
    min_words = cfg.get("min_response_words") or 0
    use_stored_prompt = cfg.get("use_stored_prompt", True)
    empty_system = bool(cfg.get("empty_system_message"))

    examples = []
    for record, where in load_raw_records(cfg, split):
        example = read(record, where)
        if min_words and len(example["response"].split()) < min_words:
            continue
        stored = example.pop("stored_prompt", None)
        if cfg["prompt_format"] == "minillm" and stored and use_stored_prompt:
            example["prompt"] = stored  # MiniLLM evaluates its processed files' stored prompt
        else:
            example["prompt"] = format_prompt(cfg["prompt_format"], tokenizer,
                                              example["instruction"], example["input"], empty_system=empty_system)
        example["where"] = where
        examples.append(example)
        if limit is not None and limit >= 0 and len(examples) >= limit:
            break
    return examples

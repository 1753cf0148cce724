"""MT-Bench and AlpacaEval (Table 4): answer generation and answer files in each tool's format.

Both need a paid GPT-4 judge, so we stop at the answer files:
- MT-Bench: FastChat `model_answer` JSONL, one line per question
  {"question_id", "answer_id", "model_id", "choices": [{"index": 0, "turns": [a1, a2]}], "tstamp"};
  two turns, the second conditioned on the model's own first answer; temperature per
  category as FastChat's gen_model_answer.py (0 = greedy), up to 1024 new tokens.
- AlpacaEval: a JSON list [{"instruction", "output", "generator", "dataset"}].
Judge commands: docs/evaluation.md.
"""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Callable, Sequence

# FastChat fastchat/llm_judge/common.py temperature_config.
MT_BENCH_TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                        "reasoning": 0.0, "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0}

# generate_fn(prompts, do_sample, temperature) -> list of responses
GenerateFn = Callable[[Sequence[str], bool, float], list]


def _conversation_prompt(tokenizer, turns: Sequence[str], answers: Sequence[str]) -> str:
    messages = []
    for index, question in enumerate(turns):
        messages.append({"role": "user", "content": question})
        if index < len(answers):
            messages.append({"role": "assistant", "content": answers[index]})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def answer_mt_bench(examples: Sequence[dict], tokenizer, generate_fn: GenerateFn) -> list[list[str]]:
    """Answers (one list of turns per question). Turn k of every question is generated in
    one batch per temperature, after turn k-1 of all questions."""
    answers: list[list[str]] = [[] for _ in examples]
    max_turns = max((len(ex["turns"]) for ex in examples), default=0)
    for turn in range(max_turns):
        groups: dict[float, list[int]] = {}
        for i, ex in enumerate(examples):
            if turn < len(ex["turns"]):
                groups.setdefault(MT_BENCH_TEMPERATURE.get(ex.get("category", ""), 0.7), []).append(i)
        for temperature, indices in sorted(groups.items()):
            prompts = [_conversation_prompt(tokenizer, examples[i]["turns"][:turn + 1], answers[i]) for i in indices]
            outputs = generate_fn(prompts, temperature >= 1e-4, temperature if temperature >= 1e-4 else 1.0)
            for i, text in zip(indices, outputs):
                answers[i].append(text)
    return answers


def write_mt_bench_answers(path: Path, model_id: str, examples: Sequence[dict], answers: Sequence[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for example, turns in zip(examples, answers):
            record = {"question_id": example["question_id"], "answer_id": uuid.uuid4().hex[:22],
                      "model_id": model_id, "choices": [{"index": 0, "turns": list(turns)}],
                      "tstamp": time.time()}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def write_alpaca_eval_outputs(path: Path, generator: str, examples: Sequence[dict], outputs: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{"instruction": ex["instruction"], "output": out, "generator": generator,
                "dataset": ex.get("dataset", "")} for ex, out in zip(examples, outputs)]
    path.write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")
    return path

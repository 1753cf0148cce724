"""Record readers, one per on-disk format: raw record -> (instruction, input, response, extras).

Each reader accepts the field names of every source we support for that task (the MiniLLM
JSONL release, the Speculative-KD JSON release, the hub datasets), and raises
DatasetFormatError naming file and line when a required field is missing.

| format       | fields read                                                   | source                      |
|--------------|---------------------------------------------------------------|-----------------------------|
| minillm      | instruction, input, output (str or list), optional prompt     | MiniLLM/{dolly,...} JSONL   |
| gsm8k        | question, answer  or  instruction, response                    | openai/gsm8k, SKD gsm_*.json|
| dialogsum    | dialogue, summary                                             | knkarthick/dialogsum, SKD   |
| translation  | instruction, response  or  source, target                      | SKD mt_*.json               |
| chat_prompts | prompt  or  generated/messages (first user turn)              | SPIN_iter1, ultrachat_200k  |
| chat_pairs   | prompt, teacher_response, student_response  or  chosen/rejected| generate_responses.py       |
"""
from __future__ import annotations

import re
from typing import Callable

from csd.data.sources import DatasetFormatError

# Speculative-KD / CSD eval prompt for Assamese -> English (eval/eval_mt.py).
TRANSLATION_TEMPLATE = ("Translate Assamese sentence into English. This is the Assamese sentence: "
                        "{source} Here is the English translation:")
# Speculative-KD / CSD eval prompt for GSM8K questions (eval/eval_gsm.py).
GSM8K_TEMPLATE = "Q: {question} \n\nA:"


def _require(record: dict, where: str, *fields: str) -> list:
    missing = [f for f in fields if f not in record]
    if missing:
        raise DatasetFormatError(f"{where}: missing field(s) {missing}; record has {sorted(record)}")
    return [record[f] for f in fields]


def _pick(record: dict, where: str, *alternatives: tuple[str, ...]) -> tuple[str, ...]:
    """Values of the first tuple of field names that the record has in full."""
    for fields in alternatives:
        if all(f in record for f in fields):
            return tuple(record[f] for f in fields)
    wanted = " or ".join("{" + ", ".join(f) + "}" for f in alternatives)
    raise DatasetFormatError(f"{where}: expected fields {wanted}; record has {sorted(record)}")


def _text(value, where: str, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DatasetFormatError(f"{where}: field '{field}' should be text, got {type(value).__name__}")
    return value


def read_minillm(record: dict, where: str) -> dict:
    instruction, output = _require(record, where, "instruction", "output")
    references = output if isinstance(output, list) else [output]
    references = [_text(r, where, "output") for r in references]
    example = {"instruction": _text(instruction, where, "instruction"),
               "input": _text(record.get("input", ""), where, "input"),
               "response": references[0] if references else "", "references": references}
    if isinstance(record.get("prompt"), str):  # MiniLLM's processed files store the prompt, "<n>" = newline
        example["stored_prompt"] = record["prompt"].replace("<n>", "\n")
    return example


def gsm8k_final_answer(solution: str) -> str:
    """The number after '####' in a GSM8K reference solution (commas removed)."""
    if "####" not in solution:
        return ""
    return solution.split("####")[-1].strip().replace(",", "")


def read_gsm8k(record: dict, where: str) -> dict:
    if "question" in record:
        question, solution = _pick(record, where, ("question", "answer"))
        instruction = GSM8K_TEMPLATE.format(question=_text(question, where, "question"))
    else:  # Speculative-KD files already hold the full prompt text in `instruction`
        instruction, solution = _pick(record, where, ("instruction", "response"))
    solution = _text(solution, where, "answer")
    return {"instruction": _text(instruction, where, "instruction"), "input": "",
            "response": solution, "references": [solution], "answer": gsm8k_final_answer(solution)}


def read_dialogsum(record: dict, where: str) -> dict:
    dialogue, summary = _pick(record, where, ("dialogue", "summary"), ("instruction", "response"))
    summary = _text(summary, where, "summary")
    return {"instruction": _text(dialogue, where, "dialogue"), "input": "", "response": summary,
            "references": [summary]}


def read_translation(record: dict, where: str) -> dict:
    if "source" in record:
        source, target = _pick(record, where, ("source", "target"))
        instruction = TRANSLATION_TEMPLATE.format(source=_text(source, where, "source"))
    else:
        instruction, target = _pick(record, where, ("instruction", "response"))
        match = re.search(r"This is the Assamese sentence: (.*) Here is the English translation:",
                          instruction, flags=re.S)
        source = match.group(1) if match else ""
    target = _text(target, where, "target")
    return {"instruction": _text(instruction, where, "instruction"), "input": "", "response": target,
            "references": [target], "source": source}


def _first_user_turn(messages, where: str) -> str:
    if not isinstance(messages, list):
        raise DatasetFormatError(f"{where}: expected a list of chat messages")
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            return _text(message.get("content"), where, "content")
    raise DatasetFormatError(f"{where}: no user message in conversation")


def _assistant_reply(messages) -> str:
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and message.get("role") == "assistant":
            return message.get("content") or ""
    return ""


def read_chat_prompts(record: dict, where: str) -> dict:
    if "prompt" in record:
        prompt = _text(record["prompt"], where, "prompt")
    else:  # SPIN_iter1 keeps the conversation in `generated`, ultrachat_200k in `messages`
        (messages,) = _pick(record, where, ("generated",), ("messages",), ("real",))
        prompt = _first_user_turn(messages, where)
    reply = _assistant_reply(record.get("messages") or record.get("real") or [])
    return {"instruction": prompt, "input": "", "response": reply, "references": [reply] if reply else []}


def read_chat_pairs(record: dict, where: str) -> dict:
    if "teacher_response" in record:
        prompt, teacher, student = _pick(record, where, ("prompt", "teacher_response", "student_response"))
    else:  # DistiLLM-2 layout: chosen = teacher conversation, rejected = student conversation
        prompt, chosen, rejected = _pick(record, where, ("prompt", "chosen", "rejected"))
        teacher, student = _assistant_reply(chosen), _assistant_reply(rejected)
    teacher = _text(teacher, where, "teacher_response")
    return {"instruction": _text(prompt, where, "prompt"), "input": "", "response": teacher,
            "references": [teacher], "teacher_response": teacher,
            "student_response": _text(student, where, "student_response")}


def read_mt_bench(record: dict, where: str) -> dict:
    question_id, turns = _require(record, where, "question_id", "turns")
    if not isinstance(turns, list) or not turns:
        raise DatasetFormatError(f"{where}: 'turns' must be a non-empty list")
    return {"instruction": _text(turns[0], where, "turns"), "input": "", "response": "",
            "references": [], "question_id": question_id, "turns": list(turns),
            "category": record.get("category", "")}


def read_alpaca_eval(record: dict, where: str) -> dict:
    (instruction,) = _require(record, where, "instruction")
    return {"instruction": _text(instruction, where, "instruction"), "input": "", "response": "",
            "references": [], "dataset": record.get("dataset", "")}


READERS: dict[str, Callable[[dict, str], dict]] = {
    "minillm": read_minillm,
    "gsm8k": read_gsm8k,
    "dialogsum": read_dialogsum,
    "translation": read_translation,
    "chat_prompts": read_chat_prompts,
    "chat_pairs": read_chat_pairs,
    "mt_bench": read_mt_bench,
    "alpaca_eval": read_alpaca_eval,
}

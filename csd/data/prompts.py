"""Prompt templates: MiniLLM's instruction template, the tokenizer's chat template, or plain text.

- minillm: the Alpaca-style template MiniLLM/DistiLLM use for Dolly and the four other
  instruction sets (two variants: with and without an `input` field).
- chat: `tokenizer.apply_chat_template([{"role": "user", "content": text}],
  add_generation_prompt=True)` as in the Speculative-KD and DistiLLM-2 code; with `empty_system` an empty
  system turn goes first, as alignment-handbook's `apply_chat_template(auto_insert_empty_system_msg=True)`
  does for the release's chat trainer (Table 4).
- plain: the user text itself.
"""
from __future__ import annotations

MINILLM_TEMPLATE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
MINILLM_TEMPLATE_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)

PROMPT_FORMATS = ("minillm", "chat", "plain")


def minillm_prompt(instruction: str, input_text: str = "") -> str:
    if input_text:
        return MINILLM_TEMPLATE_WITH_INPUT.format(instruction=instruction, input=input_text)
    return MINILLM_TEMPLATE.format(instruction=instruction)


def user_message(instruction: str, input_text: str = "") -> str:
    """One user turn: the instruction, then the input after a blank line when there is one."""
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def template_has_system_turn(tokenizer) -> bool:
    """alignment-handbook's test (maybe_insert_system_message): the template text mentions 'system' or is ChatML."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return "system" in template or "<|im_start|>" in template


def chat_prompt(tokenizer, text: str, empty_system: bool = False) -> str:
    """One user turn in the tokenizer's chat template, ending with the generation prompt.

    ``empty_system``: put ``{"role": "system", "content": ""}`` first when the template has a system turn (see
    template_has_system_turn), as alignment-handbook's ``maybe_insert_system_message`` does; a ChatML template then
    renders an empty system turn instead of its default one (Qwen2.5: "You are Qwen, ...")."""
    if tokenizer is None:
        raise ValueError("prompt_format 'chat' needs a tokenizer (with a chat template)")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat_template; "
                         "use prompt_format 'minillm' or 'plain'")
    messages = [{"role": "user", "content": text}]
    if empty_system and template_has_system_turn(tokenizer):
        messages.insert(0, {"role": "system", "content": ""})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def format_prompt(prompt_format: str, tokenizer, instruction: str, input_text: str = "",
                  empty_system: bool = False) -> str:
    if prompt_format == "minillm":
        return minillm_prompt(instruction, input_text)
    if prompt_format == "chat":
        return chat_prompt(tokenizer, user_message(instruction, input_text), empty_system=empty_system)
    if prompt_format == "plain":
        return user_message(instruction, input_text)
    raise ValueError(f"unknown prompt_format {prompt_format!r}; choose one of {PROMPT_FORMATS}")


def chat_turn_end(tokenizer) -> str:
    """Text the chat template writes after an assistant message, trailing whitespace removed.

    E.g. '<end_of_turn>' for Gemma, '<|im_end|>' for Qwen. Found by rendering a conversation
    with a marker answer and reading what follows the marker; '' when nothing does.
    """
    marker = "\u2063CSD_ANSWER_MARKER\u2063"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}], tokenize=False)
    if marker not in rendered:
        return ""
    return rendered.split(marker, 1)[1].rstrip()

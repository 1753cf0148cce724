"""Chat data with real-world chat templates (Qwen2.5/ChatML with its default system turn, Llama-3, Gemma) on the
tiny tokenizer: the turn-end token is found, responses end with it, BOS is never doubled, and the labelled part
of an example is exactly the response plus the turn end."""
from __future__ import annotations

import pytest

from csd.data.benchmarks import answer_mt_bench
from csd.data.encoding import encode_example, encode_prompt, response_end_ids
from csd.data.prompts import chat_turn_end, format_prompt
from csd.losses import IGNORE_INDEX
from csd.testing import make_tiny_tokenizer

QWEN25 = (  # Qwen2.5-Instruct's template without tools
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- for message in messages %}{%- if message.role != 'system' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3 = (  # Llama-3-Instruct's template
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
GEMMA = (  # Gemma-it's template
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + "
    "'<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)
TEMPLATES = {  # template, its special tokens, turn end, generation prompt, whether the tokenizer adds BOS
    "qwen25": (QWEN25, ["<|im_start|>", "<|im_end|>"], "<|im_end|>", "<|im_start|>assistant\n", False),
    "llama3": (LLAMA3, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>",
               "<|start_header_id|>assistant<|end_header_id|>\n\n", True),
    "gemma": (GEMMA, ["<start_of_turn>", "<end_of_turn>"], "<end_of_turn>", "<start_of_turn>model\n", True),
}


@pytest.fixture(params=sorted(TEMPLATES))
def chat_tokenizer(request):
    template, specials, turn_end, generation_prompt, adds_bos = TEMPLATES[request.param]
    tokenizer = make_tiny_tokenizer(add_bos=adds_bos)
    tokenizer.add_tokens(specials, special_tokens=True)
    tokenizer.chat_template = template
    return tokenizer, turn_end, generation_prompt


def test_turn_end_is_the_templates_end_of_turn_token(chat_tokenizer):
    tokenizer, turn_end, _ = chat_tokenizer
    assert chat_turn_end(tokenizer) == turn_end
    assert response_end_ids(tokenizer, "chat") == [tokenizer.convert_tokens_to_ids(turn_end)]
    assert response_end_ids(tokenizer, "minillm") == [tokenizer.eos_token_id]


def test_chat_example_labels_the_response_and_turn_end_only(chat_tokenizer):
    tokenizer, turn_end, generation_prompt = chat_tokenizer
    prompt = format_prompt("chat", tokenizer, "What is the capital of France?")
    assert prompt.endswith(generation_prompt) and "What is the capital of France?" in prompt
    encoded = encode_example(tokenizer, prompt, "Paris is the capital.", max_length=512, max_prompt_length=256,
                             end_ids=response_end_ids(tokenizer, "chat"))
    labelled = [t for t in encoded["labels"] if t != IGNORE_INDEX]
    assert tokenizer.decode(labelled) == "Paris is the capital." + turn_end
    assert encoded["labels"][:encoded["prompt_length"]] == [IGNORE_INDEX] * encoded["prompt_length"]
    assert tokenizer.decode(encoded["input_ids"][:encoded["prompt_length"]]) == prompt
    assert encoded["input_ids"].count(tokenizer.bos_token_id) == (1 if "<s>" in prompt else 0)  # never doubled
    assert encode_prompt(tokenizer, prompt) == encoded["input_ids"][:encoded["prompt_length"]]


def test_multi_turn_prompt_holds_the_first_answer_and_its_turn_end(chat_tokenizer):
    tokenizer, turn_end, generation_prompt = chat_tokenizer
    prompts = []

    def generate(batch, do_sample, temperature):
        prompts.extend(batch)
        return [f"answer{len(prompts)}" for _ in batch]

    answers = answer_mt_bench([{"turns": ["first question", "second question"], "category": "math"}], tokenizer,
                              generate)
    assert answers == [["answer1", "answer2"]]
    second = prompts[1]
    assert second.index("first question") < second.index("answer1" + turn_end) < second.index("second question")
    assert second.endswith(generation_prompt) and second.count(turn_end) == prompts[0].count(turn_end) + 2

"""Table 4 data as the release's chat trainer builds it: prompts cut from the front as TRL 0.9's
DPOTrainer.tokenize_row does (keep_end, only when prompt + the longer response exceed max_length), and the empty
system turn alignment-handbook's apply_chat_template(auto_insert_empty_system_msg=True) puts first."""
from __future__ import annotations

import json

import pytest

from csd.config import compose
from csd.data import build_dataset, encode_example, load_data_config, load_examples
from csd.data.sources import as_plain_dict
from csd.losses import IGNORE_INDEX
from csd.testing import make_tiny_tokenizer

WORDS = "the quick brown fox jumps over the lazy dog and a cat sat on the mat "
CHATML = (  # Qwen2.5's template (no tools): a default system turn unless the first message is one
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- for message in messages %}{%- if message.role != 'system' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
GEMMA = (  # Gemma-it's template refuses a system turn
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{{ '<start_of_turn>' + message['role'] + '\\n' + message['content'] + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_tokenizer()


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------------ truncation
def test_keep_end_cuts_the_prompt_front_only_when_the_pair_is_too_long(tokenizer):
    eos = tokenizer.eos_token_id
    prompt, response = WORDS * 3, "A cat sat."
    prompt_ids, response_ids = ids(tokenizer, prompt), ids(tokenizer, response) + [eos]
    assert len(prompt_ids) > 40 and len(response_ids) < 10
    # fits in max_length: the prompt stays whole although it is longer than max_prompt_length
    fits = encode_example(tokenizer, prompt, response, max_length=len(prompt_ids) + 10, max_prompt_length=16,
                          truncate_prompt="end")
    assert fits["input_ids"] == prompt_ids + response_ids and fits["prompt_length"] == len(prompt_ids)
    # too long: the prompt keeps its last 16 tokens, the short response is untouched
    cut = encode_example(tokenizer, prompt, response, max_length=32, max_prompt_length=16, truncate_prompt="end")
    assert cut["input_ids"] == prompt_ids[-16:] + response_ids
    assert cut["labels"] == [IGNORE_INDEX] * 16 + response_ids and cut["prompt_length"] == 16
    # the pair's longer response (30 tokens) decides, and then this response is cut to max_length - 16 as well
    long = encode_example(tokenizer, prompt, WORDS, max_length=24, max_prompt_length=16, truncate_prompt="end",
                          longest_response=30)
    assert long["input_ids"] == prompt_ids[-16:] + ids(tokenizer, WORDS)[:8]
    # the default is unchanged: first max_prompt_length prompt tokens, whatever the length
    start = encode_example(tokenizer, prompt, response, max_length=len(prompt_ids) + 10, max_prompt_length=16)
    assert start["input_ids"] == prompt_ids[:16] + response_ids
    with pytest.raises(ValueError, match="truncate_prompt"):
        encode_example(tokenizer, prompt, response, 32, 16, truncate_prompt="middle")


def test_both_rows_of_a_pair_are_cut_by_the_longer_response(tokenizer, tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"prompt": WORDS * 3, "teacher_response": "A cat sat.",
                                                      "student_response": WORDS}) + "\n")
    cfg = dict(as_plain_dict(load_data_config("chat_pairs")), path=str(tmp_path), empty_system_message=False)
    assert cfg["truncate_prompt"] == "end"
    end = [tokenizer.convert_tokens_to_ids("<|end|>")]
    prompt = load_examples(cfg, "train", tokenizer)[0]["prompt"]
    prompt_ids = ids(tokenizer, prompt)
    teacher_ids, student_ids = ids(tokenizer, "A cat sat.") + end, ids(tokenizer, WORDS) + end
    # prompt + the student's (longer) response exceed max_length, prompt + the teacher's do not
    max_length = len(prompt_ids) + len(teacher_ids) + 1
    assert len(prompt_ids) + len(student_ids) > max_length and len(student_ids) > len(teacher_ids)
    teacher_row = build_dataset(cfg, "train", tokenizer, max_length, 16)[0]
    student_row = build_dataset(cfg, "train", tokenizer, max_length, 16, response_key="student_response")[0]
    assert teacher_row["input_ids"] == prompt_ids[-16:] + teacher_ids
    assert student_row["input_ids"][:16] == prompt_ids[-16:]
    assert student_row["input_ids"][16:] == student_ids[:max_length - 16]


def test_table4_presets_and_chat_data_configs():
    for preset in ("table4_qwen", "table4_gemma2"):
        data = compose([f"experiment={preset}"]).data
        assert (data.name, data.truncate_prompt) == ("chat_pairs", "end"), preset
    assert compose(["experiment=table4_qwen"]).data.empty_system_message is True
    assert compose(["experiment=table4_gemma2"]).data.empty_system_message is False  # Gemma refuses a system turn
    ultrachat = load_data_config("ultrachat")  # the release's generate_vllm.py: no cut, no system turn
    assert ultrachat.max_prompt_length is None and ultrachat.empty_system_message is False
    for name in ("dolly", "gsm8k", "dialogsum", "translation", "quickstart"):  # MiniLLM's rule elsewhere
        assert load_data_config(name).get("truncate_prompt", "start") == "start", name
        assert not load_data_config(name).get("empty_system_message"), name


# ------------------------------------------------------------------ empty system turn
def chat_tokenizer(template, specials):
    tokenizer = make_tiny_tokenizer()
    tokenizer.add_tokens(specials, special_tokens=True)
    tokenizer.chat_template = template
    return tokenizer


def pair_prompt(tokenizer, tmp_path, empty_system):
    (tmp_path / "train.jsonl").write_text(json.dumps({"prompt": "Name a fox.", "teacher_response": "Red.",
                                                      "student_response": "A fox."}) + "\n")
    cfg = dict(as_plain_dict(load_data_config("chat_pairs")), path=str(tmp_path), empty_system_message=empty_system)
    return load_examples(cfg, "train", tokenizer)[0]["prompt"]


def test_empty_system_turn_replaces_the_chatml_default(tmp_path):
    tokenizer = chat_tokenizer(CHATML, ["<|im_start|>", "<|im_end|>"])
    on = pair_prompt(tokenizer, tmp_path, True)
    assert on == ("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nName a fox.<|im_end|>\n"
                  "<|im_start|>assistant\n")
    off = pair_prompt(tokenizer, tmp_path, False)
    assert off.startswith("<|im_start|>system\nYou are Qwen") and off.endswith(on[len("<|im_start|>system\n<|im_end|>\n"):])


def test_templates_without_a_system_turn_are_left_alone(tokenizer, tmp_path):
    assert pair_prompt(tokenizer, tmp_path, True) == "<|user|>\nName a fox.<|end|>\n<|assistant|>\n"
    # Gemma's template mentions 'system' (to refuse it): alignment-handbook would insert the turn and fail,
    # which is why configs/experiment/table4_gemma2.yaml turns the option off
    gemma = chat_tokenizer(GEMMA, ["<start_of_turn>", "<end_of_turn>"])
    assert pair_prompt(gemma, tmp_path, False).startswith("<s><start_of_turn>user\nName a fox.")
    with pytest.raises(Exception, match="System role not supported"):
        pair_prompt(gemma, tmp_path, True)

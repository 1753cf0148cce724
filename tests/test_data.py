"""Loaders on fixture files in the true on-disk formats, tokenisation layout and batching.

Expected prompts are written out by hand from the MiniLLM template / the tiny chat template
("<|user|>\\n{text}<|end|>\\n<|assistant|>\\n"), not produced by the code under test.
"""
import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from csd.data import (DatasetFormatError, PromptCollator, TrainCollator, build_dataset, encode_example,
                      load_data_config, load_examples)
from csd.data.sources import as_plain_dict
from csd.testing import make_tiny_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]


def chat(text):
    return f"<|user|>\n{text}<|end|>\n<|assistant|>\n"


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(scope="module")
def bos_tokenizer():
    return make_tiny_tokenizer(add_bos=True)


def config(name, path, **overrides):
    cfg = as_plain_dict(load_data_config(name))
    cfg.update(path=str(path), **overrides)
    return cfg


def load_prepare_data():
    spec = importlib.util.spec_from_file_location("prepare_data", REPO / "scripts" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ instruction sets (MiniLLM layout)
def test_dolly_split_and_minillm_template(tmp_path):
    shutil.copytree(FIXTURES / "dolly", tmp_path / "dolly")
    load_prepare_data().split_dolly(tmp_path / "dolly", dev_num=2)
    cfg = config("dolly", tmp_path / "dolly")
    train, dev, test = (load_examples(cfg, s) for s in ("train", "validation", "test"))
    assert (len(train), len(dev), len(test)) == (3, 2, 2)
    # raw line 1 (has an input) went to dev; the "with input" template variant
    assert dev[0]["prompt"] == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\n"
        "When did Virgin Australia start operating?\n\n### Input:\nVirgin Australia, the trading name of "
        "Virgin Australia Airlines Pty Ltd, commenced services on 31 August 2000 as Virgin Blue.\n\n### Response:\n")
    assert dev[1]["prompt"] == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nWhich is a species of fish? Tope or Rope\n\n### Response:\n")
    assert dev[1]["response"] == "Tope" and dev[1]["references"] == ["Tope"]
    assert train[0]["instruction"] == "Why can camels survive for long without water?"


@pytest.mark.parametrize("name,folder,count", [("self_inst", "self_inst", 1), ("vicuna", "vicuna", 1),
                                               ("sinst", "sinst/11_", 1), ("uinst", "uinst/11_", 2)])
def test_minillm_eval_sets(name, folder, count):
    examples = load_examples(config(name, FIXTURES / folder), "test")
    assert len(examples) == count
    assert all(ex["prompt"].endswith("### Response:\n") for ex in examples)


def test_sinst_keeps_every_reference_and_uinst_cap():
    sinst = load_examples(config("sinst", FIXTURES / "sinst/11_"), "test")
    assert len(sinst[0]["references"]) == 2 and sinst[0]["response"] == sinst[0]["references"][0]
    assert load_data_config("uinst").max_examples == 10000
    assert len(load_examples(config("uinst", FIXTURES / "uinst/11_", max_examples=1), "test")) == 1


def test_min_response_words_filter():
    cfg = config("dolly", FIXTURES / "dolly", splits={"test": "raw.jsonl"}, min_response_words=11)
    kept = load_examples(cfg, "test")
    # 11 words (Virgin Australia) is kept, 10 words (the fox summary) is not
    assert [ex["instruction"][:9] for ex in kept] == ["When did ", "Why can c"]


# ------------------------------------------------------------------ task-specific sets
def test_gsm8k_skd_json_and_hub_jsonl(tokenizer):
    cfg = config("gsm8k", FIXTURES / "gsm8k")
    train = load_examples(cfg, "train", tokenizer)
    assert train[0]["prompt"] == chat("Q: Natalia sold clips to 48 of her friends in April, and then she sold "
                                      "half as many clips in May. How many clips did Natalia sell altogether "
                                      "in April and May? \n\nA:")
    assert train[0]["answer"] == "72"
    test = load_examples(cfg, "test", tokenizer)
    assert test[1]["prompt"] == chat("Q: A robe takes 2 bolts of blue fiber and half that much white fiber. "
                                     "How many bolts in total does it take? \n\nA:")
    assert [ex["answer"] for ex in test] == ["18", "3", "70000"]


def test_dialogsum_and_translation(tokenizer):
    summ = load_examples(config("dialogsum", FIXTURES / "dialogsum"), "train", tokenizer)
    assert summ[0]["prompt"].startswith("<|user|>\n#Person1#: Hi, Mr. Smith.")
    assert summ[0]["references"] == ["Mr. Smith's getting a check-up, and Doctor Hawkins advises him to "
                                     "have one every year."]
    assert len(load_examples(config("dialogsum", FIXTURES / "dialogsum"), "test", tokenizer)) == 1
    mt = load_examples(config("translation", FIXTURES / "translation"), "test", tokenizer)
    assert mt[0]["source"] == "মই ভাত খাওঁ।" and mt[0]["references"] == ["I eat rice."]
    assert mt[1]["prompt"] == chat("Translate Assamese sentence into English. This is the Assamese sentence: "
                                   "আজি বৰষুণ দিছে। Here is the English translation:")


# ------------------------------------------------------------------ chat sets
def test_chat_prompts_pairs_and_benchmarks(tokenizer):
    prompts = load_examples(config("ultrachat", FIXTURES / "ultrachat"), "train", tokenizer)
    assert [ex["prompt"] for ex in prompts] == [chat("How does photosynthesis work?"),
                                                 chat("Write a short poem about the sea.")]
    spin = load_examples(config("ultrachat", FIXTURES / "ultrachat", splits={"train": "spin_iter1.jsonl"}),
                         "train", tokenizer)
    assert spin[0]["instruction"] == "What are the benefits of meditation?"
    pairs = load_examples(config("chat_pairs", FIXTURES / "chat_pairs"), "train", tokenizer)
    assert pairs[1]["teacher_response"] == pairs[1]["response"] == "Waves roll in, the tide sings low."
    assert pairs[1]["student_response"] == "The sea is big."
    questions = load_examples(config("mt_bench", FIXTURES / "mt_bench"), "test", tokenizer)
    assert [q["question_id"] for q in questions] == [81, 111] and len(questions[0]["turns"]) == 2
    alpaca = load_examples(config("alpaca_eval", FIXTURES / "alpaca_eval"), "test", tokenizer)
    assert alpaca[1]["instruction"] == "How do I make a cup of tea?" and alpaca[1]["dataset"] == "oasst"


# ------------------------------------------------------------------ bad input
def test_missing_dataset_names_path_and_remedy(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = config("gsm8k", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as err:
        load_examples(cfg, "test")
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "test.jsonl") in message
    assert "scripts/prepare_data.py gsm8k" in message and "openai/gsm8k" in message


def test_malformed_line_reports_file_and_line():
    cfg = config("dolly", FIXTURES / "malformed", splits={"test": "bad.jsonl"})
    with pytest.raises(DatasetFormatError, match=r"bad\.jsonl:3: malformed JSON"):
        load_examples(cfg, "test")
    cfg = config("dolly", FIXTURES / "malformed", splits={"test": "missing_field.jsonl"})
    with pytest.raises(DatasetFormatError, match=r"missing_field\.jsonl:2: missing field\(s\) \['output'\]"):
        load_examples(cfg, "test")


def test_chat_format_without_tokenizer_is_an_error():
    with pytest.raises(ValueError, match="needs a tokenizer"):
        load_examples(config("gsm8k", FIXTURES / "gsm8k"), "test")


# ------------------------------------------------------------------ encoding and batching
def test_encode_example_layout(tokenizer):
    prompt, response = "### Instruction:\nName a fox.\n\n### Response:\n", "The quick brown fox."
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    encoded = encode_example(tokenizer, prompt, response, max_length=512, max_prompt_length=256)
    assert encoded["input_ids"] == prompt_ids + response_ids + [tokenizer.eos_token_id]
    assert encoded["labels"] == [-100] * len(prompt_ids) + response_ids + [tokenizer.eos_token_id]
    # prompt cut to 3 tokens (start kept), whole sequence cut to 5
    short = encode_example(tokenizer, prompt, response, max_length=5, max_prompt_length=3)
    assert short["input_ids"] == (prompt_ids[:3] + response_ids)[:5]
    assert short["labels"] == [-100] * 3 + response_ids[:2]


def test_encode_keeps_single_bos(bos_tokenizer):
    bos = bos_tokenizer.bos_token_id
    plain = encode_example(bos_tokenizer, "Q: hi", " A.", 64, 32)
    templated = encode_example(bos_tokenizer, "<s>Q: hi", " A.", 64, 32)
    assert plain["input_ids"][0] == bos and plain["input_ids"][1] != bos
    assert templated["input_ids"] == plain["input_ids"]


def test_collators(tokenizer):
    pad = tokenizer.pad_token_id
    batch = TrainCollator(pad)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                                {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, pad, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    left = PromptCollator(tokenizer, max_prompt_length=2)([[1, 2, 3], {"input_ids": [9, 4, 4], "prompt_length": 1}])
    assert left["input_ids"].tolist() == [[1, 2], [pad, 9]]
    assert left["attention_mask"].tolist() == [[1, 1], [0, 1]]
    assert left["input_ids"].dtype == torch.long


def test_build_dataset_chat_turn_end_and_long_prompt_drop(tokenizer):
    cfg = config("gsm8k", FIXTURES / "gsm8k")
    dataset = build_dataset(cfg, "train", tokenizer, max_length=512, max_prompt_length=256)
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    assert len(dataset) == 2 and dataset[0]["input_ids"][-1] == end_id and dataset[0]["labels"][-1] == end_id
    prompt_len = len(tokenizer(dataset.examples[0]["prompt"], add_special_tokens=False)["input_ids"])
    assert dataset[0]["prompt_length"] == prompt_len
    assert sum(1 for label in dataset[0]["labels"] if label == -100) == prompt_len
    dropped = build_dataset(dict(cfg, drop_long_prompts=True), "train", tokenizer, 512, max_prompt_length=10)
    assert len(dropped) == 0


# ------------------------------------------------------------------ long Dolly prompts (release: truncate, keep)
def test_long_dolly_prompt_is_truncated_keeping_its_start_and_counted(tokenizer, caplog):
    """DistiLLM's process_data_dolly.py (the release's) keeps an example whose prompt exceeds 256 tokens and
    cuts the prompt to its first 256 tokens; the response is untouched. drop_long_prompts: true drops it."""
    cfg = config("dolly", FIXTURES / "dolly_long")
    assert cfg["drop_long_prompts"] is False
    examples = load_examples(cfg, "train")
    prompt_ids = [tokenizer(ex["prompt"], add_special_tokens=False)["input_ids"] for ex in examples]
    assert [len(ids) > 256 for ids in prompt_ids] == [False, True, False]
    with caplog.at_level("INFO", logger="csd.data.encoding"):
        dataset = build_dataset(cfg, "train", tokenizer, max_length=1024, max_prompt_length=256)
    assert len(dataset) == 3 and "1 of 3 prompts are longer than 256 tokens: truncated" in caplog.text
    long = dataset[1]
    response_ids = tokenizer("A long passage about rivers and bridges.", add_special_tokens=False)["input_ids"]
    assert long["input_ids"] == prompt_ids[1][:256] + response_ids + [tokenizer.eos_token_id]
    assert long["labels"] == [-100] * 256 + response_ids + [tokenizer.eos_token_id]
    assert long["prompt_length"] == 256
    caplog.clear()
    with caplog.at_level("INFO", logger="csd.data.encoding"):
        dropped = build_dataset(dict(cfg, drop_long_prompts=True), "train", tokenizer, 1024, max_prompt_length=256)
    assert [ex["instruction"] for ex in dropped.examples] == [examples[0]["instruction"], examples[2]["instruction"]]
    assert "1 of 3 prompts are longer than 256 tokens: dropped" in caplog.text

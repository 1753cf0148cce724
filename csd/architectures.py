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

import argparse
import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from csd.config import CONFIG_DIR
from csd.models import _get, derive_student

if TYPE_CHECKING:
    from transformers import PretrainedConfig

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


REQUIRED = ("arch_id", "model_card", "config_url", "read_from", "tokenizer_length", "config")


@functools.lru_cache(maxsize=None)
def _read(path: Path) -> dict:
    try:
        entry = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    missing = [key for key in REQUIRED if key not in entry]
    if "config" in entry and "model_type" not in entry["config"]:
        missing.append("config.model_type")
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    return entry


def _entry(spec: Any) -> dict:
    path = arch_file(spec)
    if not path.is_file():
        raise FileNotFoundError(f"no architecture file for model {arch_id(spec)!r} ({path.relative_to(CONFIG_DIR.parent)} "
                                f"does not exist; known: {', '.join(known_archs())}); a node whose name_or_path is a "
                                "local checkpoint names its model card with arch, e.g. arch=gpt2-xl")
    return _read(path)


def arch_config(spec: Any) -> "PretrainedConfig":
    """The node's transformers config, from its architecture file."""
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


def _has_arch(spec: Any) -> bool:
    from omegaconf.errors import MissingMandatoryValue

    try:
        return arch_file(spec).is_file()
    except (MissingMandatoryValue, ValueError):  # e.g. configs/model/tiny.yaml: name_or_path is "???"
        return False


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m csd.architectures",
        description="Print the paper's models as the project sets them up, built on the meta device from "
                    "configs/arch/ (no weights, no download): per node of each configs/model pair, the model card, "
                    "parameters, trainable parameters (the student's, LoRA when the node has it; the teacher is "
                    "frozen), head rows and len(tokenizer).")
    parser.add_argument("pairs", nargs="*", help="configs/model names (default: every pair whose nodes all have an "
                                                  "architecture file)")
    args = parser.parse_args(argv)
    from csd.config import compose, group_options
    from csd.models import head_size

    print(f"{'pair':24} {'node':8} {'model card':34} {'parameters':>15} {'trainable':>15} {'head':>8} {'tokens':>8}")
    for pair in args.pairs or group_options("model"):
        cfg = compose([f"model={pair}"])
        nodes = {role: cfg.model[role] for role in ("teacher", "student")}
        if not args.pairs and not all(_has_arch(spec) for spec in nodes.values()):
            continue
        for role, spec in nodes.items():
            model = meta_model(spec)
            total = sum(p.numel() for p in model.parameters())
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) if role == "student" else 0
            print(f"{pair:24} {role:8} {arch_id(spec):34} {total:>15,} {trainable:>15,} {head_size(model):>8,} "
                  f"{tokenizer_length(spec):>8,}")


if __name__ == "__main__":
    main()


__all__ = ["ARCH_DIR", "arch_config", "arch_file", "arch_id", "known_archs", "meta_model", "tokenizer_length"]

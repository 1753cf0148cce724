"""The models of a plan on PyTorch's meta device: their sizes, and what the student's forward keeps for backward.

``probe_model(spec)`` builds a model node without weights (the architecture file of csd/architectures.py for the
paper's models, else the config.json of a local checkpoint) with its keep_layers / LoRA applied;
``saved_activations(model, rows, length, dtype)`` runs its forward on meta tensors of that shape and adds up every
tensor autograd saves for backward (``torch.autograd.graph.saved_tensors_hooks``), parameters excluded, each
storage once, per decoder layer. Meta tensors have shapes and dtypes but no data, so a 9B model's forward takes
well under a second.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional
from unittest import mock

import torch
from torch import nn

from csd.models import _get, base_causal_lm, decoder_layers, derive_student


@dataclasses.dataclass
class ModelFacts:
    arch: str                 # the model card id the architecture comes from (or the local directory)
    source: str               # where the architecture numbers were read
    params: int
    trainable: int
    largest_layer: int        # parameters of the largest module's own tensors (DeepSpeed's model_to_params)
    matmul_params: int        # weights of every Linear / Conv1D, the head included even when tied
    layers: int
    hidden: int
    attention_width: int      # heads x head_dim
    head_rows: int
    tokenizer_length: int
    attn_implementation: str
    module: Optional[nn.Module] = dataclasses.field(default=None, repr=False)


def local_config_dir(spec: Any) -> Optional[Path]:
    name = _get(spec, "name_or_path")
    if name == "smollm2":
        from csd.smollm import smollm2_checkpoint

        return Path(smollm2_checkpoint())
    return Path(name) if name and (Path(name) / "config.json").is_file() else None


def local_model(spec: Any, directory: Path) -> tuple[nn.Module, int]:
    """A local checkpoint's architecture on meta, with the node's cut and LoRA; its tokenizer's length."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(directory)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    lora_path = _get(spec, "lora_path")
    if lora_path:  # a saved adapter: its shapes from adapter_config.json, no weights read
        adapter = json.loads((Path(lora_path) / "adapter_config.json").read_text())
        spec = {**{k: _get(spec, k) for k in ("keep_layers",)},
                "lora": {"r": adapter["r"], "alpha": adapter["lora_alpha"], "dropout": adapter.get("lora_dropout", 0.0),
                         "target_modules": adapter["target_modules"]}}
    with torch.device("meta"):
        model = derive_student(model, spec)
    tokenizer_dir = _get(spec, "tokenizer") or directory
    return model, len(AutoTokenizer.from_pretrained(tokenizer_dir))


@functools.lru_cache(maxsize=32)
def _probe_cached(key: str) -> ModelFacts:
    spec = json.loads(key)
    directory = local_config_dir(spec)
    if directory is not None:
        model, tokenizer_length = local_model(spec, directory)
        arch, source = str(_get(spec, "name_or_path")), f"{directory}/config.json"
    else:
        from csd import architectures

        model, tokenizer_length = architectures.meta_model(spec), architectures.tokenizer_length(spec)
        arch = architectures.arch_id(spec)
        source = str(architectures.arch_file(spec).relative_to(architectures.ARCH_DIR.parent.parent))
    return facts_of(model, arch, source, tokenizer_length)


def probe_model(spec: Any) -> ModelFacts:
    """The facts of a model node (cached per architecture: a table's rows share their models)."""
    return _probe_cached(shape_key(spec))


def shape_key(spec: Any) -> str:
    """What decides a node's shapes: its architecture (arch, else name_or_path), cut and adapters (not its dtype,
    weights or tokenizer files: a table's per-task teachers share one architecture)."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else dict(spec)
    keys = ("keep_layers", "lora", "lora_path", "tokenizer") + (("arch",) if plain.get("arch") else ("name_or_path",))
    return json.dumps({key: plain.get(key) for key in keys}, sort_keys=True)


def facts_of(model: nn.Module, arch: str, source: str, tokenizer_length: int) -> ModelFacts:
    from transformers.pytorch_utils import Conv1D

    unique = {id(p): p for p in model.parameters()}.values()
    config = base_causal_lm(model).config
    largest = max(sum(p.numel() for p in module.parameters(recurse=False)) for module in model.modules())
    matmul = sum(module.weight.numel() for module in model.modules() if isinstance(module, (nn.Linear, Conv1D)))
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return ModelFacts(arch=arch, source=source, params=sum(p.numel() for p in unique),
                      trainable=sum(p.numel() for p in unique if p.requires_grad), largest_layer=largest,
                      matmul_params=matmul, layers=len(decoder_layers(base_causal_lm(model))), hidden=hidden,
                      attention_width=heads * head_dim, head_rows=base_causal_lm(model).get_output_embeddings().weight.shape[0],
                      tokenizer_length=tokenizer_length,
                      attn_implementation=str(getattr(config, "_attn_implementation", None) or "sdpa"), module=model)


@dataclasses.dataclass
class Saved:
    """Bytes autograd keeps for backward after the student's forward."""
    total: int            # everything, attention score matrices included
    scores: int           # (.., T, T) attention probabilities (kept by eager/math attention only)
    per_layer: list[int]  # inside each decoder layer, scores included
    outside: int          # embeddings, final norm, head, soft-capping
    layer_input: int      # one layer's input hidden states (what gradient checkpointing keeps per layer)


@contextmanager
def no_packed_sequence_check():
    """transformers looks at position values for packed sequences; meta tensors have none (and a plan packs none)."""
    import transformers.masking_utils as masking

    with mock.patch.object(masking, "find_packed_sequence_indices", lambda *args, **kwargs: None):
        yield


def saved_activations(model: nn.Module, rows: int, length: int, dtype: torch.dtype) -> Saved:
    """Run ``model``'s training forward on meta inputs (rows, length) and count what autograd saves."""
    model = model.to(dtype)
    model.train()
    parameters = {p.untyped_storage()._cdata for p in model.parameters()}
    layers = decoder_layers(base_causal_lm(model))
    current: list[Optional[int]] = [None]
    sizes: dict[int, tuple[int, Optional[int], bool]] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in parameters and storage._cdata not in sizes:
            is_scores = tensor.dim() >= 3 and tensor.shape[-1] == tensor.shape[-2] == length
            sizes[storage._cdata] = (storage.nbytes(), current[0], is_scores)
        return tensor

    handles = []
    for index, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(lambda module, args, index=index: current.__setitem__(0, index)))
        handles.append(layer.register_forward_hook(lambda module, args, output: current.__setitem__(0, None)))
    input_ids = torch.zeros(rows, length, dtype=torch.long, device="meta")
    try:
        with no_packed_sequence_check(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(input_ids=input_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    per_layer = [0] * len(layers)
    outside = 0
    for nbytes, layer, _ in sizes.values():
        if layer is None:
            outside += nbytes
        else:
            per_layer[layer] += nbytes
    hidden = getattr(base_causal_lm(model).config, "hidden_size", None) or base_causal_lm(model).config.n_embd
    return Saved(total=sum(s for s, _, _ in sizes.values()), scores=sum(s for s, _, scores in sizes.values() if scores),
                 per_layer=per_layer, outside=outside, layer_input=rows * length * hidden * dtype.itemsize)


def activation_bytes(saved: Saved, checkpointing: bool, keep_scores: bool, layers_scores: int = 0) -> int:
    """Saved activations at the end of the forward: all of them, or with gradient checkpointing (non-reentrant, per
    decoder layer) each layer's input plus one layer recomputed in backward and what lies outside the layers."""
    scores = 0 if keep_scores else saved.scores
    if not checkpointing:
        return saved.total - scores
    per_layer_scores = scores // max(len(saved.per_layer), 1)
    return saved.outside + len(saved.per_layer) * saved.layer_input + max(saved.per_layer) - per_layer_scores


def linear_weight_params(model: nn.Module) -> int:
    """Weights an autocast forward casts to 16 bits and keeps for backward (Linear / Conv1D)."""
    from transformers.pytorch_utils import Conv1D

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, Conv1D)))



@functools.lru_cache(maxsize=64)
def _saved_cached(key: str, length: int, dtype_name: str) -> Saved:
    facts = _probe_cached(key)
    return saved_activations(facts.module, 1, length, getattr(torch, dtype_name))


def saved_per_row(spec: Any, length: int, dtype_name: str) -> Saved:
    """saved_activations of one row of ``length`` tokens (the counts are linear in the rows: scale by them)."""
    return _saved_cached(shape_key(spec), length, dtype_name)

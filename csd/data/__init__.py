"""Datasets of the paper: loading (local files or hub), prompt templates, tokenisation, batching.

Public interface used by the trainer and the evaluator:
    load_examples(data_cfg, split, tokenizer=None) -> list[dict]   (prompt, response, references, ...)
    encode_example(tokenizer, prompt, response, max_length, max_prompt_length) -> {input_ids, labels}
    build_dataset(data_cfg, split, tokenizer, max_length, max_prompt_length) -> Dataset
    TrainCollator(pad_token_id)          right padding, labels -100 on padding
    PromptCollator(tokenizer, max_prompt_length)   left padding for generation
    load_data_config(name)               configs/data/<name>.yaml as an OmegaConf node
"""
from csd.data.encoding import (IGNORE_INDEX, EncodedDataset, PromptCollator, TrainCollator, build_dataset,
                               encode_example, encode_prompt, left_pad, pad_token_id_of, response_end_ids)
from csd.data.formats import READERS, gsm8k_final_answer
from csd.data.loading import load_examples
from csd.data.prompts import chat_prompt, format_prompt, minillm_prompt
from csd.data.sources import (REPO_ROOT, DatasetFormatError, as_plain_dict, read_records, resolve_path)


def load_data_config(name: str):
    """configs/data/<name>.yaml (or a path to a yaml file) as an OmegaConf node."""
    from omegaconf import OmegaConf

    path = resolve_path(name) if str(name).endswith((".yaml", ".yml")) else \
        REPO_ROOT / "configs" / "data" / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in (REPO_ROOT / "configs" / "data").glob("*.yaml")))
        raise FileNotFoundError(f"no data config {path}; known data sets: {known} (or a path to a .yaml file)")
    return OmegaConf.load(path)


__all__ = [
    "IGNORE_INDEX", "EncodedDataset", "PromptCollator", "TrainCollator", "build_dataset", "encode_example",
    "encode_prompt", "left_pad", "pad_token_id_of", "response_end_ids", "READERS", "gsm8k_final_answer",
    "load_examples", "chat_prompt", "format_prompt", "minillm_prompt", "REPO_ROOT", "DatasetFormatError",
    "as_plain_dict", "read_records", "resolve_path", "load_data_config",
]

"""Where a dataset's records come from: local files (preferred) or the Hugging Face hub.

A data config names a local directory (`path`) and, per split, a file in it (`splits`).
Files are JSONL (one record per line) or JSON (a list, or an object whose `instances`
or `data` field is the list, as in the Speculative-KD release). Errors name the file and
line so a broken download is easy to find. When a file is missing, the hub is used only
if the config has a `hub_id` and `HF_HUB_OFFLINE` is not set; otherwise the error says
which path was expected and how to obtain it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

REPO_ROOT = Path(__file__).resolve().parents[2]


class DatasetFormatError(ValueError):
    """A record that cannot be parsed; the message carries file and line number."""


def as_plain_dict(cfg: Any) -> dict:
    """OmegaConf node or mapping -> plain dict (so both work everywhere)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return dict(cfg)


def resolve_path(path: str | os.PathLike) -> Path:
    """Relative paths are taken from the repository root, not the working directory."""
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else REPO_ROOT / path


def hub_is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or \
        os.environ.get("HF_DATASETS_OFFLINE", "0").lower() in ("1", "true", "yes")


def split_file(data_cfg: Mapping, split: str) -> Path:
    splits = data_cfg.get("splits") or {}
    if split not in splits:
        raise KeyError(f"dataset '{data_cfg.get('name')}' has no split '{split}' "
                       f"(configured splits: {sorted(splits)})")
    return resolve_path(data_cfg["path"]) / str(splits[split])


def iter_jsonl(path) -> Iterator[tuple[dict, str]]:
    """The objects of a JSONL file, streamed, each with its 'file:line'; blank lines skipped; errors name file:line.
    The one JSONL reader of the package (data sets and the pretraining corpus)."""
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetFormatError(f"{where}: malformed JSON line ({err.msg})") from None
            if not isinstance(record, dict):
                raise DatasetFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield record, where


def read_records(path: Path) -> list[tuple[dict, str]]:
    """Records of a JSONL or JSON file, each with a 'file:line' (or 'file[index]') locator."""
    if path.suffix == ".jsonl":
        return list(iter_jsonl(path))
    text = path.read_text(encoding="utf-8")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
    if isinstance(payload, dict):
        for field in ("instances", "data", "examples"):
            if isinstance(payload.get(field), list):
                payload = payload[field]
                break
    if not isinstance(payload, list):
        raise DatasetFormatError(f"{path}: expected a list of records (or an object with an "
                                 "'instances' list)")
    records = []
    for index, record in enumerate(payload):
        if not isinstance(record, dict):
            raise DatasetFormatError(f"{path}[{index}]: expected a JSON object")
        records.append((record, f"{path}[{index}]"))
    return records


def missing_dataset_message(data_cfg: Mapping, split: str, path: Path) -> str:
    name = data_cfg.get("name", "?")
    lines = [f"Dataset '{name}' split '{split}': expected file {path} but it does not exist."]
    if data_cfg.get("hub_id"):
        lines.append(f"Download it with `python scripts/prepare_data.py {name}` "
                     f"(hub id {data_cfg['hub_id']}; needs network, HF_HUB_OFFLINE unset).")
    else:
        lines.append(f"Run `python scripts/prepare_data.py {name}` for instructions.")
    if data_cfg.get("source_hint"):
        lines.append(str(data_cfg["source_hint"]).strip())
    lines.append("See docs/evaluation.md, section 'Datasets'.")
    return "\n".join(lines)


def load_hub_records(data_cfg: Mapping, split: str) -> list[tuple[dict, str]]:
    """Records of one split of a hub dataset (`hub_id`, optional `hub_config`, `hub_splits`)."""
    from datasets import load_dataset

    hub_split = (data_cfg.get("hub_splits") or {}).get(split, split)
    dataset = load_dataset(data_cfg["hub_id"], data_cfg.get("hub_config"), split=hub_split)
    return [(dict(row), f"{data_cfg['hub_id']}:{hub_split}[{i}]") for i, row in enumerate(dataset)]


def hub_serves(data_cfg: Mapping, split: str) -> bool:
    """Whether a split without its local file is read from the hub (a `datasets` hub id, reachable)."""
    hub_splits = data_cfg.get("hub_splits")
    return bool(data_cfg.get("hub_id")) and data_cfg.get("hub_loader", "datasets") == "datasets" \
        and (hub_splits is None or split in hub_splits) and not hub_is_offline()


def check_split(data_cfg: Mapping, split: str) -> None:
    """The error load_raw_records would raise for a split it cannot read, raised without reading anything (so entry
    points can check their data before loading models)."""
    path = split_file(data_cfg, split)
    if not path.exists() and not hub_serves(data_cfg, split):
        raise FileNotFoundError(missing_dataset_message(data_cfg, split, path))


def load_raw_records(data_cfg: Mapping, split: str) -> list[tuple[dict, str]]:
    """Local file first; the hub only when the file is missing and the hub is reachable."""
    path = split_file(data_cfg, split)
    if path.exists():
        return read_records(path)
    if hub_serves(data_cfg, split):
        return load_hub_records(data_cfg, split)
    raise FileNotFoundError(missing_dataset_message(data_cfg, split, path))

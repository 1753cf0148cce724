"""Pay for the teacher once: its head inputs at the target positions, computed once and read by every run.

Off-policy distillation feeds the teacher the same sequences every epoch and every table row. Its logits need only
its final (normed) hidden state at the positions that have a target: logits = softcap(hidden @ W_head.T)[:vocab],
H numbers per token instead of V. ``train.teacher_cache``:

    null      the live teacher (the default)
    auto      <output_root>/teacher_cache/<fingerprint>
    <folder>  that folder

A cache folder holds
    <split>-<k>.safetensors   examples [start, stop) of a split: ``hidden`` (their target positions' rows, in example
                              order, in the dtype the live head multiplies: the autocast dtype under bf16/fp16 with
                              train.head=logits, else the dtype the teacher's last norm returns), ``offsets``
                              (stop − start + 1); its metadata names the fingerprint. Written whole, then renamed.
    manifest.json             written last, atomically: the fingerprint, what it covers, the splits and their shards.
The fingerprint covers what changes those numbers: the teacher's weight files (and adapter), the encoded content of
every split (tokenizer, chat template, data files, lengths, truncation, BOS), the teacher dtype, the run's precision
and head. A folder whose manifest has another fingerprint is never read: it is rebuilt (the line says which parts
differ); shards of a killed build that carry this fingerprint are kept and the rest is built.

    python -m csd.teacher_cache <the overrides of csd.train>     builds it (also under `accelerate launch`: each
                                                                 process writes its share of the shards)
csd.train builds what is missing before its first step; csd/step.py reads the rows (``teacher_hidden``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from bisect import bisect_right
from pathlib import Path
from typing import Callable, Optional

import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from csd.checkpoint import fault_point, write_text_atomic

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
FORMAT = 1
SHARD_EXAMPLES = 256
WHOLE_FILE_HASH_BYTES = 256 << 20  # weight files up to this size are hashed whole; larger: size, mtime, both ends
ON_POLICY = ("imitkd", "gkd")


# --- what the numbers depend on -------------------------------------------------------------------------------
def _file_identity(path: Path) -> list:
    stat, digest = path.stat(), hashlib.sha256()
    with open(path, "rb") as handle:
        if stat.st_size <= WHOLE_FILE_HASH_BYTES:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
            return [path.name, stat.st_size, digest.hexdigest()]
        digest.update(handle.read(1 << 20))
        handle.seek(-(1 << 20), os.SEEK_END)
        digest.update(handle.read(1 << 20))
    return [path.name, stat.st_size, stat.st_mtime_ns, digest.hexdigest()]


def directory_identity(location: str) -> list:
    """Weights, configs and adapter files of a model directory (or a hub snapshot in the local cache, whose folder
    name is the commit); the location itself when neither is found."""
    directory = Path(location).expanduser()
    if not directory.is_dir():
        try:
            from huggingface_hub import snapshot_download

            directory = Path(snapshot_download(location, local_files_only=True))
        except Exception:  # not cached: the hub id is all we know  # noqa: BLE001
            return [location]
    suffixes = (".safetensors", ".bin", ".gguf", ".json", ".pt", ".pth")
    return [str(directory.resolve())] + [_file_identity(p) for p in sorted(directory.iterdir())
                                         if p.is_file() and p.suffix in suffixes]


def split_digest(dataset) -> str:
    """sha256 of every encoded example's input_ids and labels: the tokenizer, chat template, data file, lengths,
    truncation and BOS handling all show here."""
    digest = hashlib.sha256()
    for index in range(len(dataset)):
        example = dataset[index]
        digest.update(torch.tensor(example["input_ids"], dtype=torch.int64).numpy().tobytes())
        digest.update(torch.tensor(example["labels"], dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()


def fingerprint(cfg: DictConfig, tokenizer, splits: dict, precision: str) -> dict:
    """What the cached numbers depend on (the manifest keeps it; ``digest`` names it)."""
    from csd.data.encoding import tokenizer_adds_bos
    from csd.models import _get, _source

    teacher = cfg.model.teacher
    source, extra = _source(teacher)
    return {
        "format": FORMAT,
        "teacher": {key: _get(teacher, key) for key in ("name_or_path", "gguf_file", "dtype", "peft_path")},
        "teacher_files": directory_identity(source) + ([extra["gguf_file"]] if extra else []),
        "adapter_files": directory_identity(_get(teacher, "peft_path")) if _get(teacher, "peft_path") else None,
        "tokenizer": {"size": len(tokenizer), "add_bos": tokenizer_adds_bos(tokenizer),
                      "chat_template": hashlib.sha256(str(getattr(tokenizer, "chat_template", "")).encode()).hexdigest()},
        "lengths": {"max_length": cfg.train.max_length, "max_prompt_length": cfg.train.max_prompt_length,
                    "truncate_prompt": cfg.data.get("truncate_prompt") or "start"},
        "splits": {name: {"examples": len(dataset), "content": split_digest(dataset)} for name, dataset in splits.items()},
        "precision": precision,
        "head": cfg.train.head,
    }


def digest(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def folder_of(cfg: DictConfig, name: str) -> Path:
    setting = str(cfg.train.teacher_cache)
    return Path(cfg.output_root) / "teacher_cache" / name if setting == "auto" else Path(setting).expanduser()


def differing(old: dict, new: dict) -> list[str]:
    """The keys (one level into splits) whose values differ: why a cache is stale."""
    keys = []
    for key in sorted(set(old) | set(new)):
        if key == "splits" and isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            keys += [f"splits.{s}" for s in sorted(set(old[key]) | set(new[key])) if old[key].get(s) != new[key].get(s)]
        elif old.get(key) != new.get(key):
            keys.append(key)
    return keys


def read_manifest(folder: Path) -> Optional[dict]:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


# --- building ---------------------------------------------------------------------------------------------------
def planned_shards(splits: dict) -> list[tuple[str, int, int, int]]:
    """(split, shard number, start, stop) for every shard of every split."""
    return [(name, k, start, min(start + SHARD_EXAMPLES, len(dataset)))
            for name, dataset in splits.items() for k, start in enumerate(range(0, len(dataset), SHARD_EXAMPLES))]


def shard_path(folder: Path, split: str, number: int) -> Path:
    return folder / f"{split}-{number:05d}.safetensors"


def shard_done(path: Path, name: str) -> bool:
    """A shard file exists only whole (renamed into place); it counts when it was built for this fingerprint."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as shard:
            return (shard.metadata() or {}).get("fingerprint") == name
    except Exception:  # absent or unreadable: build it  # noqa: BLE001
        return False


def target_counts(example: dict) -> int:
    """Positions of an example with a target (label of the next position is not ignored)."""
    from csd.constants import IGNORE_INDEX

    return sum(1 for label in example["labels"][1:] if label != IGNORE_INDEX)


def forward_batches(dataset, start: int, stop: int, rows: int) -> list[list[int]]:
    """The shard's examples, longest first, in batches of ``rows`` (less padding than the data order)."""
    order = sorted(range(start, stop), key=lambda i: -len(dataset[i]["input_ids"]))
    return [order[i : i + rows] for i in range(0, len(order), rows)]


def build(folder: Path, name: str, parts: dict, splits: dict, teacher, cfg: DictConfig, accelerator, collate) -> None:
    """Every missing shard (this process: its share), then the manifest (main process, last)."""
    from tqdm.auto import tqdm

    from csd.distributed import full_shape, unwrap_teacher
    from csd.models import hidden_states_before_head
    from csd.step import target_mask, teacher_precision

    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    rows = cfg.train.batch_size
    if main:
        folder.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    pending = [shard for shard in planned_shards(splits) if not shard_done(shard_path(folder, *shard[:2]), name)]
    accelerator.wait_for_everyone()  # every process has its plan before any shard appears
    plans = [[(shard, forward_batches(splits[shard[0]], shard[2], shard[3], rows)) for shard in pending[r::world]]
             for r in range(world)]
    forwards = [sum(len(batches) for _, batches in plan) for plan in plans]
    module = unwrap_teacher(teacher)
    hidden_size = full_shape(module.get_output_embeddings().weight)[1]
    autocast = cfg.train.head == "logits" and accelerator.mixed_precision in ("bf16", "fp16")
    weight_dtype = next(module.parameters()).dtype
    stored = {"bf16": torch.bfloat16, "fp16": torch.float16}[accelerator.mixed_precision] \
        if autocast and weight_dtype != torch.float16 else None  # None: as the norm returns it
    positions = sum(target_counts(splits[s][i]) for s, _, start, stop in pending for i in range(start, stop))
    needed = positions * hidden_size * (stored or weight_dtype).itemsize
    if main and pending:
        free = shutil.disk_usage(folder).free
        log.warning("teacher cache %s: building %d of %d shards, %d target positions x %d, %.1f MB needed, "
                    "%.1f MB free", folder, len(pending), len(planned_shards(splits)), positions, hidden_size,
                    needed / 1e6, free / 1e6)
        if needed > free:
            raise ValueError(f"the teacher cache needs {needed / 1e6:.1f} MB in {folder} but the disk has "
                             f"{free / 1e6:.1f} MB free; free space, point train.teacher_cache at another folder or "
                             "set train.teacher_cache=null")
    progress = tqdm(total=sum(stop - start for (_, _, start, stop), _ in plans[rank]), desc="teacher cache",
                    unit="example", disable=not main)
    forward = 0
    with torch.no_grad(), teacher_precision(accelerator, teacher):
        for (split, number, start, stop), batches in plans[rank]:
            examples = {}
            for indices in batches:
                batch = collate([splits[split][i] for i in indices])
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                hidden = hidden_states_before_head(teacher, module, batch)
                mask = target_mask(batch)
                for row, index in enumerate(indices):
                    examples[index] = hidden[row][mask[row]].to(stored or hidden.dtype).cpu()
                forward += 1
                progress.update(len(indices))
            write_shard(shard_path(folder, split, number), [examples[i] for i in range(start, stop)], name)
            fault_point("cache_shard", number + 1)
        dummy = {"input_ids": torch.zeros(1, 1, dtype=torch.long, device=accelerator.device)}
        dummy["attention_mask"] = torch.ones_like(dummy["input_ids"])
        for _ in range(max(forwards) - forward):  # ZeRO-3 gathers in every forward: all processes run as many
            hidden_states_before_head(teacher, module, dummy)
    progress.close()
    accelerator.wait_for_everyone()
    fault_point("cache_manifest", 1)
    if main:
        write_manifest(folder, name, parts, splits, hidden_size)
    accelerator.wait_for_everyone()


def write_shard(path: Path, examples: list[torch.Tensor], name: str) -> None:
    from safetensors.torch import save_file

    lengths = torch.tensor([0] + [len(rows) for rows in examples], dtype=torch.int64)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({"hidden": torch.cat(examples).contiguous(), "offsets": lengths.cumsum(0)}, str(temporary),
              metadata={"fingerprint": name})
    os.replace(temporary, path)


def write_manifest(folder: Path, name: str, parts: dict, splits: dict, hidden_size: int) -> None:
    from safetensors import safe_open

    entry = {}
    for split, dataset in splits.items():
        shards = [{"file": shard_path(folder, s, k).name, "start": start, "stop": stop}
                  for s, k, start, stop in planned_shards({split: dataset})]
        with safe_open(str(folder / shards[0]["file"]), framework="pt") as first:
            dtype = str(first.get_slice("hidden").get_dtype())
        entry[split] = {"examples": len(dataset), "hidden_size": int(hidden_size), "dtype": dtype, "shards": shards}
    manifest = {"fingerprint": name, "parts": parts, "splits": entry}
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")


# --- reading ----------------------------------------------------------------------------------------------------
class CachedRows:
    """The cached rows of one split's examples, read from memory-mapped shards as they are asked for."""

    def __init__(self, folder: Path, entry: dict):
        from safetensors import safe_open

        self.starts = [shard["start"] for shard in entry["shards"]]
        self.files = [safe_open(str(folder / shard["file"]), framework="pt") for shard in entry["shards"]]
        self.offsets = [shard.get_tensor("offsets").tolist() for shard in self.files]
        self.hidden = [shard.get_slice("hidden") for shard in self.files]

    def __call__(self, index: int) -> torch.Tensor:
        shard = bisect_right(self.starts, index) - 1
        offsets = self.offsets[shard]
        local = index - self.starts[shard]
        return self.hidden[shard][offsets[local] : offsets[local + 1]]


class CachedSplit(Dataset):
    """An encoded split whose examples also carry ``teacher_hidden``: the teacher's head inputs at their targets."""

    def __init__(self, dataset, rows: CachedRows):
        self.dataset, self.rows, self.examples = dataset, rows, dataset.examples

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "teacher_hidden": self.rows(index)}


def prepare(cfg: DictConfig, accelerator, tokenizer, splits: dict, load_teacher: Callable,
            collate) -> tuple[Path, dict]:
    """(the cache folder, the run's splits read through it), built first where it is missing or stale
    (``load_teacher()`` gives the teacher on the device; called only then)."""
    parts = fingerprint(cfg, tokenizer, splits, accelerator.mixed_precision)
    name = digest(parts)
    folder = folder_of(cfg, name)
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("fingerprint") != name:
        if manifest is not None:  # a complete cache of other numbers: never read, rebuilt in place
            log.warning("teacher cache %s was built for other inputs (%s differ): rebuilding it", folder,
                        ", ".join(differing(manifest.get("parts", {}), parts)))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                os.remove(folder / MANIFEST)
        else:
            log.warning("teacher cache %s is not complete: building what is missing", folder)
        started = time.perf_counter()
        build(folder, name, parts, splits, load_teacher(), cfg, accelerator, collate)
        manifest = read_manifest(folder)
        log.warning("teacher cache %s: built in %.0f s, %s", folder, time.perf_counter() - started, describe(folder))
    else:
        log.warning("teacher cache %s: complete, reading it, %s", folder, describe(folder))
    return folder, {split: CachedSplit(dataset, CachedRows(folder, manifest["splits"][split]))
                    for split, dataset in splits.items()}


def describe(folder: Path) -> str:
    """Its size and what it saves, for the log."""
    manifest = read_manifest(folder) or {"splits": {}}
    mib = sum(path.stat().st_size for path in folder.iterdir() if path.is_file()) / 2**20
    examples = sum(entry["examples"] for entry in manifest["splits"].values())
    return (f"{mib:.1f} MiB on disk: the teacher's body is not run on these {examples} examples again (each run "
            "pays only the teacher's head)")


def compose_reading_cache(overrides: list, cache: str = "auto") -> tuple[list, DictConfig]:
    """(overrides, config) of ``["train.teacher_cache=<cache>", *overrides]`` (an override may set it; null: the live
    teacher), with train.teacher_cache=null appended for on-policy batches (new sequences every step)."""
    from csd.config import compose

    overrides = [f"train.teacher_cache={cache}", *overrides]
    cfg = compose(overrides)
    if cfg.train.teacher_cache is not None and cfg.batches.name in ON_POLICY:
        overrides.append("train.teacher_cache=null")
        cfg = compose(overrides)
    return overrides, cfg


def cache_key(cfg: DictConfig) -> str:
    """Equal for runs that read one cache (same teacher, tokenizer, data, lengths, precision, head, folder); the
    manifest's fingerprint decides what is read, this only groups runs to build for once."""
    from omegaconf import OmegaConf

    train = cfg.train
    parts = {"model": cfg.model, "data": cfg.data, "batches": cfg.batches.name, "output_root": cfg.output_root,
             "train": {key: train.get(key) for key in ("max_length", "max_prompt_length", "mixed_precision", "head",
                                                        "teacher_cache")}}
    return json.dumps(OmegaConf.to_container(OmegaConf.create(parts), resolve=True), sort_keys=True, default=str)


def reads_cache(cfg: DictConfig) -> bool:
    from csd.config import distillation_enabled

    return cfg.train.get("teacher_cache") is not None and distillation_enabled(cfg)


def run_splits(cfg: DictConfig, tokenizer) -> dict:
    """The encoded splits a training run reads: train and validation (the references), and for chat pairs the
    student responses of the train prompts (``train_student``)."""
    from csd.data import build_dataset

    data_args = (tokenizer, cfg.train.max_length, cfg.train.max_prompt_length)
    splits = {"train": build_dataset(cfg.data, "train", *data_args),
              "validation": build_dataset(cfg.data, "validation", *data_args)}
    if cfg.batches.name == "chat_pairs":
        splits["train_student"] = build_dataset(cfg.data, "train", *data_args, response_key="student_response")
    return splits


def load_teacher(cfg: DictConfig, accelerator):
    """The teacher alone, frozen, on the device (its own engine under ZeRO-3): what a cache is built with."""
    from csd.distributed import prepare_teacher
    from csd.models import load_weights

    return prepare_teacher(accelerator, load_weights(cfg.model.teacher).eval().requires_grad_(False))


def build_for(cfg: DictConfig) -> Path:
    """``python -m csd.teacher_cache``: the cache ``csd.train`` with this config would read (null counts as auto)."""
    from omegaconf import open_dict

    from csd.config import validate
    from csd.data import TrainCollator, pad_token_id_of
    from csd.distributed import make_accelerator
    from csd.inputs import check_training_inputs
    from csd.models import load_tokenizer

    if cfg.train.get("teacher_cache") is None:
        with open_dict(cfg):
            cfg.train.teacher_cache = "auto"
    validate(cfg)
    check_training_inputs(cfg)
    accelerator = make_accelerator(cfg)
    tokenizer = load_tokenizer(cfg.model.student)
    splits = run_splits(cfg, tokenizer)
    folder, _ = prepare(cfg, accelerator, tokenizer, splits, lambda: load_teacher(cfg, accelerator),
                        TrainCollator(pad_token_id_of(tokenizer)))
    if accelerator.is_main_process:
        print(f"teacher cache complete: {folder}")
    return folder


if __name__ == "__main__":
    import hydra

    from csd.distributed import process_group_left_at_exit
    from csd.inputs import check_overrides, one_line_errors

    @hydra.main(config_path="../configs", config_name="config", version_base="1.3")
    def main(cfg: DictConfig) -> None:
        with process_group_left_at_exit(), one_line_errors("csd.teacher_cache"):
            build_for(cfg)

    check_overrides("csd.teacher_cache", "config")
    main()

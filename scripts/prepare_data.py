"""Prepare one of the paper's datasets in our local layout: `python scripts/prepare_data.py NAME`.

NAME: dolly self_inst vicuna sinst uinst gsm8k dialogsum translation ultrachat alpaca_eval mt_bench | all
Online (HF_HUB_OFFLINE unset) it downloads into the config's `path`; offline, or for sources
that are not on the hub, it prints what to download and where to put it. Afterwards it
loads every configured split and prints the example counts.

Dolly follows MiniLLM/DistiLLM (tools/process_data_dolly.py): MiniLLM/dolly ships raw.jsonl
(train + dev pool) and valid.jsonl (the 500-example evaluation set = our `test` split);
raw[:dev_num] (1000) -> dev.jsonl (`validation`), raw[dev_num:] -> train.jsonl (`train`).
Training later cuts prompts longer than 256 tokens to their first 256, as DistiLLM's processing (the release's);
data.drop_long_prompts=true drops them, as MiniLLM's (~14k remain).
gsm8k / dialogsum also fetch the full train (and DialogSum validation) splits the Table 3 teachers are fine-tuned on
(`teacher_train` / `teacher_validation` in their configs).
`--split-only` redoes the split from an existing raw.jsonl without network.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from csd.data import load_data_config, load_examples, resolve_path  # noqa: E402
from csd.data.sources import as_plain_dict, hub_is_offline  # noqa: E402
from csd.inputs import one_line_errors  # noqa: E402

NAMES = ["dolly", "self_inst", "vicuna", "sinst", "uinst", "gsm8k", "dialogsum", "translation", "ultrachat",
         "alpaca_eval", "mt_bench"]
MT_BENCH_URL = ("https://raw.githubusercontent.com/lm-sys/FastChat/main/fastchat/llm_judge/data/mt_bench/"
                "question.jsonl")
SKD_URL = "https://github.com/google-research/google-research/tree/master/speculative_kd"


def write_jsonl(path: Path, records) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def split_dolly(directory: Path, dev_num: int) -> None:
    """raw.jsonl -> dev.jsonl (first dev_num lines) + train.jsonl (the rest), lines copied verbatim."""
    raw = directory / "raw.jsonl"
    if not raw.exists():
        raise FileNotFoundError(f"{raw} not found; download MiniLLM/dolly first (see --help)")
    lines = [line for line in raw.read_text(encoding="utf-8").splitlines() if line.strip()]
    (directory / "dev.jsonl").write_text("\n".join(lines[:dev_num]) + "\n", encoding="utf-8")
    (directory / "train.jsonl").write_text("\n".join(lines[dev_num:]) + "\n", encoding="utf-8")
    print(f"dolly: raw {len(lines)} lines -> dev.jsonl {min(dev_num, len(lines))}, "
          f"train.jsonl {max(0, len(lines) - dev_num)}")


def download_snapshot(cfg: dict) -> None:
    from huggingface_hub import snapshot_download

    target = resolve_path(cfg.get("download_dir") or cfg["path"])
    print(f"downloading {cfg['hub_id']} -> {target}")
    snapshot_download(repo_id=cfg["hub_id"], repo_type="dataset", local_dir=str(target))


def download_hub_split(cfg: dict, split: str, hub_split: str) -> None:
    """One hub split into the split's file: JSONL, or for a `.json` name (an authors' file name, e.g. GSM8K's
    gsm_7k_train.json for the teacher) JSON {"instances": [...]} -- never over a file already there."""
    from datasets import load_dataset

    path = resolve_path(cfg["path"]) / cfg["splits"][split]
    if path.suffix == ".json" and path.exists():
        print(f"{cfg['name']}: {path} exists, not replaced by the hub's {hub_split} split")
        return
    dataset = load_dataset(cfg["hub_id"], cfg.get("hub_config"), split=hub_split)
    if path.suffix == ".json":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"instances": [dict(row) for row in dataset]}, ensure_ascii=False), encoding="utf-8")
        print(f"{cfg['name']}: {cfg['hub_id']} [{hub_split}] -> {path} ({len(dataset)} records; the hub's copy, "
              "not the authors' file)")
        return
    count = write_jsonl(path, (dict(row) for row in dataset))
    print(f"{cfg['name']}: {cfg['hub_id']} [{hub_split}] -> {path} ({count} records)")


def sample_train_subset(cfg: dict, size: int, seed: int) -> None:
    """A seeded random subset of the hub train split, written as the `train` file (JSON instances).
    NOT the authors' Speculative-KD subset; use only when their files are unavailable."""
    from datasets import load_dataset

    dataset = list(load_dataset(cfg["hub_id"], cfg.get("hub_config"), split="train"))
    random.Random(seed).shuffle(dataset)
    path = resolve_path(cfg["path"]) / cfg["splits"]["train"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"instances": dataset[:size]}, ensure_ascii=False), encoding="utf-8")
    print(f"{cfg['name']}: seeded subset of {size} hub train records -> {path} (not the authors' subset)")


def prepare_ultrachat(cfg: dict) -> None:
    from datasets import load_dataset

    dataset = load_dataset(cfg["hub_id"], split=cfg["hub_splits"]["train"])
    def first_user_turn(row):
        for message in row.get("generated") or row.get("messages") or []:
            if message.get("role") == "user":
                return message["content"]
        return row.get("prompt")
    path = resolve_path(cfg["path"]) / cfg["splits"]["train"]
    count = write_jsonl(path, ({"prompt": first_user_turn(row)} for row in dataset))
    print(f"ultrachat: {cfg['hub_id']} -> {path} ({count} prompts)")


def prepare_alpaca_eval(cfg: dict) -> None:
    from huggingface_hub import hf_hub_download

    target = resolve_path(cfg["path"])
    hf_hub_download(cfg["hub_id"], "alpaca_eval.json", repo_type="dataset", local_dir=str(target))
    print(f"alpaca_eval -> {target / 'alpaca_eval.json'}")


def prepare_mt_bench(cfg: dict) -> None:
    path = resolve_path(cfg["path"]) / cfg["splits"]["test"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(MT_BENCH_URL, timeout=60) as response:
        path.write_bytes(response.read())
    print(f"mt_bench: {MT_BENCH_URL} -> {path}")


def print_manual_steps(cfg: dict) -> None:
    directory = resolve_path(cfg["path"])
    missing = [f for f in cfg["splits"].values() if not (directory / f).exists()]
    if not missing:
        return
    print(f"{cfg['name']}: place these files in {directory}: {sorted(set(missing))}")
    if cfg.get("source_hint"):
        print(f"  source: {cfg['source_hint']}")


def prepare(name: str, args) -> None:
    cfg = as_plain_dict(load_data_config(name))
    directory = resolve_path(cfg["path"])
    online = not hub_is_offline() and not args.offline
    if name == "dolly" and args.split_only:
        split_dolly(directory, args.dev_num or cfg.get("dev_num", 1000))
    elif online:
        try:
            if cfg.get("hub_loader") == "snapshot":
                download_snapshot(cfg)
                if name == "dolly":
                    split_dolly(directory, args.dev_num or cfg.get("dev_num", 1000))
            elif name == "ultrachat":
                prepare_ultrachat(cfg)
            elif name == "alpaca_eval":
                prepare_alpaca_eval(cfg)
            elif name == "mt_bench":
                prepare_mt_bench(cfg)
            elif cfg.get("hub_id"):
                for split, hub_split in (cfg.get("hub_splits") or {}).items():
                    download_hub_split(cfg, split, hub_split)
                if args.sample_train and not (directory / cfg["splits"]["train"]).exists():
                    sample_train_subset(cfg, args.sample_train, args.seed)
        except Exception as err:  # network problems: say what to do by hand
            print(f"{name}: download failed ({type(err).__name__}: {err})")
    else:
        source = f" (source: hub {cfg['hub_id']}; rerun online to download)" if cfg.get("hub_id") else ""
        print(f"{name}: offline (HF_HUB_OFFLINE set or --offline); nothing downloaded{source}.")
    print_manual_steps(cfg)
    counting_tokenizer = _NoChat() if cfg["prompt_format"] == "chat" else None
    for split in cfg["splits"]:
        try:
            print(f"  {name}/{split}: {len(load_examples(cfg, split, counting_tokenizer))} examples")
        except FileNotFoundError:
            print(f"  {name}/{split}: missing ({directory / cfg['splits'][split]})")


class _NoChat:
    """Stand-in tokenizer for counting: chat prompts are rendered as the bare user text."""
    chat_template = "counting"

    @staticmethod
    def apply_chat_template(messages, **_):
        return messages[0]["content"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=NAMES + ["all"])
    parser.add_argument("--split-only", action="store_true", help="dolly: re-split an existing raw.jsonl")
    parser.add_argument("--dev-num", type=int, default=None, help="dolly: dev lines taken from raw.jsonl")
    parser.add_argument("--offline", action="store_true", help="print instructions only")
    parser.add_argument("--sample-train", type=int, default=0,
                        help="gsm8k/dialogsum: write a seeded N-example hub train subset when the "
                             "Speculative-KD train file is missing (not the authors' subset)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    for name in NAMES if args.name == "all" else [args.name]:
        prepare(name, args)


if __name__ == "__main__":
    with one_line_errors("prepare_data.py"):  # a missing raw file or a malformed record: one line, no traceback
        main()

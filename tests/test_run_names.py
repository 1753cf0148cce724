"""Run names (directory and W&B name, one string): the objective and the overrides that change the result; paths hashed."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

from csd.config import run_name_from_overrides

REPO = Path(__file__).resolve().parent.parent


def excluded_keys() -> list[str]:
    return list(yaml.safe_load((REPO / "configs" / "config.yaml").read_text())["hydra"]["job"]["config"]
                ["override_dirname"]["exclude_keys"])


def resolved_run_name(*overrides: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "csd.train", *overrides, "--cfg", "job", "--resolve"], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return yaml.safe_load(result.stdout)


def test_the_issue_example_reads_short_and_paths_become_a_hash():
    cfg = resolved_run_name("model=tiny", "data=tiny", "model.student.name_or_path=/tmp/dsrun/student",
                            "model.teacher.name_or_path=/tmp/dsrun/te-6a7df47e38", "loss.temperature=1.5",
                            "optim.lr=5e-4", "logger=wandb", "logger.mode=offline", "output_root=/tmp/out",
                            "train.resume=auto", "train.log_every=5")
    name = cfg["run_name"]
    assert name.startswith("csd,data=tiny,model=tiny,optim.lr=5e-4,temperature=1.5,paths-"), name
    assert len(name.rsplit("paths-", 1)[1]) == 6 and "/" not in name and "dsrun" not in name
    assert cfg["output_dir"] == f"/tmp/out/default/{name}"


def test_names_are_stable_and_differ_exactly_where_the_result_can():
    exclude = excluded_keys()
    base = ["loss.weighting=TS", "optim.lr=1e-4", "model.student.name_or_path=/a/student"]
    name = run_name_from_overrides("csd", base, exclude)
    assert name == run_name_from_overrides("csd", list(reversed(base)), exclude)            # order does not matter
    bookkeeping = ["logger=wandb", "logger.project=p", "train.resume=auto", "output_root=/x", "train.save_every=10",
                   "experiment_name=t", "train.stop_after_steps=3", "loss=csd"]
    assert run_name_from_overrides("csd", base + bookkeeping, exclude) == name                # not in the name
    other_path = ["loss.weighting=TS", "optim.lr=1e-4", "model.student.name_or_path=/b/student"]
    assert run_name_from_overrides("csd", other_path, exclude) != name                       # sweep over paths
    assert run_name_from_overrides("csd", [*base, "train.seed=20"], exclude) != name
    assert run_name_from_overrides("csd", [], exclude) == "csd"


def test_long_names_keep_whole_items_and_stay_unique():
    exclude = excluded_keys()
    many = [f"train.option_{k}=value_{k}" for k in range(20)]
    first = run_name_from_overrides("csd", many, exclude)
    second = run_name_from_overrides("csd", [*many[:-1], "train.option_19=other"], exclude)
    assert len(first) <= 120 and first != second
    assert first.startswith("csd,train.option_0=value_0,") and ",more-" in first
    assert set(first.split(",")[1:-1]) <= set(many)  # whole items only, none cut in half


def test_each_rule_written_out_on_one_name():
    """Excluded keys (anywhere in the list), `loss.name`, `+`/`~`, the `loss.` prefix, and a path by each rule —
    PATH_KEYS as the last key part, a `_path`/`_dir`/`_file` suffix, `/` or `\\` in the value — hashed together:
    sha1 of the sorted `key=value` lines, 6 hex digits. The hash is part of the directory name that
    `train.resume=auto` looks for, so it must not change between versions."""
    paths = ["data.cache_dir=cache", "data.name=org/set", "data.path=fixtures", "data.root=C:\\data",
             "model.student.tokenizer=tok", "train.init_file=init", "train.ref_path=ref"]
    overrides = ["logger=wandb", "loss.name=csd", "+loss.temperature=1.5", "~train.lm_data", "train.kd_ratio=0.5",
                 *reversed(paths)]
    digest = hashlib.sha1("\n".join(paths).encode()).hexdigest()[:6]
    assert run_name_from_overrides("csd", overrides, excluded_keys()) == \
        f"csd,temperature=1.5,train.kd_ratio=0.5,~train.lm_data,paths-{digest}"


def test_names_are_shortened_from_121_characters():
    """120 characters stay; 121 become the whole items within the first 100 (none here) and a hash of the name."""
    exclude = excluded_keys()
    assert run_name_from_overrides("csd", ["train.x=" + "v" * 108], exclude) == "csd,train.x=" + "v" * 108  # 120
    long = "csd,train.x=" + "v" * 109
    assert run_name_from_overrides("csd", ["train.x=" + "v" * 109], exclude) == \
        f"csd,more-{hashlib.sha1(long.encode()).hexdigest()[:8]}"
    many = sorted(f"train.option_{k}=value_{k}" for k in range(20))  # option_0, option_10, option_11, option_12, ...
    full = ",".join(["csd", *many])
    kept = ",".join(["csd", *many[:3]])  # 76 characters; the fourth item would end at 101
    assert run_name_from_overrides("csd", many, exclude) == f"{kept},more-{hashlib.sha1(full.encode()).hexdigest()[:8]}"

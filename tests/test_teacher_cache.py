"""The teacher cache (csd/teacher_cache.py): training from it is training with the live teacher, it goes stale when
its inputs change, and a killed build never reads as complete.

Exactness runs use a float32 teacher and AdamW with eps = 1 (the update is ~lr·gradient, as tests/test_train.py's
fused test): a cached row off by one position or taken from another example changes the losses by far more than
the 1e-5 relative tolerance."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from csd.testing import FIXTURES, REPO

SHARP = ("loss=csd", "train.max_steps=3", "optim.lr=0.05", "optim.eps=1.0", "optim.scheduler=constant",
         "train.save_final_model=true", "train.eval_every=3")
CHAT = ("batches=chat_pairs", "data=chat_pairs", f"data.path={FIXTURES / 'chat_pairs'}",
        "data.splits.validation=train.jsonl", "train.batch_size=2")


def final_weights(summary_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(summary_dir / "final" / "model.safetensors"))


def no_teacher_body(monkeypatch, teacher_path: str) -> None:
    """Loading the teacher's weights fails the test: a run from a complete cache reads its head only."""
    import csd.models

    original = csd.models.load_weights

    def guarded(spec, dtype=None):
        assert str(spec.get("name_or_path")) != str(teacher_path), "the teacher's body was loaded"
        return original(spec, dtype)

    monkeypatch.setattr(csd.models, "load_weights", guarded)


def assert_same_training(live: dict, cached: dict, live_dir: Path, cached_dir: Path) -> None:
    assert len(live["history"]) == len(cached["history"]) == 3
    for a, b in zip(live["history"], cached["history"]):
        for key in ("train/kd", "train/ce", "train/grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
    for key in ("val/kd", "val/ce"):
        assert cached["evaluations"][-1][key] == pytest.approx(live["evaluations"][-1][key], rel=1e-5), key
    a, b = final_weights(live_dir), final_weights(cached_dir)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-7)


def padded_teacher(root: Path) -> str:
    """A teacher whose head has 24 rows beyond the tokenizer, made huge: any of them reaching the loss dominates."""
    from csd.testing import make_tiny_model, make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer(root)
    model = make_tiny_model(tokenizer, layers=1, hidden=32, vocab_size=len(tokenizer) + 24, seed=5)
    with torch.no_grad():
        model.get_output_embeddings().weight[len(tokenizer):] = 1e3
    model.save_pretrained(root)
    return str(root)


CASES = {
    "logits-token": ("train.head=logits",),
    "fused-token": ("train.head=fused",),
    "logits-sequence-kd0.3": ("train.head=logits", "loss.reduction=sequence", "train.kd_ratio=0.3"),
    "fused-sequence-kd0.3": ("train.head=fused", "loss.reduction=sequence", "train.kd_ratio=0.3"),
    "logits-padded-head": ("train.head=logits", "padded"),
    "fused-padded-head": ("train.head=fused", "padded"),
    "chat-pairs-logits": ("train.head=logits", "loss.reduction=sequence", *CHAT),
    "chat-pairs-fused": ("train.head=fused", *CHAT),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_from_the_cache_equals_the_live_teacher(case, train_config, tiny_pair, tmp_path, monkeypatch):
    from csd.teacher_cache import build_for
    from csd.train import run

    overrides = [o for o in CASES[case] if o != "padded"]
    teacher = padded_teacher(tmp_path / "padded") if "padded" in CASES[case] else tiny_pair[0]
    overrides.append(f"model.teacher.name_or_path={teacher}")
    live = run(train_config(*SHARP, *overrides, f"output_root={tmp_path}/live"))
    cache_cfg = train_config(*SHARP, *overrides, f"output_root={tmp_path}/cached", "train.teacher_cache=auto")
    folder = build_for(cache_cfg)
    assert json.loads((folder / "manifest.json").read_text())["splits"]["train"]["dtype"] == "F32"
    no_teacher_body(monkeypatch, teacher)
    cached = run(train_config(*SHARP, *overrides, f"output_root={tmp_path}/cached", "train.teacher_cache=auto"))
    assert_same_training(live, cached, tmp_path / "live" / "default" / "run", tmp_path / "cached" / "default" / "run")


def test_the_head_read_alone_is_the_loaded_models_head(tmp_path):
    """Tied (GPT-2: the head is the input embedding) and untied (tiny Llama) checkpoints, in the node's dtype."""
    from transformers import AutoModelForCausalLM

    from csd.models import load_teacher_head
    from csd.testing import save_tiny_checkpoint

    for arch in ("gpt2", "llama"):
        path = save_tiny_checkpoint(tmp_path / arch, arch=arch, seed=3)
        model = AutoModelForCausalLM.from_pretrained(path)
        for dtype, torch_dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            head = load_teacher_head({"name_or_path": str(path), "dtype": dtype})
            assert head.weight.dtype == torch_dtype and head.softcap is None
            torch.testing.assert_close(head.weight, model.get_output_embeddings().weight.detach().to(torch_dtype))


def test_soft_capped_logits_follow_transformers():
    """c·tanh(z / c) on hidden @ W.T, as Gemma 2 computes its final logits (an independent formula here)."""
    from csd.models import TeacherHead

    hidden, weight = torch.randn(5, 8, dtype=torch.float64), torch.randn(12, 8, dtype=torch.float64) * 10
    logits = TeacherHead(weight, softcap=30.0).logits(hidden, vocab=10)
    z = hidden @ weight[:10].T
    torch.testing.assert_close(logits, 30.0 * torch.tanh(z / 30.0))


def test_on_policy_batches_refuse_the_cache(train_config):
    from csd.train import run

    for source in ("imitkd", "gkd"):
        with pytest.raises(ValueError, match=f"train.teacher_cache holds the teacher on fixed sequences, but batches={source}"):
            run(train_config(f"batches={source}", "train.teacher_cache=auto"))


def cache_state(folder: Path) -> tuple[str, dict]:
    from safetensors.torch import load_file

    manifest = json.loads((folder / "manifest.json").read_text())
    shards = {p.name: load_file(str(p))["hidden"] for p in sorted(folder.glob("*.safetensors"))}
    return manifest["fingerprint"], shards


@pytest.mark.parametrize("change", ["data file", "max_length", "teacher weights"])
def test_a_changed_input_makes_the_cache_stale(change, train_config, tiny_pair, tmp_path, caplog, monkeypatch):
    """A cache in a fixed folder, then one input changed (the teacher's weights overwritten in the same folder): the
    cache is rebuilt, the line names what differs, and training equals the live teacher with the new input."""
    from csd.testing import save_tiny_checkpoint
    from csd.train import run

    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_pair[0], teacher)
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "instructions", data)
    common = (*SHARP, f"model.teacher.name_or_path={teacher}", f"data.path={data}")
    folder = tmp_path / "cache"
    run(train_config(*common, f"train.teacher_cache={folder}", f"output_root={tmp_path}/first"))
    old_fingerprint, _ = cache_state(folder)
    changed = []
    if change == "data file":
        lines = (data / "train.jsonl").read_text().splitlines()
        record = json.loads(lines[0])
        record["output"] = record.get("output", "") + " And one more sentence."
        (data / "train.jsonl").write_text("\n".join([json.dumps(record)] + lines[1:]) + "\n")
        expected = "splits.train"
    elif change == "max_length":
        changed = ["train.max_length=80"]
        expected = "lengths"
    else:
        save_tiny_checkpoint(teacher, arch="llama", layers=2, hidden=48, seed=7)
        expected = "teacher_files"
    live = run(train_config(*common, *changed, f"output_root={tmp_path}/live"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="csd.teacher_cache"):
        cached = run(train_config(*common, *changed, f"train.teacher_cache={folder}", f"output_root={tmp_path}/second"))
    rebuilt = [r.getMessage() for r in caplog.records if "rebuilding" in r.getMessage()]
    assert rebuilt and expected in rebuilt[0], caplog.text
    assert cache_state(folder)[0] != old_fingerprint
    assert_same_training(live, cached, tmp_path / "live" / "default" / "run", tmp_path / "second" / "default" / "run")


def build_command(tiny_pair, output_root: Path, folder: Path) -> list[str]:
    from csd.testing import tiny_run_overrides

    return [sys.executable, "-m", "csd.teacher_cache", *tiny_run_overrides(*tiny_pair, output_root),
            f"train.teacher_cache={folder}", "train.batch_size=4"]


@pytest.mark.parametrize("fault", ["cache_shard@1", "cache_manifest@1"])
def test_a_build_killed_anywhere_never_reads_as_complete(fault, tiny_pair, tmp_path):
    """SIGKILL after the first shard, and after every shard but before the manifest: no manifest is left; the next
    build keeps the finished shards and ends equal to an uninterrupted build."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "HYDRA_FULL_ERROR": "1"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(build_command(tiny_pair, tmp_path, whole), cwd=REPO, env=env, check=True, capture_output=True)
    result = subprocess.run(build_command(tiny_pair, tmp_path, killed), cwd=REPO, env={**env, "CSD_FAULT": fault},
                            capture_output=True, text=True)
    assert result.returncode == -9, result.stderr[-2000:]
    assert not (killed / "manifest.json").exists()
    finished = sorted(p.name for p in killed.glob("*.safetensors"))
    assert finished == (["train-00000.safetensors"] if fault == "cache_shard@1" else
                        ["train-00000.safetensors", "validation-00000.safetensors"])
    result = subprocess.run(build_command(tiny_pair, tmp_path, killed), cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"building {2 - len(finished)} of 2 shards" in result.stdout + result.stderr or len(finished) == 2
    (a_name, a), (b_name, b) = cache_state(whole), cache_state(killed)
    assert a_name == b_name and a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert not list(killed.glob(".*tmp*"))


def test_the_entry_point_answers_bad_input_in_one_line(tiny_pair, tmp_path):
    command = build_command(tiny_pair, tmp_path, tmp_path / "cache") + ["batches=gkd"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    result = subprocess.run(command, cwd=REPO, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("csd.teacher_cache: error: train.teacher_cache holds")

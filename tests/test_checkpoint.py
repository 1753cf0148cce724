"""Checkpoint files survive an interruption at any point: a save that dies midway leaves the previous version whole.

The kills are simulated in-process by making one write fail partway (as SIGKILL would stop it); the 2-process
version with real SIGKILLs is tests/test_distributed.py::test_zero3_killed_anywhere_resumes_to_the_uninterrupted_weights.
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
from pathlib import Path

import pytest
import torch

from csd import checkpoint
from csd.checkpoint import STATE_FILE, latest_checkpoint, recover_interrupted_saves, save_checkpoint, save_model
from csd.testing import make_tiny_model, make_tiny_tokenizer

ONE_PROCESS = types.SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None,
                                    get_state_dict=lambda model: model.state_dict(), unwrap_model=lambda model: model)


class Interrupted(Exception):
    """Stands for the SIGKILL that stops a write."""


@pytest.fixture
def pair(tmp_path):
    tokenizer = make_tiny_tokenizer(tmp_path / "tokenizer")
    return make_tiny_model(tokenizer, seed=1), make_tiny_model(tokenizer, seed=2), tokenizer


def loads_as(path: Path, model) -> bool:
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(path))
    return all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_a_best_save_killed_while_writing_leaves_the_previous_best_whole(pair, tmp_path, monkeypatch):
    old, new, tokenizer = pair
    save_model(ONE_PROCESS, old, tokenizer, tmp_path / "best")
    real_save = type(new).save_pretrained

    def dies_halfway(self, directory, **kwargs):  # the weights file is cut off mid-write
        real_save(self, directory, **kwargs)
        weights = Path(directory) / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        raise Interrupted

    monkeypatch.setattr(type(new), "save_pretrained", dies_halfway)
    with pytest.raises(Interrupted):
        save_model(ONE_PROCESS, new, tokenizer, tmp_path / "best")
    assert loads_as(tmp_path / "best", old)
    monkeypatch.undo()
    recover_interrupted_saves(tmp_path)  # the next run's start: the half-written folder goes
    assert [p.name for p in tmp_path.glob(".best*")] == []
    save_model(ONE_PROCESS, new, tokenizer, tmp_path / "best")
    assert loads_as(tmp_path / "best", new)


def test_a_kill_between_the_two_renames_is_undone_at_the_next_start(pair, tmp_path, monkeypatch):
    old, new, tokenizer = pair
    save_model(ONE_PROCESS, old, tokenizer, tmp_path / "best")
    real_rename = os.rename

    def second_rename_dies(source, target):
        if Path(source).name == ".best.writing":
            raise Interrupted
        real_rename(source, target)

    monkeypatch.setattr(checkpoint.os, "rename", second_rename_dies)
    with pytest.raises(Interrupted):
        save_model(ONE_PROCESS, new, tokenizer, tmp_path / "best")
    monkeypatch.undo()
    assert not (tmp_path / "best").exists() and (tmp_path / ".best.old").exists()
    recover_interrupted_saves(tmp_path)
    assert loads_as(tmp_path / "best", old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "tokenizer"]


@dataclasses.dataclass
class State:
    global_step: int


class SavingAccelerator(types.SimpleNamespace):
    """accelerate's save_state writes one file per rank; ``die_after`` stops it after that many files."""

    def __init__(self, die_after=None):
        super().__init__(is_main_process=True, wait_for_everyone=lambda: None)
        self.die_after = die_after

    def save_state(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        for rank in range(2):
            if self.die_after == rank:
                raise Interrupted
            (Path(path) / f"shard_{rank}.bin").write_text("weights")


def test_the_state_file_marks_a_checkpoint_complete_only_after_every_shard(tmp_path):
    save_checkpoint(SavingAccelerator(), tmp_path, State(1), keep=2)
    with pytest.raises(Interrupted):
        save_checkpoint(SavingAccelerator(die_after=1), tmp_path, State(2), keep=2)
    (tmp_path / "checkpoints" / "step_0000002" / "shard_7.bin").write_text("a killed attempt with more ranks")
    assert latest_checkpoint(tmp_path).name == "step_0000001"
    save_checkpoint(SavingAccelerator(), tmp_path, State(2), keep=2)  # the incomplete step_2 is redone whole
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "step_0000002").iterdir()) == [
        "shard_0.bin", "shard_1.bin", STATE_FILE]
    assert json.loads((tmp_path / "checkpoints" / "step_0000002" / STATE_FILE).read_text()) == {"global_step": 2}


def test_the_state_file_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / STATE_FILE
    target.write_text('{"global_step": 1}')
    monkeypatch.setattr(checkpoint.os, "replace", lambda *args: (_ for _ in ()).throw(Interrupted()))
    with pytest.raises(Interrupted):
        checkpoint.write_text_atomic(target, '{"global_step": 2}')
    assert json.loads(target.read_text()) == {"global_step": 1}


def test_pruning_keeps_the_newest_complete_checkpoints_not_a_killed_runs_leftovers(tmp_path):
    """A run killed while saving step 4 resumes from step 2; its step-3 save must not be pruned for the
    incomplete step 4, and a half-deleted old checkpoint never reads as complete."""
    checkpoints = tmp_path / "checkpoints"
    save_checkpoint(SavingAccelerator(), tmp_path, State(2), keep=1)
    (checkpoints / "step_0000004").mkdir()  # the killed run's incomplete save
    (checkpoints / "step_0000004" / "shard_0.bin").write_text("weights")
    save_checkpoint(SavingAccelerator(), tmp_path, State(3), keep=1)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_0000003"]
    assert latest_checkpoint(tmp_path).name == "step_0000003"

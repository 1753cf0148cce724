"""Checkpoints: the full training state for exact resume, and loadable models (best/, final/).

Kill anywhere, lose nothing but the steps since the last checkpoint:

- a checkpoint ``checkpoints/step_N`` is complete once its ``trainer_state.json`` exists, and that file is written
  last (after every rank's shards), to a temporary name and renamed; older checkpoints are renamed away before they
  are deleted, so a half-deleted one never reads as complete;
- ``best/`` and ``final/`` are written whole to a temporary folder and swapped in by renames; a kill between the two
  renames leaves ``.best.old``, which ``recover_interrupted_saves`` puts back before the run goes on.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Optional

STATE_FILE = "trainer_state.json"
FAULT_ENV = "CSD_FAULT"


def fault_point(name: str, step: int) -> None:
    """The kill tests' switch: ``CSD_FAULT=<name>@<step>`` SIGKILLs this process here (the launcher then stops the
    other ranks), as a cancelled job or a dead node would."""
    if os.environ.get(FAULT_ENV) == f"{name}@{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def write_text_atomic(path: Path, text: str) -> None:
    """``path`` holds either its old content or all of ``text``, whenever the process is killed."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _step_of(path: Path) -> int:
    return int(path.name.split("_")[1])


def latest_checkpoint(output_dir: Path) -> Optional[Path]:
    """The newest complete checkpoint (its state file is written last)."""
    complete = [p.parent for p in (output_dir / "checkpoints").glob(f"step_*/{STATE_FILE}")]
    return max(complete, key=_step_of, default=None)


def _remove(path: Path) -> None:
    """Delete a folder so that no kill leaves it half there under its own name: renamed away first."""
    doomed = path.with_name(f".deleting-{path.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _prune(checkpoints: Path, current: int, keep: int) -> None:
    """Keep the ``keep`` newest complete checkpoints up to ``current``; incomplete ones and any left by a killed run
    beyond ``current`` (this run resumed before them) go."""
    steps = sorted(_step_of(p) for p in checkpoints.glob("step_*"))
    complete = [s for s in steps if s <= current and (checkpoints / f"step_{s:07d}" / STATE_FILE).exists()]
    for step in sorted(set(steps) - set(complete[-keep:])):
        _remove(checkpoints / f"step_{step:07d}")
    for leftover in checkpoints.glob(".deleting-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def save_checkpoint(accelerator, output_dir: Path, state, keep: int) -> None:
    checkpoints = output_dir / "checkpoints"
    path = checkpoints / f"step_{state.global_step:07d}"
    if accelerator.is_main_process and path.exists():  # left incomplete by a killed run: start it afresh
        _remove(path)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(path))
    fault_point("save_state", state.global_step)
    accelerator.wait_for_everyone()  # every rank's shards are on disk before the state file says complete
    if accelerator.is_main_process:
        write_text_atomic(path / STATE_FILE, json.dumps(dataclasses.asdict(state)))
        _prune(checkpoints, state.global_step, keep)
    accelerator.wait_for_everyone()


def _swap_in(written: Path, path: Path, step: int) -> None:
    """Replace ``path`` by the complete folder ``written`` (two renames; see recover_interrupted_saves)."""
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.rename(path, old)
    fault_point(f"swap_{path.name}", step)
    os.rename(written, path)
    shutil.rmtree(old, ignore_errors=True)


def recover_interrupted_saves(output_dir: Path) -> None:
    """Undo what a kill during a save left: a ``best/`` or ``final/`` moved aside but not yet replaced is put back;
    half-written temporary folders are deleted."""
    if not output_dir.is_dir():
        return
    for old in output_dir.glob(".*.old"):
        path = output_dir / old.name[1:-len(".old")]
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, path)
    for written in output_dir.glob(".*.writing"):
        shutil.rmtree(written, ignore_errors=True)


def save_model(accelerator, student, tokenizer, path: Path, step: int = -1) -> None:
    """A from_pretrained-loadable model (LoRA students: the adapter) plus the tokenizer, replacing ``path`` whole."""
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(student)
    if accelerator.is_main_process:
        written = path.with_name(f".{path.name}.writing")
        shutil.rmtree(written, ignore_errors=True)
        accelerator.unwrap_model(student).save_pretrained(str(written), state_dict=state_dict)
        fault_point(f"save_{path.name}", step)
        tokenizer.save_pretrained(str(written))
        _swap_in(written, path, step)
    accelerator.wait_for_everyone()

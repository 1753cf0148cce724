"""Checkpoints: the full training state for exact resume, and loadable models (best/, final/)."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Optional

STATE_FILE = "trainer_state.json"


def latest_checkpoint(output_dir: Path) -> Optional[Path]:
    """The newest complete checkpoint (its state file is written last)."""
    complete = [p.parent for p in (output_dir / "checkpoints").glob(f"step_*/{STATE_FILE}")]
    return max(complete, key=lambda p: int(p.name.split("_")[1]), default=None)


def save_checkpoint(accelerator, output_dir: Path, state, keep: int) -> None:
    path = output_dir / "checkpoints" / f"step_{state.global_step:07d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        (path / STATE_FILE).write_text(json.dumps(dataclasses.asdict(state)))
        older = sorted((output_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[:-keep]
        for old in older:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def save_model(accelerator, student, tokenizer, path: Path) -> None:
    """A from_pretrained-loadable model (LoRA students: the adapter) plus the tokenizer."""
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(student)
    if accelerator.is_main_process:
        accelerator.unwrap_model(student).save_pretrained(str(path), state_dict=state_dict)
        tokenizer.save_pretrained(str(path))
    accelerator.wait_for_everyone()

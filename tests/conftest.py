"""Shared fixtures: tiny offline teacher/student checkpoints and a composer for trainer configs."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# Tiny models are dominated by per-op overhead, which a second thread only adds to on a 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """(teacher_dir, student_dir): tiny Llama models sharing one tokenizer, saved with save_pretrained."""
    from csd.testing import save_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny_pair")
    teacher = save_tiny_checkpoint(root / "teacher", arch="llama", layers=2, hidden=48, seed=1)
    student = save_tiny_checkpoint(root / "student", arch="llama", layers=1, hidden=32, seed=2)
    return str(teacher), str(student)


@pytest.fixture
def train_config(tiny_pair, tmp_path):
    """compose(extra overrides) -> a small, fast trainer config writing under tmp_path."""
    from csd.config import compose

    teacher, student = tiny_pair

    def make(*overrides: str):
        return compose([
            "model=tiny", f"model.teacher.name_or_path={teacher}", f"model.student.name_or_path={student}",
            "data=tiny", "train.batch_size=4", "train.max_steps=2", "train.max_length=96", "train.max_prompt_length=48",
            "train.eval_every=null", "train.save_every=null", "train.save_final_model=false",
            f"output_root={tmp_path}", "run_name=run", *overrides,
        ])

    return make

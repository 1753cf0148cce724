"""Launch settings without launching: DeepSpeed's batch arithmetic, ZeRO-3 partitioned shapes, and the refusals that
keep a multi-process run from silently running as something else (the multi-node launch: tests/test_cluster.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def partitioned(parameter: torch.nn.Parameter) -> torch.nn.Parameter:
    """What ZeRO-3's zero.Init leaves on a rank: an empty shard, the full shape in ``ds_shape``."""
    shard = torch.nn.Parameter(torch.empty(0))
    shard.ds_shape = parameter.shape
    return shard


def test_weight_decay_groups_use_the_full_shape_of_partitioned_parameters():
    from csd.optim import param_groups

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    full = param_groups(model, 0.1)
    for module in model:
        for name, parameter in list(module.named_parameters()):
            setattr(module, name, partitioned(parameter))
    sharded = param_groups(model, 0.1)
    assert [len(g["params"]) for g in full] == [len(g["params"]) for g in sharded] == [1, 3]
    assert [g["weight_decay"] for g in sharded] == [0.1, 0.0]


def test_head_size_reads_the_full_shape_under_zero3():
    from csd.models import head_size
    from csd.testing import make_tiny_model, make_tiny_tokenizer

    model = make_tiny_model(make_tiny_tokenizer(), layers=1, hidden=16)
    rows = head_size(model)
    model.lm_head.weight = partitioned(model.lm_head.weight)
    assert model.lm_head.weight.shape[0] == 0 and head_size(model) == rows


@pytest.mark.parametrize("rows, accumulation, world, total", [(2, 1, 2, 4), (8, 4, 16, 512), (1, 8, 8, 64)])
def test_deepspeed_batch_settings(rows, accumulation, world, total):
    from csd.distributed import deepspeed_batch_settings

    settings = deepspeed_batch_settings(rows, accumulation, world)
    assert settings == {"train_micro_batch_size_per_gpu": rows, "gradient_accumulation_steps": accumulation,
                        "train_batch_size": total}


def test_deepspeed_launch_with_accelerate_use_cpu_is_refused(monkeypatch):
    """ACCELERATE_USE_CPU=1 would turn a DeepSpeed launch file into plain DDP without a word."""
    from csd.config import compose
    from csd.distributed import make_accelerator

    for key, value in {"WORLD_SIZE": "2", "LOCAL_RANK": "0", "ACCELERATE_USE_DEEPSPEED": "true",
                       "ACCELERATE_USE_CPU": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match="ACCELERATE_USE_CPU"):
        make_accelerator(compose([]))


def test_zero3_refuses_a_student_cut_from_a_loaded_model(monkeypatch):
    """Checked by csd.config.validate from the launch's environment, before any model loads."""
    from csd.config import compose, validate

    validate(compose([]))  # one process: fine (the quickstart student keeps 8 of the teacher's 30 layers)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "1")
    validate(compose([]))  # ZeRO-1 keeps whole models: fine
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(ValueError, match="keep_layers"):
        validate(compose([]))

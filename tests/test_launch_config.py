"""Launch settings without launching: DeepSpeed's batch arithmetic, the multi-node files, ZeRO-3 partitioned shapes,
and the refusals that keep a multi-process run from silently running as something else."""
from __future__ import annotations

import os
import subprocess
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


def slurm_dry_run(nodes: int, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SLURM_NNODES": str(nodes), "MASTER_ADDR": "node001", "DRY_RUN": "1"}
    return subprocess.run(["bash", "scripts/slurm_multinode.sh", *overrides], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=30)


def test_two_node_launch_resolves_world_size_and_deepspeed_batch():
    from accelerate.commands.config.config_args import ClusterConfig

    from csd.config import compose
    from csd.distributed import deepspeed_batch_settings, micro_batch_rows

    result = slurm_dry_run(2, "experiment=table4_qwen", "train.grad_accum=4")
    assert result.returncode == 0, result.stderr
    command = result.stdout.split()
    config_file = command[command.index("--config_file") + 1]
    assert command[command.index("--machine_rank") + 1] == "$SLURM_NODEID"  # each node's own rank
    assert command[command.index("--main_process_ip") + 1] == "node001"
    overrides = command[command.index("csd.train") + 1:]
    cluster = ClusterConfig.from_yaml_file(str(REPO / config_file))
    assert (cluster.num_machines, cluster.num_processes) == (2, 16)
    assert cluster.distributed_type.value == "DEEPSPEED" and cluster.deepspeed_config["zero_stage"] == 3
    cfg = compose(overrides)
    settings = deepspeed_batch_settings(micro_batch_rows(cfg), cfg.train.grad_accum, cluster.num_processes)
    # Table 4: 2 prompts per process (a teacher and a student row each) x 4 accumulation x 16 processes = 128 prompts
    assert settings["train_micro_batch_size_per_gpu"] == 4
    assert settings["train_batch_size"] == 256 and settings["train_batch_size"] // 2 == 128


def test_slurm_script_refuses_a_node_count_other_than_the_launch_file():
    result = slurm_dry_run(3)
    assert result.returncode == 2 and "num_machines: 2" in result.stderr


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

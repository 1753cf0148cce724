"""SLURM without a cluster: scripts/slurm_multinode.sh for any node count and GPUs per node (the per-node command
resolved by accelerate's own launcher code into torchrun's nodes, processes and rank), and scripts/slurm_table_array.sh
(the jobs it submits, and each step's command), all with DRY_RUN=1."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def dry_run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CSD_", "GPUS_PER"))}
    environment.update(DRY_RUN="1", PYTHON=sys.executable, HF_HUB_OFFLINE="1", **env)
    return subprocess.run(["bash", f"scripts/{script}", *args], cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=120)


def resolved(node_command: str, rank: int):
    """What `accelerate launch` makes of one node's command on node `rank`: its args after the launch file is read
    and torchrun's fields are set (the launchers stopped before they start anything)."""
    import accelerate.commands.launch as launch
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    argv = shlex.split(node_command.replace("$SLURM_NODEID", str(rank)))
    argv = argv[argv.index("accelerate.commands.launch") + 1:argv.index("-m", 3)]
    seen = {}
    original = launch.deepspeed_launcher, launch.multi_gpu_launcher
    launch.deepspeed_launcher = lambda args: seen.update(args=args, env=prepare_deepspeed_cmd_env(args)[1])
    launch.multi_gpu_launcher = lambda args: seen.update(args=args, env=prepare_multi_gpu_env(args))
    try:
        launch.launch_command(launch.launch_command_parser().parse_args([*argv, "-m", "csd.train"]))
    finally:
        launch.deepspeed_launcher, launch.multi_gpu_launcher = original
    return seen["args"], seen["env"]


@pytest.mark.parametrize("nodes, gpus", [(2, 8), (4, 4), (3, 2), (1, 8)])
def test_any_node_count_and_gpus_per_node_resolve_to_that_many_processes(nodes, gpus):
    result = dry_run("slurm_multinode.sh", "experiment=table1", SLURM_NNODES=str(nodes), GPUS_PER_NODE=str(gpus),
                     MASTER_ADDR="node001")
    assert result.returncode == 0, result.stderr
    assert f"{nodes} node(s) x {gpus} GPU(s) = {nodes * gpus} processes" in result.stderr
    for rank in sorted({0, nodes - 1}):
        args, env = resolved(result.stdout.strip(), rank)
        assert (int(args.num_processes), int(args.num_machines)) == (nodes * gpus, nodes)
        assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
        assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
        if nodes > 1:  # torchrun: this many nodes of `gpus` processes, this node's rank, node 0 as the rendezvous
            assert (int(args.nnodes), int(args.nproc_per_node), args.node_rank) == (nodes, gpus, rank)
            assert args.rdzv_endpoint == "node001:29500" and args.deepspeed_multinode_launcher == "standard"


def test_gpus_per_node_come_from_slurm_and_the_launch_file_gives_the_kind():
    result = dry_run("slurm_multinode.sh", SLURM_NNODES="2", SLURM_GPUS_PER_NODE="h100:4", MASTER_ADDR="n0",
                     MASTER_PORT="29611", CSD_ACCELERATE_CONFIG="configs/accelerate/ddp_bf16_8gpu.yaml")
    assert result.returncode == 0, result.stderr
    assert "--deepspeed_multinode_launcher" not in result.stdout           # DDP: no DeepSpeed launcher flag
    args, _ = resolved(result.stdout.strip(), 1)
    assert (int(args.nnodes), int(args.nproc_per_node), args.node_rank, args.multi_gpu) == (2, 4, 1, True)
    assert args.rdzv_endpoint == "n0:29611" and not args.use_deepspeed


def test_two_nodes_keep_table4s_batch_with_the_launch_settings():
    from csd.config import compose
    from csd.distributed import deepspeed_batch_settings, micro_batch_rows

    result = dry_run("slurm_multinode.sh", "experiment=table4_qwen", "train.grad_accum=4", SLURM_NNODES="2",
                     MASTER_ADDR="node001")
    command = result.stdout.split()
    cfg = compose(command[command.index("csd.train") + 1:])
    args, _ = resolved(result.stdout.strip(), 0)
    settings = deepspeed_batch_settings(micro_batch_rows(cfg), cfg.train.grad_accum, int(args.num_processes))
    # Table 4: 2 prompts per process (a teacher and a student row each) x 4 accumulation x 16 processes = 128 prompts
    assert settings["train_micro_batch_size_per_gpu"] == 4 and settings["train_batch_size"] // 2 == 128


@pytest.mark.parametrize("env, message", [
    ({"SLURM_NNODES": "2", "GPUS_PER_NODE": "x"}, "must be positive integers"),
    ({"SLURM_NNODES": "2", "CSD_ACCELERATE_CONFIG": "configs/accelerate/nope.yaml"}, "nope.yaml: no such file"),
    ({}, "SLURM_NNODES is not set"),
])
def test_slurm_multinode_refuses_bad_sizes_and_files(env, message):
    result = dry_run("slurm_multinode.sh", MASTER_ADDR="n0", **env)
    assert result.returncode != 0 and message in result.stderr


def test_array_submits_the_caches_then_one_task_per_row_then_the_collection():
    from csd.tables import load_table

    result = dry_run("slurm_table_array.sh", "fig5a_temperature", "--sweep", "tau=0.5,3.0", "optim.lr=3e-5",
                     GPUS_PER_TASK="2", MAX_PARALLEL="1")
    assert result.returncode == 0, result.stderr
    rows = [r.row for r in load_table("fig5a_temperature", {"tau": ["0.5", "3.0"]}).runs]
    assert rows == ["csd_tau0.5", "csd_tau3.0"] and f"CSD_ARRAY_ROWS='{' '.join(rows)}'" in result.stderr
    jobs = [shlex.split(line) for line in result.stderr.splitlines() if line.startswith("CSD_ARRAY_STEP=")]
    assert [job[0] for job in jobs] == ["CSD_ARRAY_STEP=caches", "CSD_ARRAY_STEP=row", "CSD_ARRAY_STEP=collect"]
    caches, array, collect = ({item.split("=")[0]: item for item in job if item.startswith("--")} for job in jobs)
    assert caches["--gpus-per-node"] == array["--gpus-per-node"] == "--gpus-per-node=2"
    assert "--gpus-per-node" not in collect and array["--array"] == "--array=0-1%1"
    assert array["--dependency"] == "--dependency=afterok:CACHES_JOB_ID"
    assert collect["--dependency"] == "--dependency=afterok:ROW_JOB_ID"
    assert all(job[-4:] == ["fig5a_temperature", "--sweep", "tau=0.5,3.0", "optim.lr=3e-5"] for job in jobs)
    assert "2 rows (csd_tau0.5 csd_tau3.0)" in result.stdout


def test_each_array_step_runs_the_table_command_it_names():
    common = {"CSD_ARRAY_ROWS": "sft fkl rkl", "CUDA_VISIBLE_DEVICES": "2,3"}
    row = dry_run("slurm_table_array.sh", "table1", "optim.lr=1e-4", CSD_ARRAY_STEP="row", SLURM_ARRAY_TASK_ID="1",
                  **common)
    assert shlex.split(row.stdout)[1:] == ["-m", "csd.tables", "table1", "--only", "fkl", "--no-collect",
                                           "--devices", "2,3", "optim.lr=1e-4"]
    caches = dry_run("slurm_table_array.sh", "table1", CSD_ARRAY_STEP="caches", GPUS_PER_TASK="4")
    assert shlex.split(caches.stdout)[3:] == ["table1", "--caches-only", "--devices", "0,1,2,3"]  # no SLURM GPUs set
    collect = dry_run("slurm_table_array.sh", "table1", "--wandb", CSD_ARRAY_STEP="collect")
    assert shlex.split(collect.stdout)[1:] == ["-m", "csd.tables", "table1", "--wandb"]
    missing = dry_run("slurm_table_array.sh", "table1", CSD_ARRAY_STEP="row", **common)
    assert missing.returncode != 0 and "run as an array task" in missing.stderr

#!/usr/bin/env bash
#SBATCH --job-name=csd
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --output=outputs/slurm-%j.out
# One training run over several nodes: one `accelerate launch` per node, each starting its node's processes.
#   sbatch scripts/slurm_multinode.sh experiment=table4_qwen train.grad_accum=4              # 2 nodes x 8 GPUs
#   sbatch --nodes=4 --gpus-per-node=4 scripts/slurm_multinode.sh experiment=table4_qwen train.grad_accum=4
#   SBATCH_PARTITION=gpu SBATCH_ACCOUNT=proj SBATCH_TIMELIMIT=24:00:00 sbatch scripts/slurm_multinode.sh ...
# Sizes come from the allocation: --num_machines = nodes, --num_processes = nodes x GPUs per node (GPUS_PER_NODE,
# else SLURM_GPUS_PER_NODE / SLURM_GPUS_ON_NODE, else 8); CSD_ACCELERATE_CONFIG (default
# configs/accelerate/zero3_bf16_8gpu.yaml) gives only the kind (DeepSpeed stage, offload, bf16): its own sizes are
# overridden. Effective batch = train.batch_size x train.grad_accum x processes (table4_qwen: 2 x 4 x 16 = 128).
# MASTER_PORT (default 29500), PYTHON (default .venv/bin/python). DRY_RUN=1 prints each node's command instead.
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^#SBATCH/, "  #SBATCH"); sub(/^# ?/, ""); print}' "$0"; exit 0
fi
CONFIG="${CSD_ACCELERATE_CONFIG:-configs/accelerate/zero3_bf16_8gpu.yaml}"
PYTHON="${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python)}"
[[ -f "$CONFIG" ]] || { echo "slurm_multinode.sh: error: CSD_ACCELERATE_CONFIG=$CONFIG: no such file" >&2; exit 2; }

NODES="${SLURM_NNODES:?run under sbatch/srun (SLURM_NNODES is not set)}"
GPUS="${GPUS_PER_NODE:-${SLURM_GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}}"
GPUS="${GPUS##*:}"   # --gpus-per-node=h100:8 -> 8
if ! [[ "$NODES" =~ ^[1-9][0-9]*$ && "$GPUS" =~ ^[1-9][0-9]*$ ]]; then
  echo "slurm_multinode.sh: error: nodes '$NODES' and GPUs per node '$GPUS' must be positive integers" >&2; exit 2
fi
PROCESSES=$((NODES * GPUS))
if [[ -z "${MASTER_ADDR:-}" ]]; then
  MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
fi
MASTER_PORT="${MASTER_PORT:-29500}"
# Several DeepSpeed machines: one torchrun-style launcher per node (accelerate's "standard"), not pdsh over ssh.
MULTINODE=""
if grep -q '^distributed_type: *DEEPSPEED' "$CONFIG"; then MULTINODE="--deepspeed_multinode_launcher standard "; fi
echo "slurm_multinode.sh: $NODES node(s) x $GPUS GPU(s) = $PROCESSES processes ($CONFIG); effective batch =" \
     "train.batch_size x train.grad_accum x $PROCESSES" >&2
# One task per node; `$SLURM_NODEID` is expanded on each node (it is that node's machine rank).
NODE_COMMAND="$PYTHON -m accelerate.commands.launch --config_file $CONFIG --num_machines $NODES \
--num_processes $PROCESSES --machine_rank \$SLURM_NODEID --main_process_ip $MASTER_ADDR \
--main_process_port $MASTER_PORT ${MULTINODE}-m csd.train $(printf '%q ' "$@")"
if [[ -n "${DRY_RUN:-}" ]]; then echo "$NODE_COMMAND"; exit 0; fi
srun --ntasks="$NODES" --ntasks-per-node=1 bash -c "$NODE_COMMAND"

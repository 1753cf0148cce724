#!/usr/bin/env bash
#SBATCH --job-name=csd
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --output=outputs/slurm-%j.out
# Several nodes under SLURM: one `accelerate launch` per node, each starting its node's 8 processes.
#   sbatch scripts/slurm_multinode.sh experiment=table4_qwen train.grad_accum=4
#   CSD_ACCELERATE_CONFIG=configs/accelerate/zero3_bf16_2node_16gpu.yaml (default) picks the launch file;
#   --nodes must equal its num_machines. DRY_RUN=1 prints each node's command instead of running it.
# Effective batch = train.batch_size x train.grad_accum x 16 processes (table4_qwen: 2 x 4 x 16 = 128).
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
CONFIG="${CSD_ACCELERATE_CONFIG:-configs/accelerate/zero3_bf16_2node_16gpu.yaml}"
PYTHON="${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python)}"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,12p' "$0" | sed 's/^#SBATCH/  #SBATCH/; s/^# \{0,1\}//'; exit 0; fi

NODES="${SLURM_NNODES:?run under sbatch/srun (SLURM_NNODES is not set)}"
MACHINES=$(sed -n 's/^num_machines: *//p' "$CONFIG")
if [[ "$NODES" != "$MACHINES" ]]; then
  echo "slurm_multinode.sh: error: $NODES nodes allocated but $CONFIG has num_machines: $MACHINES" >&2; exit 2
fi
if [[ -z "${MASTER_ADDR:-}" ]]; then
  MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
fi
MASTER_PORT="${MASTER_PORT:-29500}"
# One task per node; `$SLURM_NODEID` is expanded on each node (it is that node's machine rank).
NODE_COMMAND="$PYTHON -m accelerate.commands.launch --config_file $CONFIG --machine_rank \$SLURM_NODEID \
--main_process_ip $MASTER_ADDR --main_process_port $MASTER_PORT -m csd.train $(printf '%q ' "$@")"
if [[ -n "${DRY_RUN:-}" ]]; then echo "$NODE_COMMAND"; exit 0; fi
srun --ntasks="$NODES" --ntasks-per-node=1 bash -c "$NODE_COMMAND"

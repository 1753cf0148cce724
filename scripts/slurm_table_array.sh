#!/usr/bin/env bash
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=16
# A paper table as a SLURM array job, one row per task (training, then evaluation), from a login node:
#   scripts/slurm_table_array.sh table1 [csd.tables options and overrides, e.g. --wandb optim.lr=3e-5]
# submits three jobs that share python -m csd.tables's skip-finished logic:
#   1. <table>-cache    python -m csd.tables <table> --caches-only: the teacher caches the rows read, built once
#   2. <table>          an array, task k: python -m csd.tables <table> --only <row k> --no-collect --devices <its GPUs>
#                       (after 1; a row with a launch file runs `accelerate launch` on that file's num_processes GPUs)
#   3. <table>-collect  python -m csd.tables <table>: every row finished, so it only collects, prints and publishes
#                       (after every task succeeded; otherwise run this script again: finished rows exit at once)
# GPUS_PER_TASK (default 1; Tables 3 and 4 rows take 4), MAX_PARALLEL (tasks at once, default all),
# SBATCH_PARTITION / SBATCH_ACCOUNT / SBATCH_TIMELIMIT (sbatch reads them for every job), PYTHON (default
# .venv/bin/python), logs under outputs/slurm/. DRY_RUN=1 prints the sbatch commands (or a task's command).
set -euo pipefail
SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" || $# -eq 0 ]]; then
  awk 'NR > 3 && !/^#/ {exit} NR > 3 {sub(/^# ?/, ""); print}' "$0"; exit 0
fi
PYTHON="${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python)}"
TABLES=("$PYTHON" -m csd.tables)
TABLE="$1"; shift
GPUS_PER_TASK="${GPUS_PER_TASK:-1}"
run() { if [[ -n "${DRY_RUN:-}" ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }
devices() { echo "${CUDA_VISIBLE_DEVICES:-$(seq -s, 0 $((GPUS_PER_TASK - 1)))}"; }   # SLURM sets the job's GPUs
# submit STEP sbatch ...: a job that runs this script at STEP (sbatch passes the environment on); prints its id
submit() {
  local step="$1"; shift
  if [[ -n "${DRY_RUN:-}" ]]; then echo "CSD_ARRAY_STEP=$step $(printf '%q ' "$@")" >&2; echo "${step^^}_JOB_ID"
  else CSD_ARRAY_STEP="$step" "$@" | cut -d';' -f1; fi
}

case "${CSD_ARRAY_STEP:-submit}" in
  caches) run "${TABLES[@]}" "$TABLE" --caches-only --devices "$(devices)" "$@" ;;
  row)
    read -r -a ROWS <<< "${CSD_ARRAY_ROWS:?the submitting step sets CSD_ARRAY_ROWS}"
    ROW="${ROWS[${SLURM_ARRAY_TASK_ID:?run as an array task}]}"
    run "${TABLES[@]}" "$TABLE" --only "$ROW" --no-collect --devices "$(devices)" "$@" ;;
  collect) run "${TABLES[@]}" "$TABLE" "$@" ;;
  submit)
    # The rows as the table resolves them (--sweep, --only included): the run_name of each dry-run config.
    export CSD_ARRAY_ROWS
    CSD_ARRAY_ROWS="$("${TABLES[@]}" "$TABLE" --dry-run "$@" | sed -n 's/^run_name: //p' | xargs)"
    read -r -a LIST <<< "$CSD_ARRAY_ROWS"
    [[ ${#LIST[@]} -gt 0 ]] || { echo "slurm_table_array.sh: error: $TABLE has no rows" >&2; exit 2; }
    [[ -n "${DRY_RUN:-}" ]] && echo "CSD_ARRAY_ROWS='$CSD_ARRAY_ROWS'" >&2
    mkdir -p outputs/slurm
    GPUS=(--gpus-per-node="$GPUS_PER_TASK")
    CACHE=$(submit caches sbatch --parsable "${GPUS[@]}" --job-name="$TABLE-cache" \
      --output="outputs/slurm/$TABLE-cache-%j.out" "$SCRIPT" "$TABLE" "$@")
    ARRAY=$(submit row sbatch --parsable "${GPUS[@]}" --job-name="$TABLE" \
      --array="0-$((${#LIST[@]} - 1))${MAX_PARALLEL:+%$MAX_PARALLEL}" --dependency="afterok:$CACHE" \
      --kill-on-invalid-dep=yes --output="outputs/slurm/$TABLE-%A_%a.out" "$SCRIPT" "$TABLE" "$@")
    COLLECT=$(submit collect sbatch --parsable --job-name="$TABLE-collect" --dependency="afterok:$ARRAY" \
      --kill-on-invalid-dep=yes --output="outputs/slurm/$TABLE-collect-%j.out" "$SCRIPT" "$TABLE" "$@")
    echo "slurm_table_array.sh: $TABLE: ${#LIST[@]} rows ($CSD_ARRAY_ROWS) as array $ARRAY after caches $CACHE;" \
         "then collect $COLLECT; logs in outputs/slurm/" ;;
  *) echo "slurm_table_array.sh: error: CSD_ARRAY_STEP=$CSD_ARRAY_STEP (caches | row | collect)" >&2; exit 2 ;;
esac

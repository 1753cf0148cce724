# Shared by scripts/table*.sh and scripts/fig*.sh: option parsing and the run list. Source it, then
#   add_run ROW EVAL_SETS OVERRIDE...   one training run (ROW names its directory) + evaluation on EVAL_SETS
#   launch                              hand the list to scripts/run_table.py
# Options of every table script (anything else is a Hydra override added to every run, e.g. logger=wandb):
#   --dry-run        print each run's resolved training config (YAML documents joined by ---), load nothing
#   --tiny           the whole table on tiny models + fixture data in a few minutes (writes under output_root)
#   --only ROW       only the named row(s) (repeatable); eval.<key>=<value> goes to csd.evaluate (eval.seeds=[10])
#   --force          retrain rows already finished with the same config (they are skipped by default)
#   --wandb          = logger=wandb; also publishes the collected table and figures to W&B (group = table)
# Environment: CSD_LAUNCH (default "python"; e.g. "accelerate launch --config_file configs/accelerate/zero3_bf16_4gpu.yaml")
# prefixes "-m csd.train" in real runs; PYTHON picks the interpreter (default .venv/bin/python if present).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"

MODE_ARGS=()     # --dry-run / --tiny / --force / --only for run_table.py
USER_OVERRIDES=()
TINY_OVERRIDES=()  # extra overrides a table needs under --tiny (set by the table script)
RUN_SPECS=()       # "ROW<TAB>EVAL_SETS<TAB>OVERRIDES" (overrides without spaces)

parse_args() {
  while (($#)); do
    case "$1" in
      --dry-run|--tiny|--force|--wandb) MODE_ARGS+=("$1") ;;
      --only) MODE_ARGS+=(--only "$2"); shift ;;
      -h|--help) grep '^#' "$0" | tail -n +2 | sed 's/^# \{0,1\}//'; sed -n '4,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) USER_OVERRIDES+=("$1") ;;
    esac
    shift
  done
}

add_run() {  # ROW EVAL_SETS OVERRIDE...
  local row="$1" eval_sets="$2"
  shift 2
  RUN_SPECS+=("${row}"$'\t'"${eval_sets}"$'\t'"$*")
}

launch() {  # TABLE: the shared experiment_name (one W&B group) of every run
  local table="$1" tiny=()
  for o in "${TINY_OVERRIDES[@]+"${TINY_OVERRIDES[@]}"}"; do tiny+=(--tiny-override "$o"); done
  printf '%s\n' "${RUN_SPECS[@]}" | "$PYTHON" scripts/run_table.py --table "$table" \
    "${MODE_ARGS[@]+"${MODE_ARGS[@]}"}" "${tiny[@]+"${tiny[@]}"}" -- "${USER_OVERRIDES[@]+"${USER_OVERRIDES[@]}"}"
}

#!/usr/bin/env bash
# CPU mini-reproduction of Table 1 (167 min of runs on 2 cores as recorded in docs/results/mini_table1.md):
# SmolLM2-135M-Instruct teacher -> its 8-layer cut, Table 1's ten objectives under one budget (96 optimizer steps x
# batch 8, bf16), each at its learning rate chosen on the validation prompts (grid 1e-4 3e-4 1e-3, seed 10), 3 seeds
# (10, 20, 30: data order and sampling), the release's evaluation decoding; ROUGE-L, distinct-n, self-BLEU, NLL of the
# references on 64 test prompts, mean ± std.
#   scripts/mini_table1.sh [--threads 1] [--seeds 10 20] [--lr-grid none] [hydra overrides, e.g. train.max_steps=48]
# Writes docs/results/mini_table1.{json,md,csv,png}; runs under outputs/cpu_sweep/ (shared with cpu_frontier.py; finished
# runs are read back, so an interrupted run resumes). On cores shared with other work pass --threads 1.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python )}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
for arg in "$@"; do
  if [[ "$arg" == -h || "$arg" == --help ]]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exec "$PYTHON" scripts/mini_table1.py --help
  fi
done
OUT="${MINI_OUT:-docs/results}"
start=$(date +%s)
"$PYTHON" scripts/mini_table1.py --out "$OUT" "$@"
"$PYTHON" scripts/plot_results.py --root /nonexistent --out "$OUT" --mini "$OUT/mini_table1.json"
echo "mini_table1.sh: wall time $(( $(date +%s) - start )) s"

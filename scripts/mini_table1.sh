#!/usr/bin/env bash
# CPU mini-reproduction of Table 1 (about 35-55 min on 2 shared CPU cores): SmolLM2-135M-Instruct teacher -> its
# 8-layer cut, objectives CSD, FKL, RKL, SFKL, SRKL, TVD, DLD under one budget (24 optimizer steps x batch 8, lr 2e-4
# cosine, the quickstart preset), 3 seeds (10, 20, 30: data order and sampling), ROUGE-L mean ± std on 64 test prompts.
#   scripts/mini_table1.sh [--threads 2] [--seeds 10 20] [hydra overrides, e.g. train.max_steps=40]
# Writes docs/results/mini_table1.{json,md,csv,png}; runs under outputs/mini_table1/.
# One thread by default: on 2 cores shared with other work, 2 OpenMP threads per process thrash (5x slower measured).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python )}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
for arg in "$@"; do
  if [[ "$arg" == -h || "$arg" == --help ]]; then
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exec "$PYTHON" scripts/mini_table1.py --help
  fi
done
OUT="${MINI_OUT:-docs/results}"
start=$(date +%s)
"$PYTHON" scripts/mini_table1.py --threads 1 --out "$OUT" train.max_steps=24 "$@"
"$PYTHON" scripts/plot_results.py --root /nonexistent --out "$OUT" --mini "$OUT/mini_table1.json"
echo "mini_table1.sh: wall time $(( $(date +%s) - start )) s"

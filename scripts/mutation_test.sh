#!/usr/bin/env bash
# Mutation testing (mutmut) of one module against the tests that should guard it; not part of CI (minutes per module).
#   scripts/mutation_test.sh csd/metrics.py tests/test_metrics.py
#   scripts/mutation_test.sh csd/evaluate.py tests/test_evaluate.py tests/test_evaluate_protocol.py tests/test_chat.py
# Runs in a fresh copy of the committed tree (git archive HEAD) under a temporary directory, so the checkout is never
# mutated; prints the score and every surviving mutant's diff, and the copy's path (`mutmut show NAME` there).
# Needs mutmut (pip install mutmut; tested with 3.8.1). Results of the last runs: docs/testing.md.
set -euo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
if [[ $# -lt 2 ]]; then
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
cd "$(dirname "$0")/.."
REPO="$PWD"
PYTHON="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo "$REPO/.venv/bin/python" || echo python )}"
MUTMUT="$(dirname "$PYTHON")/mutmut"
[[ -x "$MUTMUT" ]] || { echo "mutation_test.sh: mutmut not found next to $PYTHON; pip install mutmut" >&2; exit 1; }
module="$1"; shift
work="$(mktemp -d "${TMPDIR:-/tmp}/csd-mutation-XXXXXX")"
git archive HEAD | tar x -C "$work"
{
  printf '[mutmut]\nsource_paths=csd\nonly_mutate=%s\nalso_copy=\n    configs\n    data\n    scripts\n' "$module"
  printf 'pytest_add_cli_args_test_selection=\n'
  printf '    %s\n' "$@"
} > "$work/setup.cfg"
cd "$work"
# mutants/ must exist before Python starts: a path missing at start-up is cached as empty, and the editable install
# of the checkout would then be tested instead of the mutants.
mkdir mutants
start=$(date +%s)
PYTHONPATH="$work/mutants" HF_HUB_OFFLINE=1 nice -n 19 "$MUTMUT" run --max-children 2 > mutmut.log 2>&1 || true
tr '\r' '\n' < mutmut.log | grep -E '🎉' | tail -n 1
"$MUTMUT" results 2>/dev/null | awk -F': ' '{print $2}' | sort | uniq -c
for name in $("$MUTMUT" results 2>/dev/null | awk -F: '/survived/ {print $1}'); do
  echo "### $name"
  "$MUTMUT" show "$name" 2>/dev/null | grep -E '^[-+][^-+]' || true
done
echo "mutation_test.sh: $(( $(date +%s) - start )) s; mutants and log in $work"

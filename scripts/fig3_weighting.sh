#!/usr/bin/env bash
# Figure 3: CSD weighting functions (a, b) = (S,S), (U,S), (T,S) under the Table 1 setting, ROUGE-L on the five sets.
#   scripts/fig3_weighting.sh [--dry-run] [--tiny] [hydra overrides]
source "$(dirname "$0")/_common.sh"
parse_args "$@"
for weighting in SS US TS; do
  add_run "csd_$weighting" "[dolly,self_inst,vicuna,sinst,uinst]" experiment=fig3_weighting loss.weighting="$weighting"
done
launch fig3_weighting

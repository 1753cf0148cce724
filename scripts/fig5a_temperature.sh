#!/usr/bin/env bash
# Figure 5(a): temperature tau of the CSD (S,S) weights under the Table 1 setting (the paper's best: 1.5).
#   scripts/fig5a_temperature.sh [--dry-run] [--tiny] [hydra overrides]     TEMPERATURES="0.5 1.0" to change the sweep
source "$(dirname "$0")/_common.sh"
parse_args "$@"
for tau in ${TEMPERATURES:-0.5 1.0 1.5 2.0}; do
  add_run "csd_tau$tau" "[dolly,self_inst,vicuna,sinst,uinst]" experiment=fig5a_temperature loss.temperature="$tau"
done
launch fig5a_temperature

#!/usr/bin/env bash
# Table 5: weighted direct logit distillation, weight w in {S, T, U} x normalisation in {mean, min, max, std, range},
# against CSD, under the Table 1 setting (configs/experiment/table5_dld.yaml).
#   scripts/table5_dld_ablation.sh [--dry-run] [--tiny] [hydra overrides]
source "$(dirname "$0")/_common.sh"
parse_args "$@"
EVAL="[dolly,self_inst,vicuna,sinst,uinst]"
for weight in S T U; do
  for normalize in mean min max std range; do
    add_run "dld_${weight}_${normalize}" "$EVAL" experiment=table5_dld loss.weight="$weight" loss.normalize="$normalize"
  done
done
add_run csd "$EVAL" experiment=table5_dld loss=csd
launch table5_dld

#!/usr/bin/env bash
# Table 1: GPT-2 XL (SFT on Dolly) -> GPT-2 0.1B, off-policy KD, one run per objective
# (batch 8, temperature 1.0, 20 epochs; lr 1e-4 for CSD, 5e-4 for SFT and the baselines as DistiLLM: lr_of_objective
# in configs/experiment/table1.yaml), each scored by ROUGE-L on
# Dolly, Self-Instruct, Vicuna, S-NI and UnNI with 5 sampling seeds (configs/evaluate.yaml).
#   scripts/table1_instruction_following.sh [--dry-run] [--tiny] [--only csd] [hydra overrides, e.g. logger=wandb]
# Needs the teacher first: python -m csd.train experiment=sft_gpt2_xl (and the data: scripts/prepare_data.py).
source "$(dirname "$0")/_common.sh"
parse_args "$@"
EVAL="[dolly,self_inst,vicuna,sinst,uinst]"
add_run sft "$EVAL" experiment=table1 loss=sft train.kd_ratio=0.0   # SFT: cross-entropy on the references only
for loss in fkl rkl sfkl srkl js tvd ab dld csd; do
  add_run "$loss" "$EVAL" experiment=table1 loss="$loss"
done
launch table1

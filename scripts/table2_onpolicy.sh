#!/usr/bin/env bash
# Table 2: ImitKD + CSD (student samples, replay buffer 1000, + OpenWebText CE) for three pairs:
# GPT-2 XL -> 0.1B (lr 5e-4, batch 32), -> 0.3B (lr 1e-4, batch 32), OpenLLaMA2 7B -> 3B LoRA (lr 1e-4, batch 8, 10 epochs).
#   scripts/table2_onpolicy.sh [--dry-run] [--tiny] [--only gpt2_0.1b] [hydra overrides]
# Needs the SFT initialisations first: python -m csd.train experiment=sft_gpt2_init | sft_gpt2_medium_init |
# sft_openllama2_3b_lora (and the teachers: sft_gpt2_xl, sft_openllama2_7b_lora), plus data/openwebtext.
# The OpenLLaMA2 row wants CSD_LAUNCH="accelerate launch --config_file configs/accelerate/zero1_bf16_1gpu.yaml".
source "$(dirname "$0")/_common.sh"
parse_args "$@"
EVAL="[dolly,self_inst,vicuna,sinst,uinst]"
add_run gpt2_0.1b "$EVAL" experiment=table2_gpt2
add_run gpt2_0.3b "$EVAL" experiment=table2_gpt2_medium
add_run openllama2_3b "$EVAL" experiment=table2_openllama2
TINY_OVERRIDES=("train.lm_data={tiny_data}/openwebtext.yaml")
launch table2

#!/usr/bin/env bash
# Table 3: Gemma-7B-IT (SFT per task) -> Gemma-2B-IT; lr 1e-5, batch 1 x grad accumulation 8, seed 20, greedy evaluation:
#   gsm8k  CSD (T,S)               3 epochs   accuracy
#   summ   CSD mix (MM, alpha .15) 3 epochs   DialogSum ROUGE-L
#   mt     CSD (T,S)              10 epochs   Assamese->English BLEU (+ COMET if installed)
#   scripts/table3_task_specific.sh [--dry-run] [--tiny] [--only gsm8k] [hydra overrides]
# Needs the teachers first: python -m csd.train experiment=sft_gemma_7b_{gsm8k,dialogsum,translation}.
source "$(dirname "$0")/_common.sh"
parse_args "$@"
add_run gsm8k "[gsm8k]" experiment=table3_gsm8k
add_run summ "[dialogsum]" experiment=table3_summ
add_run mt "[translation]" experiment=table3_mt
launch table3

#!/usr/bin/env bash
# Table 4: general chat, CSD (S,S) on teacher + student responses, LoRA students; lr 5e-5, 1 epoch, effective batch 128
# (2 per GPU x 16 accumulation x 4 GPUs: CSD_LAUNCH="accelerate launch --config_file configs/accelerate/zero3_bf16_4gpu.yaml";
# on fewer GPUs raise train.grad_accum). Evaluation writes MT-Bench and AlpacaEval answer files (judging: docs/evaluation.md).
#   scripts/table4_chat.sh [--dry-run] [--tiny] [--only qwen] [hydra overrides]
# Needs the response pairs first: scripts/generate_responses.py (data/chat_pairs).
source "$(dirname "$0")/_common.sh"
parse_args "$@"
add_run qwen "[mt_bench,alpaca_eval]" experiment=table4_qwen
add_run gemma2 "[mt_bench,alpaca_eval]" experiment=table4_gemma2
# tiny: keep the chat-pairs format (the onpolicy source needs it), on the 2-pair fixture
TINY_OVERRIDES=(data=chat_pairs data.path=tests/fixtures/chat_pairs data.splits.validation=train.jsonl
                data.splits.test=train.jsonl train.batch_size=1 train.eval_generate=0)
launch table4

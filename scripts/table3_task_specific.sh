#!/usr/bin/env bash
# Table 3: Gemma-7B-IT (SFT per task) -> Gemma-2B-IT on GSM8K, DialogSum, Assamese->English.
# Rows and settings: configs/tables/table3.yaml; options: --help. The runner: python -m csd.tables table3.
cd "$(dirname "$0")/.." && exec "${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python)}" -m csd.tables table3 "$@"

#!/usr/bin/env bash
# Table 1: GPT-2 XL (SFT) -> GPT-2 0.1B, off-policy KD, one run per objective, ROUGE-L on five sets.
# Rows and settings: configs/tables/table1.yaml; options: --help. The runner: python -m csd.tables table1.
cd "$(dirname "$0")/.." && exec "${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python)}" -m csd.tables table1 "$@"

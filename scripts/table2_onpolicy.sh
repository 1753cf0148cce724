#!/usr/bin/env bash
# Table 2: ImitKD + CSD, GPT-2 XL -> 0.1B / 0.3B and OpenLLaMA2 7B -> 3B (LoRA).
# Rows and settings: configs/tables/table2.yaml; options: --help. The runner: python -m csd.tables table2.
cd "$(dirname "$0")/.." && exec "${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python)}" -m csd.tables table2 "$@"

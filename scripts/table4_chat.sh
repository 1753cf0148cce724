#!/usr/bin/env bash
# Table 4: general chat, CSD on teacher + student responses, Qwen2.5 7B -> 1.5B, Gemma-2 9B -> 2B.
# Rows and settings: configs/tables/table4.yaml; options: --help. The runner: python -m csd.tables table4.
cd "$(dirname "$0")/.." && exec "${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python)}" -m csd.tables table4 "$@"

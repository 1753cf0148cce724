#!/usr/bin/env bash
# Table 5: weighted direct logit distillation (weight x normalisation) against CSD.
# Rows and settings: configs/tables/table5.yaml; options: --help. The runner: python -m csd.tables table5.
cd "$(dirname "$0")/.." && exec "${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python)}" -m csd.tables table5 "$@"

#!/usr/bin/env bash
# Figure 3: CSD weighting functions (S,S), (U,S), (T,S) under the Table 1 setting.
# Rows and settings: configs/tables/fig3_weighting.yaml; options: --help. The runner: python -m csd.tables fig3_weighting.
cd "$(dirname "$0")/.." && exec "${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python)}" -m csd.tables fig3_weighting "$@"

#!/usr/bin/env bash
# Figure 5(a): temperature tau of the CSD (S,S) weights, Table 1 setting; TEMPERATURES="0.5 1.0" changes the sweep.
# Rows and settings: configs/tables/fig5a_temperature.yaml; options: --help. The runner: python -m csd.tables.
cd "$(dirname "$0")/.." && exec "${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python)}" \
  -m csd.tables fig5a_temperature ${TEMPERATURES:+--sweep "tau=${TEMPERATURES// /,}"} "$@"

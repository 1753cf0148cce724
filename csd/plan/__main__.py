"""python -m csd.plan <csd.train overrides> [--launch FILE] [--gpus N] [--gpu-memory 80GB] [--json]: the plan of one run
(csd/plan/cli.py)."""
from csd.inputs import one_line_errors
from csd.plan.cli import main

with one_line_errors("csd.plan"):
    main()

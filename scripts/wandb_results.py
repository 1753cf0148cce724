"""Publish collected paper tables and their figures to W&B: one run per table (job_type results) in the table's group.

    python scripts/wandb_results.py [--root outputs] [--tables table1 ...] [--project csd] [--mode online]
    (the same as collect_results.py --wandb or plot_results.py --wandb; python -m csd.tables does it when its runs log
    to W&B: logger=wandb or --wandb)
What each table's run logs: csd/results/publish.py. Offline unless WANDB_MODE=online or --mode online.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
from csd.results.collect import collect  # noqa: E402
from csd.results.publish import publish  # noqa: E402


def main(argv: Optional[list[str]] = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("outputs"))
    parser.add_argument("--tables", nargs="*", default=None, help="experiment names (default: all)")
    parser.add_argument("--project", default="csd")
    parser.add_argument("--entity", default=None)
    parser.add_argument("--mode", default=None, help="offline (default) | online; WANDB_MODE wins")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"--root {args.root}: no such directory (the output_root the runs were written under)")
    return publish(collect(args.root, args.tables), args.tables, root=args.root, project=args.project,
                   entity=args.entity, mode=args.mode)


if __name__ == "__main__":
    main()

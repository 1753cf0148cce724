"""Gather <root>/**/metrics.json into paper-shaped tables (markdown + CSV), the paper's values alongside.

    python scripts/collect_results.py [--root outputs] [--tables table1 fig5a_temperature] [--out results]
        [--reference data/paper_results.yaml] [--wandb [--wandb-project csd] [--wandb-mode online]]

--wandb publishes each table, paper column included, and its figures to W&B (csd/results/publish.py).
The library: csd/results/collect.py (layout read, table shape, paper column).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
# distinct_n: imported from here by tests and older scripts
from csd.results.collect import PAPER_RESULTS, Collected, collect, distinct_n  # noqa: E402, F401


def main(argv: Optional[list[str]] = None) -> Collected:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("outputs"))
    parser.add_argument("--tables", nargs="*", default=None, help="experiment names (default: all)")
    parser.add_argument("--reference", type=Path, default=PAPER_RESULTS)
    parser.add_argument("--out", type=Path, default=None, help="write <out>/results.md and results.csv")
    parser.add_argument("--wandb", action="store_true", help="publish each table and its figures to W&B")
    parser.add_argument("--wandb-project", default="csd")
    parser.add_argument("--wandb-mode", default=None, help="offline (default) | online; WANDB_MODE wins")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"--root {args.root}: no such directory (the output_root the runs were written under)")
    if not args.reference.is_file():
        parser.error(f"--reference {args.reference}: no such file")
    collected = collect(args.root, args.tables, args.reference)
    print(collected.markdown)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(collected.markdown, encoding="utf-8")
        (args.out / "results.csv").write_text(collected.csv, encoding="utf-8")
        print(f"wrote {args.out / 'results.md'} and {args.out / 'results.csv'}")
    if args.wandb:
        from csd.results.publish import publish

        publish(collected, args.tables, root=args.root, project=args.wandb_project, mode=args.wandb_mode)
    return collected


if __name__ == "__main__":
    main()

"""Figures as PNG from collected results (csd/results/collect.py) or the mini reproduction's JSON.

    python scripts/plot_results.py [--root outputs] [--out docs/results] [--mini docs/results/mini_table1.json]

Writes whichever of these have data:
    fig5a_temperature.png   ROUGE-L against the CSD temperature tau (rows csd_tau<tau> of fig5a_temperature),
                            one line per eval set
    fig3_weighting.png      ROUGE-L per weighting (rows csd_SS / csd_US / csd_TS of fig3_weighting), bars per eval set
    fidelity_diversity_<table>.png  ROUGE-L (fidelity) against distinct-2 of the sampled answers (diversity), one point
                            per row, averaged over eval sets
    mini_table1.png         from --mini: ROUGE-L mean ± std per objective, and fidelity against distinct-2
--wandb also logs each table's figures to W&B as charts (wandb.plot.line / bar / scatter) next to the PNGs and the
collected table (csd/results/publish.py; --wandb-project, --wandb-mode; offline unless WANDB_MODE=online).
The library: csd/results/plots.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
from csd.results.collect import collect  # noqa: E402
from csd.results.plots import mini_table1_figure, table_figures  # noqa: E402


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("outputs"))
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--mini", type=Path, default=None, help="docs/results/mini_table1.json")
    parser.add_argument("--wandb", action="store_true", help="also log each table and its figures to W&B")
    parser.add_argument("--wandb-project", default="csd")
    parser.add_argument("--wandb-mode", default=None, help="offline (default) | online; WANDB_MODE wins")
    args = parser.parse_args(argv)
    if args.mini and not args.mini.is_file():
        parser.error(f"--mini {args.mini}: no such file (scripts/mini_table1.py writes <out>/mini_table1.json)")
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    if args.mini:
        mini_table1_figure(args.mini, args.out / "mini_table1.png")
        written.append(args.out / "mini_table1.png")
    if args.root.exists():
        collected = collect(args.root)
        for table in collected.tables():
            written.extend(table_figures(collected, table, args.out))
        if args.wandb:
            from csd.results.publish import publish

            publish(collected, root=args.root, project=args.wandb_project, mode=args.wandb_mode, out=args.out)
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()

"""Publish collected paper tables and their figures to W&B: one run per table (job_type results) in the table's group.

    publish(collect("outputs", ["table1"]), ["table1"], root="outputs", mode="online")
    (the command lines: scripts/wandb_results.py, collect_results.py --wandb, plot_results.py --wandb; python -m
    csd.tables does it when its runs log to W&B: logger=wandb or --wandb)
Each table's run, named <table>-results in group <table> (the group of its training runs, one per row), logs
    results        a Table, one line per (row, eval set): loss, metric, mean, std, n, distinct-1/2, paper, diff
                   (ours − paper), paper_verified — results.csv's columns; the paper's value only where known
    results_grid   the markdown table as a Table: one line per row, "mean ± std [paper, diff]" per eval set
    figures/...    the table's figures as W&B charts (Fig. 5a: wandb.plot.line, Fig. 3: wandb.plot.bar,
                   fidelity–diversity: wandb.plot.scatter) and the PNGs (written to <root>/<table>/figures) as images.
Offline unless WANDB_MODE=online or mode="online"; W&B files under <root>/<table>/wandb (or WANDB_DIR).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Optional

from csd.logger import finish, start_wandb, wandb_dir, wandb_mode, warn_once
from csd.results.collect import CSV_FIELDS, Collected, markdown_cell


def results_table(collected: Collected, table: str):
    import wandb

    rows = []
    for cell in (c for c in collected.cells if c.table == table):
        record = dataclasses.asdict(cell) | {"diff": cell.diff}
        rows.append([record[k] for k in CSV_FIELDS])
    return wandb.Table(columns=CSV_FIELDS, data=rows, allow_mixed_types=True)


def grid_table(collected: Collected, table: str):
    import wandb

    rows, sets, grid = collected.grid(table)
    return wandb.Table(columns=["row", *sets], data=[[row, *(markdown_cell(grid.get((row, s))) for s in sets)]
                                                     for row in rows])


def publish(collected: Collected, tables: Optional[Iterable[str]] = None, *, root: Path | str, project: str = "csd",
            entity: Optional[str] = None, mode: Optional[str] = None, out: Optional[Path] = None) -> dict[str, str]:
    """Log each table (default: every collected one) to its own W&B run; returns {table: W&B run id}."""
    from csd.results.plots import table_figures, wandb_charts  # matplotlib: only when publishing

    ids = {}
    for table in tables or collected.tables():
        pngs = table_figures(collected, table, Path(out) if out else Path(root) / table / "figures")
        run = start_wandb(project=project, entity=entity, group=table, name=f"{table}-results", job_type="results",
                          tags=["results"], mode=wandb_mode(mode), dir=wandb_dir(Path(root) / table),
                          config={"table": table, "root": str(root)})
        if run is None:
            continue
        try:
            import wandb

            payload = {"results": results_table(collected, table), "results_grid": grid_table(collected, table),
                       **wandb_charts(collected, table)}
            payload.update({f"figures/{png.stem}": wandb.Image(str(png)) for png in pngs})
            run.log(payload)
            ids[table] = run.id
            print(f"W&B: {table} -> run {run.id} ({', '.join(payload)})")
        except Exception as error:  # noqa: BLE001 - the local table is written already; W&B is extra
            warn_once(f"W&B could not log table {table} ({type(error).__name__}: {error})")
        finish(run)
    return ids

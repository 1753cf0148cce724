"""Figures from collected results (csd.results.collect) or the mini reproduction's JSON; scripts/plot_results.py is
the command line.

    table_figures(collected, "fig5a_temperature", Path("docs/results"))   # the PNGs one table has data for
    wandb_charts(collected, "fig5a_temperature")                          # the same figures as W&B charts

The PNGs, whichever have data:
    fig5a_temperature.png   ROUGE-L against the CSD temperature tau (rows csd_tau<tau> of fig5a_temperature),
                            one line per eval set
    fig3_weighting.png      ROUGE-L per weighting (rows csd_SS / csd_US / csd_TS of fig3_weighting), bars per eval set
    fidelity_diversity_<table>.png  ROUGE-L (fidelity) against distinct-2 of the sampled answers (diversity), one point
                            per row, averaged over eval sets
    mini_table1.png         mini_table1_figure: ROUGE-L mean ± std per objective, and fidelity against distinct-2
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from csd.results.collect import Collected  # noqa: E402


def temperature_points(collected: Collected, table: str = "fig5a_temperature") -> dict[str, list[tuple[float, float]]]:
    """eval set -> [(tau, mean)] over the rows csd_tau<tau>, tau ascending."""
    rows, sets, grid = collected.grid(table)
    taus = {row: float(m[1]) for row in rows if (m := re.fullmatch(r"csd_tau([0-9.]+)", row))}
    order = sorted(taus, key=taus.get)
    points = {s: [(taus[r], grid[(r, s)].mean) for r in order if (r, s) in grid and grid[(r, s)].mean is not None]
              for s in sets}
    return {s: p for s, p in points.items() if p}


def temperature_curve(collected: Collected, path: Path, table: str = "fig5a_temperature") -> bool:
    points = temperature_points(collected, table)
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for eval_set, curve in points.items():
        ax.plot(*zip(*curve), marker="o", label=eval_set)
    ax.set(xlabel="temperature τ of the CSD weights", ylabel="ROUGE-L", title="Figure 5(a): temperature")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def weighting_bars(collected: Collected, path: Path, table: str = "fig3_weighting") -> bool:
    rows, sets, grid = collected.grid(table)
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(rows)
    for k, row in enumerate(rows):
        cells = [grid.get((row, s)) for s in sets]
        ax.bar([i + k * width for i in range(len(sets))], [c.mean if c and c.mean is not None else 0 for c in cells],
               width, yerr=[c.std or 0 if c else 0 for c in cells], label=row.removeprefix("csd_"), capsize=2)
    ax.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(sets))], sets)
    ax.set(ylabel="ROUGE-L", title="Figure 3: CSD weighting (a, b)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def fidelity_diversity(points: dict[str, tuple[float, float]], ax, title: str) -> None:
    """points: row -> (distinct-2, ROUGE-L)."""
    for row, (diversity, fidelity) in points.items():
        ax.scatter(diversity, fidelity)
        ax.annotate(row, (diversity, fidelity), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="distinct-2 of sampled answers (diversity)", ylabel="ROUGE-L (fidelity)", title=title)


def fidelity_diversity_points(collected: Collected, table: str) -> dict[str, tuple[float, float]]:
    """row -> (distinct-2, headline score), each averaged over the row's eval sets that have distinct-2."""
    rows, sets, grid = collected.grid(table)
    points = {}
    for row in rows:
        cells = [grid[(row, s)] for s in sets if (row, s) in grid and grid[(row, s)].distinct_2 is not None]
        if cells:
            points[row] = (statistics.fmean(c.distinct_2 for c in cells), statistics.fmean(c.mean for c in cells))
    return points


def fidelity_diversity_of_table(collected: Collected, table: str, path: Path) -> bool:
    points = fidelity_diversity_points(collected, table)
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(5, 4))
    fidelity_diversity(points, ax, f"{table}: fidelity vs diversity")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def table_figures(collected: Collected, table: str, out: Path) -> list[Path]:
    """The PNGs one table has data for: its figure (Fig. 5a, Fig. 3) and fidelity–diversity."""
    out.mkdir(parents=True, exist_ok=True)
    makers = {"fig5a_temperature": lambda path: temperature_curve(collected, path),
              "fig3_weighting": lambda path: weighting_bars(collected, path)}
    written = []
    if table in makers and makers[table](out / f"{table}.png"):
        written.append(out / f"{table}.png")
    if table != "mini_table1" and fidelity_diversity_of_table(collected, table, out / f"fidelity_diversity_{table}.png"):
        written.append(out / f"fidelity_diversity_{table}.png")
    return written


def wandb_charts(collected: Collected, table: str) -> dict:
    """The same figures as W&B charts: key -> wandb.plot.line / bar / scatter (each backed by its own Table)."""
    import wandb

    charts = {}
    if table == "fig5a_temperature" and (curves := temperature_points(collected, table)):
        data = [[tau, score, eval_set] for eval_set, curve in curves.items() for tau, score in curve]
        charts["figures/temperature"] = wandb.plot.line(wandb.Table(columns=["tau", "rougeL", "eval_set"], data=data),
                                                        "tau", "rougeL", stroke="eval_set",
                                                        title="Figure 5(a): ROUGE-L against the CSD temperature")
    rows, sets, grid = collected.grid(table)
    if table == "fig3_weighting" and rows:
        data = [[f"{row.removeprefix('csd_')} {s}", grid[(row, s)].mean] for s in sets for row in rows
                if (row, s) in grid and grid[(row, s)].mean is not None]
        charts["figures/weighting"] = wandb.plot.bar(wandb.Table(columns=["weighting", "rougeL"], data=data),
                                                     "weighting", "rougeL", title="Figure 3: CSD weighting (a, b)")
    if table != "mini_table1" and (points := fidelity_diversity_points(collected, table)):
        data = [[row, diversity, fidelity] for row, (diversity, fidelity) in points.items()]
        charts["figures/fidelity_diversity"] = wandb.plot.scatter(
            wandb.Table(columns=["row", "distinct_2", "score"], data=data), "distinct_2", "score",
            title=f"{table}: fidelity vs diversity")
    return charts


def mini_table1_figure(results_file: Path, path: Path) -> None:
    """Left: ROUGE-L mean ± std over seeds per model; right: ROUGE-L against distinct-2."""
    runs = json.loads(results_file.read_text())["runs"]
    rows = list(dict.fromkeys(r["row"] for r in runs))
    values = {row: [r["scores"] for r in runs if r["row"] == row] for row in rows}
    mean = lambda row, key: statistics.fmean(s[key] for s in values[row])  # noqa: E731
    std = lambda row, key: statistics.stdev([s[key] for s in values[row]]) if len(values[row]) > 1 else 0.0  # noqa: E731
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    colors = ["tab:gray" if row in ("teacher", "student_init") else "tab:red" if row == "csd" else "tab:blue" for row in rows]
    left.bar(rows, [mean(r, "rougeL") for r in rows], yerr=[std(r, "rougeL") for r in rows], color=colors, capsize=3)
    left.set(ylabel="ROUGE-L (%)", title=f"Mini Table 1 (CPU): mean ± std over {max(len(v) for v in values.values())} seeds")
    left.tick_params(axis="x", rotation=45)
    fidelity_diversity({r: (mean(r, "distinct_2"), mean(r, "rougeL")) for r in rows}, right, "fidelity vs diversity")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

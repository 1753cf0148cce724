"""Gather <root>/**/metrics.json into paper-shaped tables (markdown + CSV), the paper's values alongside.

    collected = collect("outputs", tables=["table1"])   # scripts/collect_results.py is the command line
    print(collected.markdown); Path("results.csv").write_text(collected.csv)

Layout it reads (what python -m csd.tables and scripts/mini_table1.py write):
    <root>/<table>/<row>/metrics.json        training summary of csd.train (experiment, run, loss, best, ...)
    <root>/<table>/<row>/eval/metrics.json   csd.evaluate's report: results[<set>] = {metric, mean, std, seeds, ...}
A row named ``<name>_seed<k>`` is one training seed of row <name>: such rows are merged, mean ± sample std over
the training seeds of each per-run mean. Without an evaluation, a row shows its training summary's best value.

Table shape: one line per row (objective), one column per eval set with its headline metric as mean ± std (ROUGE-L,
BLEU; GSM8K: the strict '####' accuracy as the paper reports it, with the loose extraction in a secondary column
"gsm8k (accuracy)"), then "average" over the row's sets where every set of the table shares one metric (the paper's
Table 1 average). Translation is reported in BLEU (always) or COMET (the optional extra; the paper's Table 3 metric), so
its columns say which: "translation (BLEU)" and, when COMET was computed, "translation (COMET)". The paper's value
(data/paper_results.yaml; blank where not known, never guessed) and the difference ours − paper follow in brackets; a
paper value is attached only to a column of its metric. The CSV is long: one line per (table, row, column).
distinct-n of the sampled answers (eval/<set>/seed*/answers.jsonl) goes into the CSV for the fidelity-diversity plot.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import statistics
from pathlib import Path
from typing import Iterable, Optional

from csd.metrics import distinct_n

REPO_ROOT = Path(__file__).resolve().parents[2]
PAPER_RESULTS = REPO_ROOT / "data" / "paper_results.yaml"
# Headline and secondary keys for evaluation files that do not name them ("primary"/"secondary", csd.evaluate).
MAIN_KEY = {"rougeL": "rougeL", "rouge": "rougeL", "gsm8k_accuracy": "accuracy_strict", "bleu": "bleu"}
SECONDARY_KEYS = {"gsm8k_accuracy": ["accuracy"], "bleu": ["comet"]}
# Metrics one set can be reported in interchangeably: every column of such a set names its metric.
NAMED_METRICS = {"bleu": "BLEU", "comet": "COMET"}
AVERAGE = "average"
SEED_SUFFIX = re.compile(r"^(?P<row>.+)_seed(?P<seed>\d+)$")
CSV_FIELDS = ["table", "row", "loss", "eval_set", "metric", "mean", "std", "n", "distinct_1", "distinct_2", "paper",
              "diff", "paper_verified"]


def format_mean_std(mean: float, std: Optional[float], digits: int = 2) -> str:
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


@dataclasses.dataclass
class Cell:
    """One (table, row, eval set) result."""
    table: str
    row: str
    loss: str
    eval_set: str
    metric: str
    mean: Optional[float]
    std: Optional[float]
    n: int                      # seeds behind mean (sampling seeds, or training seeds when merged)
    distinct_1: Optional[float] = None
    distinct_2: Optional[float] = None
    paper: Optional[float] = None
    paper_verified: Optional[bool] = None
    headline: bool = True       # False: a secondary metric of the set (own column), or the average
    dataset: Optional[str] = None  # the eval set when eval_set is a column label ("translation (COMET)")

    @property
    def diff(self) -> Optional[float]:
        return None if self.mean is None or self.paper is None else self.mean - self.paper


def _answers_distinct(set_dir: Path) -> tuple[Optional[float], Optional[float]]:
    """distinct-1/2 of each seed's answers, averaged over seeds."""
    per_seed = []
    for path in sorted(set_dir.glob("seed*/answers.jsonl")) + sorted(set_dir.glob("answers.jsonl")):
        texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        per_seed.append((distinct_n(texts, 1), distinct_n(texts, 2)))
    if not per_seed:
        return None, None
    return statistics.fmean(d for d, _ in per_seed), statistics.fmean(d for _, d in per_seed)


def column(eval_set: str, metric: str, headline: bool) -> str:
    """The column of a set's metric: the set's name for its headline, "<set> (<metric>)" for a secondary metric and
    for every metric in NAMED_METRICS."""
    if metric in NAMED_METRICS:
        return f"{eval_set} ({NAMED_METRICS[metric]})"
    return eval_set if headline else f"{eval_set} ({metric})"


def run_cells(run_dir: Path, table: str, row: str) -> list[Cell]:
    """Cells of one run directory: its evaluation if there is one, else its training summary's best value."""
    train_file, eval_file = run_dir / "metrics.json", run_dir / "eval" / "metrics.json"
    train = json.loads(train_file.read_text()) if train_file.exists() else {}
    loss = train.get("loss", "")
    if eval_file.exists():
        cells = []
        for name, result in json.loads(eval_file.read_text())["results"].items():
            if "mean" not in result:  # MT-Bench / AlpacaEval: answer files only, judged elsewhere
                cells.append(Cell(table, row, loss, name, "answers", None, None, 0))
                continue
            key = result.get("primary") or MAIN_KEY.get(result["metric"], result["metric"])
            n = len(result.get("seeds") or [None])
            d1, d2 = result["mean"].get("distinct_1"), result["mean"].get("distinct_2")
            if d1 is None:
                d1, d2 = _answers_distinct(run_dir / "eval" / name)
            cells.append(Cell(table, row, loss, column(name, key, True), key, result["mean"][key], result["std"].get(key),
                              n, d1, d2, dataset=name))
            for extra in result.get("secondary") or SECONDARY_KEYS.get(result["metric"], []):
                if extra in result["mean"]:
                    cells.append(Cell(table, row, loss, column(name, extra, False), extra, result["mean"][extra],
                                      result["std"].get(extra), n, headline=False, dataset=name))
        return cells
    best = train.get("best") or {}
    return [Cell(table, row, loss, key, key, value, None, 1) for key, value in best.items() if value is not None]


def merge_seeds(cells: list[Cell]) -> list[Cell]:
    """Rows <name>_seed<k> -> row <name>: mean ± sample std (ddof 1) over training seeds."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        match = SEED_SUFFIX.match(cell.row)
        row = match["row"] if match else cell.row
        groups.setdefault((cell.table, row, cell.eval_set), []).append(cell)
    merged = []
    for (table, row, eval_set), group in groups.items():
        if len(group) == 1 and not SEED_SUFFIX.match(group[0].row):
            merged.append(group[0])
            continue
        values = [c.mean for c in group if c.mean is not None]
        mean_of = lambda xs: statistics.fmean(xs) if xs else None  # noqa: E731
        merged.append(Cell(table, row, group[0].loss, eval_set, group[0].metric, mean_of(values),
                           statistics.stdev(values) if len(values) > 1 else (0.0 if values else None), len(values),
                           mean_of([c.distinct_1 for c in group if c.distinct_1 is not None]),
                           mean_of([c.distinct_2 for c in group if c.distinct_2 is not None]),
                           headline=group[0].headline, dataset=group[0].dataset))
    return merged


def add_averages(cells: list[Cell]) -> list[Cell]:
    """Per row, the mean over the table's eval sets (headline metric) when the table has at least two sets, all of
    one metric, and the row has a value for every one of them; otherwise no average cell."""
    averages = []
    for table in dict.fromkeys(c.table for c in cells):
        scored = [c for c in cells if c.table == table and c.headline and c.metric != "answers"]
        sets = set(c.eval_set for c in scored)
        metrics = set(c.metric for c in scored)
        if len(sets) < 2 or len(metrics) != 1:
            continue
        for row in dict.fromkeys(c.row for c in scored):
            values = {c.eval_set: c for c in scored if c.row == row and c.mean is not None}
            if set(values) == sets:
                first = next(iter(values.values()))
                averages.append(Cell(table, row, first.loss, AVERAGE, first.metric,
                                     statistics.fmean(c.mean for c in values.values()), None,
                                     min(c.n for c in values.values()), headline=False))
    return cells + averages


@dataclasses.dataclass
class PaperCell:
    value: float
    metric: Optional[str] = None   # None: the table's headline metric for that set
    verified: Optional[bool] = None


def load_reference(path: Path) -> dict:
    """{table: {"rows_by": "row" | "loss", "cells": {row: {eval_set: PaperCell}}}} from data/paper_results.yaml.

    A cell is a number or {value, metric, source, verified, note}; an absent or null cell is blank (unknown).
    rows_by: loss matches a run to a paper row by its objective instead of its row name (Table 3: our rows are
    tasks, the paper's rows objectives)."""
    import yaml

    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    tables = {}
    for table, spec in (data.get("tables") or {}).items():
        rows = {}
        for row, cells in (spec.get("cells") or {}).items():
            rows[row] = {}
            for eval_set, cell in (cells or {}).items():
                if isinstance(cell, dict):
                    cell = None if cell.get("value") is None else \
                        PaperCell(float(cell["value"]), cell.get("metric"), cell.get("verified"))
                elif cell is not None:
                    cell = PaperCell(float(cell))
                if cell is not None:
                    rows[row][eval_set] = cell
        tables[table] = {"rows_by": spec.get("rows_by", "row"), "cells": rows}
    return tables


def attach_paper(cell: Cell, paper: dict) -> None:
    spec = paper.get(cell.table)
    if not spec:
        return
    key = cell.loss if spec["rows_by"] == "loss" else cell.row
    entry = (spec["cells"].get(key) or {}).get(cell.dataset or cell.eval_set)
    if entry is None:
        return
    # a value without a metric belongs to the set's headline column (or the average), else to its metric's column
    same = (cell.headline or cell.eval_set == AVERAGE) if entry.metric is None else \
        (entry.metric == cell.metric or cell.metric == "answers")
    if same:
        cell.paper, cell.paper_verified = entry.value, entry.verified


@dataclasses.dataclass
class Collected:
    cells: list[Cell]

    def tables(self) -> list[str]:
        return list(dict.fromkeys(c.table for c in self.cells))

    def grid(self, table: str) -> tuple[list[str], list[str], dict]:
        """(rows, eval sets, {(row, set): cell}) of one table, in first-seen order."""
        cells = [c for c in self.cells if c.table == table]
        rows = list(dict.fromkeys(c.row for c in cells))
        sets = list(dict.fromkeys(c.eval_set for c in cells))
        return rows, sets, {(c.row, c.eval_set): c for c in cells}

    @property
    def markdown(self) -> str:
        parts = []
        for table in self.tables():
            rows, sets, grid = self.grid(table)
            metric = "/".join(dict.fromkeys(c.metric for c in self.cells if c.table == table))
            lines = [f"### {table} ({metric}; ours [paper, ours − paper])", "",
                     "| row | " + " | ".join(sets) + " |", "|---" * (len(sets) + 1) + "|"]
            for row in rows:
                lines.append(f"| {row} | " + " | ".join(markdown_cell(grid.get((row, s))) for s in sets) + " |")
            if any(c.table == table and c.paper is not None and c.paper_verified is False for c in self.cells):
                lines += ["", "Paper values from secondary sources, not yet checked against the paper's table "
                              "(verified: false in data/paper_results.yaml)."]
            parts.append("\n".join(lines))
        return "\n\n".join(parts) + "\n" if parts else "(no metrics.json found)\n"

    @property
    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for c in self.cells:
            record = dataclasses.asdict(c) | {"diff": c.diff}
            writer.writerow({k: ("" if record[k] is None else round(record[k], 4) if isinstance(record[k], float)
                                 else record[k]) for k in CSV_FIELDS})
        return buffer.getvalue()


def markdown_cell(cell: Optional[Cell]) -> str:
    if cell is None:
        return ""
    if cell.metric == "answers":
        return "answers written" + (f" [{cell.paper:.2f}]" if cell.paper is not None else "")
    text = "" if cell.mean is None else format_mean_std(cell.mean, cell.std if cell.n > 1 else None)
    if cell.paper is not None:
        text += f" [{cell.paper:.2f}, {cell.diff:+.2f}]" if cell.diff is not None else f" [{cell.paper:.2f}]"
    return text


def collect(root: Path | str, tables: Optional[Iterable[str]] = None,
            reference: Path | str = PAPER_RESULTS) -> Collected:
    """Every run under <root>/<table>/<row>/ (training and/or eval metrics.json), seeds merged, paper values attached."""
    root, wanted = Path(root), set(tables) if tables else None
    run_dirs = {p.parent.parent if p.parent.name == "eval" else p.parent for p in root.glob("*/*/**/metrics.json")}
    def launch_order(run_dir: Path) -> tuple:  # tables by name, rows in the order they ran (the script's order)
        return run_dir.parent.name, min(p.stat().st_mtime_ns for p in run_dir.glob("**/metrics.json")), run_dir.name

    cells = []
    for run_dir in sorted(run_dirs, key=launch_order):
        if run_dir.parent.parent != root:  # only <root>/<table>/<row>
            continue
        table = run_dir.parent.name
        if wanted is None or table in wanted:
            cells.extend(run_cells(run_dir, table, run_dir.name))
    cells = add_averages(merge_seeds(cells))
    paper = load_reference(Path(reference))
    for cell in cells:
        attach_paper(cell, paper)
    return Collected(cells)

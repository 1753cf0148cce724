"""The CPU sweep with the live teacher against the same sweep reading the teacher cache, in one run.

    python scripts/bench_sweep_cache.py [--objectives fkl srkl csd] [--seeds 10 20] [--steps 24]
        [--scratch outputs/bench_sweep_cache] [--out docs/bench/teacher_cache]

Runs `scripts/mini_table1.py` twice in fresh output folders (nothing read back, the cache built from nothing):
`train.teacher_cache=null`, then `train.teacher_cache=auto`; the same objectives, seeds, steps, the preset's learning
rate and the validation prompts only. Reports how long each sweep took, the time its runs spent training (the cache's
one-off build is inside the first cached run's) and scoring, and the ratios, in <out>/sweep.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODES = {"live": "train.teacher_cache=null", "cache": "train.teacher_cache=auto"}


def sweep(mode: str, args) -> dict:
    out = args.scratch / mode
    command = [sys.executable, str(REPO / "scripts" / "mini_table1.py"), "--objectives", *args.objectives,
               "--seeds", *map(str, args.seeds), "--steps", str(args.steps), "--lr-grid", "none",
               "--reference-seeds", "0", "--splits", "validation", "--threads", str(args.threads), "--no-resume",
               "--out", str(out), f"output_root={out / 'outputs'}", MODES[mode]]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    runs = json.loads((out / "mini_table1.json").read_text())["runs"]
    trained = [run for run in runs if "train_s" in run]
    return {"mode": mode, "override": MODES[mode], "wall_s": round(wall, 1), "runs": len(trained),
            "train_s": round(sum(run["train_s"] for run in trained), 1),
            "score_s": round(sum(run["wall_s"] - run["train_s"] for run in trained), 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objectives", nargs="+", default=["fkl", "srkl", "csd"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[10, 20])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scratch", type=Path, default=REPO / "outputs" / "bench_sweep_cache")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "teacher_cache")
    args = parser.parse_args(argv)
    rows = [sweep(mode, args) for mode in MODES]
    live, cache = rows
    ratios = {key: round(cache[key] / live[key], 3) for key in ("wall_s", "train_s")}
    command = "python scripts/bench_sweep_cache.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {"command": command, "objectives": args.objectives, "seeds": args.seeds, "steps": args.steps,
              "sweeps": rows, "cache_vs_live": ratios}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    lines = [f"# The CPU sweep with and without the teacher cache (scripts/bench_sweep_cache.py)", "",
             f"Command: `{command}`", "",
             f"{len(args.objectives)} objectives ({', '.join(args.objectives)}) x {len(args.seeds)} seeds x "
             f"{args.steps} steps of the quickstart pair (bf16, batch 8), each run scored on the 48 validation prompts.",
             "", "| teacher | runs | wall (s) | training (s) | scoring (s) |", "|---|---|---|---|---|"]
    lines += [f"| {row['override']} | {row['runs']} | {row['wall_s']} | {row['train_s']} | {row['score_s']} |"
              for row in rows]
    lines += ["", f"Cache / live: wall {ratios['wall_s']}x, training {ratios['train_s']}x (the cache's build is in "
              "the first cached run's training time)."]
    (args.out / "sweep.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""The plan's memory and step time against scripts/bench_train.py's measurements on this CPU (docs/plan.md).

    python scripts/bench_train.py --tiny --variants fp32 bf16 --steps 3 --warmup 1 --out docs/bench/plan_check/tiny
    python scripts/bench_train.py --variants fp32 --steps 2 --warmup 1 --out docs/bench/plan_check/quickstart_fp32
    python scripts/bench_train.py --variants bf16 --steps 2 --warmup 1 --out docs/bench/plan_check/quickstart_bf16
    python scripts/check_plan.py docs/bench/plan_check                      # the comparison, as a markdown table

For each measured variant, csd.plan plans the same run (one process, the variant's precision) at the widest batch of
the measured steps (the trainer pads to the longest sequence of a batch; the measured steps' batches are drawn
again with csd.step.optimizer_windows), and compares
  * the step's extra memory: plan (peak - weights - optimizer states - teacher) vs the measured resident-set peak
    above the resident set before the measured steps;
  * the process peak: plan total + the runtime (python, torch, transformers: the tiny fp32 run's peak RSS minus its
    plan) vs the measured peak RSS;
  * the step time: plan FLOPs per step / this CPU's matmul FLOP rate (measured here: 1024^3 GEMMs) vs measured.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
PRECISION = {"fp32": ("no", "float32"), "bf16": ("bf16", "bfloat16")}


def gemm_rate(dtype_name: str, size: int = 1024, repeats: int = 20) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def overrides_of(tiny: bool, scratch: Path, variant: str, batch_size: int, max_length: int) -> list[str]:
    from csd.testing import tiny_pair_overrides

    pair = tiny_pair_overrides(scratch) if tiny else ["experiment=quickstart", f"train.max_length={max_length}"]
    return [*pair, f"train.mixed_precision={PRECISION[variant][0]}", f"train.batch_size={batch_size}"]


def measured_width(cfg, warmup: int, steps: int) -> tuple[int, int]:
    """(the widest batch, the most target positions of a batch) among the measured optimizer steps (after the
    warm-up ones)."""
    from csd.models import load_tokenizer
    from csd.step import optimizer_windows
    from csd.teacher_cache import run_splits, target_counts

    split = run_splits(cfg, load_tokenizer(cfg.model.student))["train"]
    windows = optimizer_windows(len(split), cfg, 1, 0)[warmup: warmup + steps]
    width = max(min(len(split[int(i)]["input_ids"]), cfg.train.max_length) for window in windows
                for i in window.flatten())
    targets = max(sum(target_counts(split[int(i)]) for i in window.flatten()) for window in windows)
    return width, targets


def compare(report: dict, tiny: bool, scratch: Path) -> list[dict]:
    from csd.config import compose
    from csd.plan import Batch, Launch, plan_run

    command = report["command"].split()
    batch_size = int(command[command.index("--batch-size") + 1]) if "--batch-size" in command else 8
    max_length = 96 if tiny else int(command[command.index("--max-length") + 1]) if "--max-length" in command else 160
    rows = []
    for row in report["rows"]:
        cfg = compose(overrides_of(tiny, scratch, row["variant"], batch_size, max_length))
        warmup = int(command[command.index("--warmup") + 1]) if "--warmup" in command else 1
        width, targets = measured_width(cfg, warmup, row["steps_measured"])
        plan = plan_run(cfg, Launch(None), batch=Batch(batch_size, width, 1, 1, targets))
        memory = plan["memory_per_gpu_bytes"]
        persistent = memory["weights"] + memory["optimizer_states"] + memory.get("teacher", 0)
        rows.append({"pair": "tiny" if tiny else "quickstart", "variant": row["variant"], "width": width,
                     "plan_extra_mib": (memory["total"] - persistent) / 2**20, "measured_extra_mib": row["peak_extra_mib"],
                     "plan_total_mib": memory["total"] / 2**20, "measured_peak_rss_mib": row["peak_rss_mib"],
                     "flops_per_step": plan["flops_per_step"], "measured_s_per_step": row["seconds_per_step"]})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="holds tiny/, quickstart_fp32/, quickstart_bf16/ (bench_train.json each)")
    parser.add_argument("--scratch", type=Path, default=REPO / "outputs" / "bench_train")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    rows = []
    for report_path in sorted(args.folder.glob("*/bench_train.json")):
        rows += compare(json.loads(report_path.read_text()), report_path.parent.name == "tiny", args.scratch)
    tiny_fp32 = next(r for r in rows if r["pair"] == "tiny" and r["variant"] == "fp32")
    runtime = tiny_fp32["measured_peak_rss_mib"] - tiny_fp32["plan_total_mib"]
    rates = {variant: gemm_rate(PRECISION[variant][1]) for variant in PRECISION}
    lines = [f"Runtime (tiny fp32 peak RSS - its plan): {runtime:.0f} MiB; matmul rate on this CPU: "
             + ", ".join(f"{v} {r / 1e9:.0f} GFLOP/s" for v, r in rates.items()), "",
             "| pair | variant | widest batch | step extra: plan / measured (MiB) | error | process peak: plan + runtime / "
             "measured (MiB) | error | s/step: plan at the matmul rate / measured | achieved share of the matmul rate |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = r["plan_total_mib"] + runtime
        seconds = r["flops_per_step"] / rates[r["variant"]]
        lines.append(f"| {r['pair']} | {r['variant']} | {r['width']} | {r['plan_extra_mib']:.0f} / {r['measured_extra_mib']:.0f} | "
                     f"{r['plan_extra_mib'] / r['measured_extra_mib'] - 1:+.0%} | {peak:.0f} / {r['measured_peak_rss_mib']:.0f} | "
                     f"{peak / r['measured_peak_rss_mib'] - 1:+.0%} | {seconds:.2f} / {r['measured_s_per_step']:.2f} | "
                     f"{seconds / r['measured_s_per_step']:.1%} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

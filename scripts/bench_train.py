"""Tokens/s and peak memory of full optimizer steps of the real trainer (`csd.train.run`), variant against variant.

    python scripts/bench_train.py                       # quickstart pair (SmolLM2-135M teacher, 8-layer student)
    python scripts/bench_train.py --variants fp32 fp32_plain_ce --steps 3 --batch-size 8
    python scripts/bench_train.py --tiny                # tiny random pair (smoke test, seconds)

Variants (each in its own subprocess, so peaks do not mix):
  fp32            float32, logits path: CE and the objective chunked (the trainer's default)
  fp32_plain_ce   as fp32, but CE as before: F.cross_entropy(logits.float()) on the full (B, T, V) logits
  fp32_fused      float32, train.head=fused (no (B, T, V) logits at all)
  bf16            bf16 autocast (train.mixed_precision=bf16), logits path
  bf16_plain_ce   as bf16, with the CE of before (the float32 copy is a real copy of bf16 logits)
  bf16_mix, bf16_mix_plain_ce   bf16 with train.kd_ratio=0.5: the CE has a gradient (ours / before)
  bf16_fused      bf16 autocast, fused head
  bf16_cache, bf16_fused_cache   as bf16 / bf16_fused, the teacher read from its cache (train.teacher_cache): the cache
                  is built first by `python -m csd.teacher_cache` (timed: the one-off cost) in <scratch>/teacher_cache
    python scripts/bench_train.py --variants bf16 bf16_cache --out docs/bench/teacher_cache   # the issue-22 report
Per variant: `--warmup` steps, then the peak resident memory (VmHWM, reset through /proc/self/clear_refs; CUDA's
allocator peak on GPU) above the memory before the measured steps, and target tokens per second over `--steps`.
Writes docs/bench/bench_train.{md,json} (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

VARIANTS = {
    "fp32": ("float32, logits path (chunked CE + objective)", ["train.mixed_precision=no"]),
    "fp32_plain_ce": ("float32, logits path, CE on a float32 copy of the logits (before)", ["train.mixed_precision=no"]),
    "fp32_fused": ("float32, fused head (train.head=fused)", ["train.mixed_precision=no", "train.head=fused"]),
    "bf16": ("bf16 autocast, logits path", ["train.mixed_precision=bf16"]),
    "bf16_plain_ce": ("bf16 autocast, logits path, CE on a float32 copy of the logits (before)", ["train.mixed_precision=bf16"]),
    "bf16_mix": ("bf16, train.kd_ratio=0.5 (CE with gradient), chunked CE", ["train.mixed_precision=bf16", "train.kd_ratio=0.5"]),
    "bf16_mix_plain_ce": ("bf16, train.kd_ratio=0.5, CE on a float32 copy of the logits (before)",
                          ["train.mixed_precision=bf16", "train.kd_ratio=0.5"]),
    "bf16_fused": ("bf16 autocast, fused head", ["train.mixed_precision=bf16", "train.head=fused"]),
    "bf16_cache": ("bf16 autocast, logits path, teacher from its cache", ["train.mixed_precision=bf16"]),
    "bf16_fused_cache": ("bf16 autocast, fused head, teacher from its cache",
                         ["train.mixed_precision=bf16", "train.head=fused"]),
}


def pair_overrides(args) -> list[str]:
    if args.tiny:
        from csd.testing import tiny_pair_overrides

        return tiny_pair_overrides(args.scratch)
    return ["experiment=quickstart", f"train.max_length={args.max_length}"]


def cache_overrides(variant: str, args) -> list[str]:
    return [f"train.teacher_cache={args.scratch / 'teacher_cache' / variant}"] if variant.endswith("_cache") else []


def build_cache(variant: str, args) -> dict:
    """The one-off cost: `python -m csd.teacher_cache` for this variant's settings, timed, in its own process."""
    import tempfile

    folder = args.scratch / "teacher_cache" / variant
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, "-m", "csd.teacher_cache", *pair_overrides(args), *VARIANTS[variant][1],
               *cache_overrides(variant, args), f"train.batch_size={args.batch_size}", f"output_root={args.scratch}"]
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as errors:
        child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=errors, text=True,
                                 env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)})
        # this child's own rusage (RUSAGE_CHILDREN would be the largest of every worker run so far)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        if child.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"bench_train: building the cache failed:\n{errors.read()[-3000:]}")
    return {"variant": variant, "build_s": seconds, "disk_mib": sum(f.stat().st_size for f in folder.iterdir()) / 2**20,
            "build_peak_rss_mib": usage.ru_maxrss / 1024}


def plain_cross_entropy(logits, targets, reduction="mean", chunk_size=None, weights=None):
    """What the trainer did before: a float32 copy of the whole logits, then F.cross_entropy."""
    import torch.nn.functional as F

    from csd.losses import IGNORE_INDEX

    return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction)


def worker(variant: str, args) -> dict:
    import torch

    import csd.step
    import csd.train
    from bench_losses import current_memory, peak_memory, reset_peak
    from csd.config import compose

    torch.manual_seed(0)
    overrides = list(VARIANTS[variant][1]) + cache_overrides(variant, args) + [
        f"train.batch_size={args.batch_size}", f"train.max_steps={args.warmup + args.steps}",
        "train.eval_every=null", "train.save_every=null", "train.save_final_model=false", "logger=none",
        f"output_root={args.scratch}", f"run_name=bench_{variant}"]
    overrides = [*pair_overrides(args), *overrides]
    if variant.endswith("_plain_ce"):
        csd.step.chunked_cross_entropy = plain_cross_entropy
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    measured = {"tokens": 0.0, "seconds": 0.0, "peak": 0, "base": None}
    original_step = csd.step.train_step
    calls = {"n": 0}

    def timed_step(*step_args, **step_kwargs):
        calls["n"] += 1
        if calls["n"] <= args.warmup:
            return original_step(*step_args, **step_kwargs)
        if measured["base"] is None:
            measured["base"] = current_memory(device)
            reset_peak(device)
        start = time.perf_counter()
        metrics = original_step(*step_args, **step_kwargs)
        measured["seconds"] += time.perf_counter() - start
        measured["tokens"] += metrics["train/tokens"]
        measured["peak"] = max(measured["peak"], peak_memory(device))
        return metrics

    csd.step.train_step = timed_step
    summary = csd.train.run(compose(overrides))
    return {"variant": variant, "description": VARIANTS[variant][0],
            "tokens_per_s": measured["tokens"] / measured["seconds"], "seconds_per_step": measured["seconds"] / args.steps,
            "peak_rss_mib": measured["peak"] / 2**20,
            "peak_extra_mib": (measured["peak"] - measured["base"]) / 2**20,
            "train_kd_last": summary["history"][-1].get("train/kd"), "steps_measured": args.steps}


def write_report(rows: list[dict], args, command: str, builds: list[dict] = ()) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reference = {r["variant"]: r for r in rows}
    base = reference.get("fp32")
    lines = ["# Training-step benchmark (scripts/bench_train.py)", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads visible, "
             f"torch threads {args.threads}; pair: {'tiny' if args.tiny else 'quickstart (SmolLM2-135M teacher, 8-layer student)'}, "
             f"batch {args.batch_size}, max_length {args.max_length}, {args.warmup} warm-up + {args.steps} measured steps.", "",
             "| variant | what | tokens/s | s/step | peak RSS (MiB) | peak extra memory (MiB) | time vs fp32 | memory vs fp32 |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        speed = f"{base['tokens_per_s'] / row['tokens_per_s']:.2f}x" if base else ""
        memory = f"{row['peak_extra_mib'] / base['peak_extra_mib']:.2f}x" if base and base["peak_extra_mib"] > 0 else ""
        lines.append(f"| {row['variant']} | {row['description']} | {row['tokens_per_s']:.0f} | "
                     f"{row.get('seconds_per_step', float('nan')):.2f} | {row.get('peak_rss_mib', float('nan')):.0f} | "
                     f"{row['peak_extra_mib']:.0f} | {speed} | {memory} |")
    for built in builds:
        live = reference.get(built["variant"].removesuffix("_cache"))
        ratio = f"; its step takes {reference[built['variant']]['seconds_per_step'] / live['seconds_per_step']:.2f}x " \
                f"the live teacher's, peak RSS {reference[built['variant']]['peak_rss_mib'] / live['peak_rss_mib']:.2f}x" \
            if live and built["variant"] in reference else ""
        lines += ["", f"Cache for {built['variant']}: built once in {built['build_s']:.0f} s (`python -m csd.teacher_cache`, "
                  f"process peak RSS {built['build_peak_rss_mib']:.0f} MiB), {built['disk_mib']:.1f} MiB on disk{ratio}."]
    lines += ["", "Peak extra memory: resident-set high-water mark during the measured steps above the resident set "
              "before them (model, optimizer state and data are already allocated); peak RSS: the high-water mark of "
              "the whole process during the measured steps; s/step: mean seconds per measured optimizer step."]
    (out / "bench_train.md").write_text("\n".join(lines) + "\n")
    (out / "bench_train.json").write_text(json.dumps({"command": command, "rows": rows, "cache_builds": list(builds)}, indent=1))
    print("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    parser.add_argument("--tiny", action="store_true", help="tiny random pair instead of the quickstart pair")
    parser.add_argument("--out", default=str(REPO / "docs" / "bench"))
    parser.add_argument("--scratch", type=Path, default=REPO / "outputs" / "bench_train")
    parser.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print("RESULT " + json.dumps(worker(args.worker, args)))
        return
    command = "python scripts/bench_train.py " + " ".join(sys.argv[1:] if argv is None else argv)
    rows, builds = [], []
    for variant in args.variants:
        if variant.endswith("_cache"):
            builds.append(build_cache(variant, args))
            print(f"{variant}: cache built in {builds[-1]['build_s']:.0f} s, {builds[-1]['disk_mib']:.1f} MiB", flush=True)
        child = [sys.executable, __file__, "--worker", variant, *(sys.argv[1:] if argv is None else argv)]
        # Allocations over 1 MiB are mmap'd and returned on free (no glibc heap reuse), so the resident-set peak is
        # the peak of live memory rather than of what the allocator kept from earlier steps.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
        result = subprocess.run(child, capture_output=True, text=True, env=env)
        found = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
        if result.returncode != 0 or not found:
            raise SystemExit(f"bench_train: variant {variant} failed:\n{result.stderr[-3000:]}")
        rows.append(json.loads(found[-1][len("RESULT "):]))
        print(f"{variant}: {rows[-1]['tokens_per_s']:.0f} tokens/s, {rows[-1]['peak_extra_mib']:.0f} MiB extra", flush=True)
    write_report(rows, args, command, builds)


if __name__ == "__main__":
    main()

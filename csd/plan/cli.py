"""`python -m csd.plan` (one run) and `python -m csd.tables <table> --plan` (every row): the plan, the smallest change
that fits, printed as text or JSON (csd/plan/__init__.py has the numbers and where they come from)."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from csd.plan import (Batch, DEFAULT_MFU, Launch, keep_global_batch, launch_like, plan_run, read_launch)

STRONGER = {"single": ["zero3", "zero3_offload"], "ddp": ["zero3", "zero3_offload"], "zero1": ["zero3", "zero3_offload"],
            "zero2": ["zero3", "zero3_offload"], "zero3": ["zero3_offload"], "zero3_offload": []}


def parse_memory(text: str) -> float:
    """'80GB', '80', '40 GiB' -> GiB (a GPU sold as 80 GB has 80 GiB)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(gi?b)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"--gpu-memory takes e.g. 80GB, not {text!r}")
    return float(match.group(1))


def launch_for(file: Optional[str], gpus: Optional[int]) -> Launch:
    """The row's launch file, or the file of its kind for ``gpus`` GPUs (one GPU without DeepSpeed: one process)."""
    launch = read_launch(file)
    if gpus is None or gpus == launch.processes:
        return launch
    return launch_like(launch.kind, gpus)


def micro_batches(batch: Batch, per_example: int) -> list[Batch]:
    """The configured micro-batch, then smaller ones that keep the global batch (grad_accum grows)."""
    examples, total = batch.rows // per_example, batch.rows_per_step // per_example
    options = []
    for micro in range(examples, 0, -1):
        if total % (micro * batch.processes) == 0:
            options.append(Batch(micro * per_example, batch.length, total // (micro * batch.processes), batch.processes))
    return options


def suggest(cfg: DictConfig, launch: Launch, batch: Batch, gpu_memory_gb: float, mfu: float, data: dict) -> Optional[dict]:
    """The first change that fits, in this order: a smaller micro-batch (more accumulation, the same global batch),
    gradient checkpointing, both; then the same on ZeRO-3, then on ZeRO-3 with CPU offload (same GPU count)."""
    from csd.distributed import rows_per_example

    per_example = rows_per_example(cfg)
    launches = [launch]
    for kind in STRONGER[launch.kind]:
        try:
            launches.append(launch_like(kind, launch.processes))
        except ValueError:
            continue
    configured_checkpointing = bool(cfg.train.gradient_checkpointing)
    for candidate in launches:
        for checkpointing in dict.fromkeys([configured_checkpointing, True]):
            for micro in micro_batches(batch, per_example):
                if candidate is launch and checkpointing == configured_checkpointing and micro == batch:
                    continue
                plan = plan_run(cfg, candidate, gpu_memory_gb, mfu, micro, checkpointing, data)
                if plan["fits"]:
                    overrides = [f"train.batch_size={micro.rows // per_example}", f"train.grad_accum={micro.grad_accum}"]
                    overrides += [f"train.gradient_checkpointing={str(checkpointing).lower()}"]
                    return {"launch": candidate.file, "overrides": overrides,
                            "memory_per_gpu_gb": plan["memory_per_gpu_gb"]["total"], "gpu_hours": plan["gpu_hours"]}
    return None


def plan_config(cfg: DictConfig, launch_file: Optional[str], gpus: Optional[int], gpu_memory_gb: float,
                mfu: float = DEFAULT_MFU) -> dict:
    """The plan of one composed training config under a launch file (scaled to ``gpus`` keeping the global batch),
    with the smallest change that fits when it does not."""
    from csd.distributed import rows_per_example
    from csd.plan import data_facts
    from csd.plan.probe import local_config_dir

    launch = launch_for(launch_file, gpus)
    per_example = rows_per_example(cfg)
    paper = Batch(cfg.train.batch_size * per_example, cfg.train.max_length, cfg.train.grad_accum,
                  read_launch(launch_file).processes)
    batch = keep_global_batch(paper, launch.processes, per_example)
    data = data_facts(cfg, local_config_dir(cfg.model.student))
    plan = plan_run(cfg, launch, gpu_memory_gb, mfu, batch, None, data)
    plan["suggestion"] = None if plan["fits"] else suggest(cfg, launch, batch, gpu_memory_gb, mfu, data)
    return plan


def billions(count: Optional[int]) -> str:
    return "-" if count is None else f"{count / 1e9:.2f}B" if count >= 1e8 else f"{count / 1e6:.1f}M"


def describe(name: str, plan: dict) -> str:
    memory = plan["memory_per_gpu_gb"]
    parts = " + ".join(f"{key} {value:.2f}" for key, value in memory.items() if key != "total" and value)
    fits = "fits" if plan["fits"] else "DOES NOT FIT"
    lines = [f"{name}: {plan['teacher_arch'] or '-'} ({billions(plan['teacher_params'])}) -> {plan['student_arch']} "
             f"({billions(plan['student_params'])}, trainable {billions(plan['trainable_params'])})",
             f"  launch {plan['launch'] or 'one process'} ({plan['launch_kind']}, {plan['gpus']} GPU), micro-batch "
             f"{plan['micro_batch_rows']} rows x {plan['max_length']} tokens, grad_accum {plan['grad_accum']}, "
             f"checkpointing {'on' if plan['gradient_checkpointing'] else 'off'}"
             + (", teacher read from its cache" if plan["teacher_cache"] else ""),
             f"  per GPU (GiB): {parts}; peak {memory['total']:.2f} of {plan['gpu_memory_gb']:g}: {fits}",
             f"  activations without / with gradient checkpointing: {plan['activations_gb']['without_checkpointing']:.2f}"
             f" / {plan['activations_gb']['with_checkpointing']:.2f} GiB"]
    if plan["cpu_memory_gb"]:
        lines.append(f"  CPU memory for offloaded states: {plan['cpu_memory_gb']:.1f} GiB")
    if plan["teacher_cache_disk"]:
        cache = plan["teacher_cache_disk"]
        size = f"{cache['disk_gb']:.2f} GiB" if cache["disk_gb"] is not None else "unknown size"
        lines.append(f"  teacher cache on disk: {size} ({cache['bytes_per_target_position']} bytes per target position)")
    hours = plan["gpu_hours"]
    lines.append(f"  tokens/epoch {plan['tokens_per_epoch'] or '?'}, {plan['steps'] or '?'} steps, "
                 f"{plan['flops_per_step']:.2e} FLOPs/step, "
                 + (f"{plan['flops_per_run']:.2e} FLOPs/run; GPU-hours A100 {hours['A100']:.1f}, H100 {hours['H100']:.1f} "
                    f"at {plan['mfu']:.0%} MFU" if hours else "FLOPs/run unknown (no split size)"))
    if not plan["fits"]:
        change = plan.get("suggestion")
        lines.append("  smallest change that fits: " + (
            f"{' '.join(change['overrides'])}" + (f" with CSD_LAUNCH=\"accelerate launch --config_file {change['launch']}\""
                                                   if change["launch"] else " (one process)")
            + f" -> {change['memory_per_gpu_gb']:.2f} GiB" if change else "none on this many GPUs (more GPUs, or a "
            "smaller max_length)"))
    lines += [f"  {note}" for note in plan["notes"]]
    lines += ["  sources: " + "; ".join(f"{key}: {value}" for key, value in plan["sources"].items())]
    return "\n".join(lines)


def public(plan: dict) -> dict:
    return {key: value for key, value in plan.items() if key != "memory_per_gpu_bytes"}


SUMMARY_HEADER = ("| rows | teacher -> student | launch | micro-batch x accum | GiB per GPU | fits | smallest change that fits "
                  "| H100-hours |\n|---|---|---|---|---|---|---|---|")


def summary_cells(plan: dict) -> list[str]:
    change = plan.get("suggestion")
    if plan["fits"]:
        fix = ""
    elif change is None:
        fix = "none on this many GPUs"
    else:
        launch = f"{Path(change['launch']).stem}, " if change["launch"] and change["launch"] != plan["launch"] else ""
        fix = f"{launch}{' '.join(change['overrides'])} ({change['memory_per_gpu_gb']:.1f} GiB)"
    short = lambda arch: "-" if arch is None else arch.split("/")[-1]  # noqa: E731
    hours = plan["gpu_hours"]["H100"] if plan["gpu_hours"] else "?"
    return [f"{short(plan['teacher_arch'])} -> {short(plan['student_arch'])}",
            f"{Path(plan['launch']).stem if plan['launch'] else 'one process'}",
            f"{plan['micro_batch_rows']} x {plan['grad_accum']}", f"{plan['memory_per_gpu_gb']['total']:.1f}",
            "yes" if plan["fits"] else "**no**", fix, f"{hours}"]


def summary(named: list[tuple[str, dict]]) -> str:
    """One markdown line per row; consecutive rows with the same cells are one line (table1's objectives)."""
    groups: list[tuple[list[str], list[str]]] = []
    for name, plan in named:
        cells = summary_cells(plan)
        if groups and groups[-1][1] == cells:
            groups[-1][0].append(name)
        else:
            groups.append(([name], cells))
    lines = [SUMMARY_HEADER]
    for names, cells in groups:
        label = names[0] if len(names) == 1 else f"{names[0]} .. {names[-1].rsplit('/', 1)[-1]} ({len(names)} rows)"
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def print_plans(named: list[tuple[str, dict]], as_json: bool, as_summary: bool = False) -> None:
    if as_json:
        print(json.dumps([{"row": name, **public(plan)} for name, plan in named], indent=1))
    elif as_summary:
        print(summary(named))
    else:
        print("\n".join(describe(name, plan) for name, plan in named))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m csd.plan", description=__doc__,
                                     usage="%(prog)s [--launch FILE] [--gpus N] [--gpu-memory 80GB] [--json] "
                                           "[hydra overrides]")
    add_plan_options(parser)
    parser.add_argument("--launch", help="a configs/accelerate/ file (default: one process)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of csd.train (e.g. experiment=table3_gsm8k)")
    return parser


def add_plan_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus", type=int, help="plan on this many GPUs: the launch file of the same kind for them, "
                        "grad_accum keeping the global batch (default: the launch file's processes)")
    parser.add_argument("--gpu-memory", type=parse_memory, default=80.0, metavar="80GB", help="memory of one GPU")
    parser.add_argument("--mfu", type=float, default=DEFAULT_MFU, help="model-FLOPs utilisation for the GPU-hours")
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    parser.add_argument("--summary", action="store_true", help="one markdown table line per run (same lines merged)")


def main(argv: Optional[list[str]] = None) -> None:
    from csd.teacher_cache import compose_reading_cache

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parser().parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    _, cfg = compose_reading_cache(args.overrides, "null")  # the run as given (train.teacher_cache=... to plan one)
    print_plans([(cfg.run_name, plan_config(cfg, args.launch, args.gpus, args.gpu_memory, args.mfu))], args.json,
                args.summary)

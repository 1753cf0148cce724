"""A table's rows spread over a node's GPUs: ``python -m csd.tables <table> --devices 0,1,2,3,4,5,6,7``.

Each row runs as its own ``python -m csd.tables <table> --only <row> --no-collect`` (the same skip-finished logic,
training and evaluation as a sequential run) with its own ``CUDA_VISIBLE_DEVICES`` and rendezvous port, as soon as
enough devices are free, in table order (a row that fits the free devices starts while a bigger one waits):
  - a row without a launch file takes one device and runs ``python -m csd.train``;
  - a row with a launch file (its ``launch:``, e.g. configs/accelerate/zero3_bf16_4gpu.yaml) takes that file's
    ``num_processes`` devices and runs ``accelerate launch --config_file <file> --main_process_port <port>``;
  - CSD_LAUNCH set by the user replaces both for every row; its ``--num_processes N`` (else its launch file's
    num_processes, else 1) is the number of devices a row takes.
Every row gets MASTER_PORT=<port> too (where torch.distributed rendezvouses when started without a launcher); no two
rows share a port.
The teacher caches the rows read are built first (one job per cache, on the devices of its first row). Rows whose
training finished with the same config and whose evaluation exists are not started. Each job writes its output to
<output_root>/<experiment_name>/logs/<row>.log; this process prints one line when a row starts and one when it ends,
then a summary. A failed row does not stop the others; the table exits non-zero at the end when any row failed.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from csd.testing import free_port

ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]


def add_arguments(parser) -> None:
    parser.add_argument("--devices", default=None, metavar="IDS",
                        help="run the rows concurrently, spread over these GPUs (e.g. 0,1,2,3,4,5,6,7): one-GPU rows "
                        "one per device, multi-GPU rows on as many devices as their launch file's num_processes; each "
                        "row its own CUDA_VISIBLE_DEVICES, port and log (<output_root>/<experiment_name>/logs/<row>.log)")
    parser.add_argument("--no-collect", action="store_true", help="do not collect, print or publish the table at the "
                        "end (what --devices runs per row; the last command collects)")
    parser.add_argument("--caches-only", action="store_true", help="build the teacher caches the rows read, then "
                        "stop (the first job of scripts/slurm_table_array.sh, before the rows run concurrently)")


def parse_devices(text: str) -> list[str]:
    devices = [item.strip() for item in text.split(",") if item.strip()]
    if not devices or len(set(devices)) != len(devices):
        raise SystemExit(f"csd.tables: error: --devices {text!r}: give distinct device ids, e.g. --devices 0,1,2,3")
    return devices


def launch_processes(config_file: str | Path) -> int:
    """num_processes of an accelerate launch file (1 when it names none)."""
    import yaml

    path = Path(config_file)
    if not path.is_file():
        raise SystemExit(f"csd.tables: error: launch file {config_file}: no such file")
    return int((yaml.safe_load(path.read_text()) or {}).get("num_processes") or 1)


def user_launch_processes(launch: list[str]) -> int:
    """The devices one run of CSD_LAUNCH takes: its --num_processes, else its --config_file's, else 1."""
    for flag, read in (("--num_processes", int), ("--config_file", launch_processes)):
        for k, item in enumerate(launch):
            if item == flag and k + 1 < len(launch):
                return read(launch[k + 1])
            if item.startswith(flag + "="):
                return read(item.split("=", 1)[1])
    return 1


def is_accelerate(launch: list[str]) -> bool:
    return any(Path(item).name == "accelerate" or item.startswith("accelerate.commands") for item in launch)


def row_launch(launch_file: Optional[str], user_launch: Optional[str]) -> tuple[list[str], int]:
    """(launch prefix of ``-m csd.train``, devices) of a row: CSD_LAUNCH if the user set one, else the row's launch
    file through accelerate, else this python on one device ([] = the child's default)."""
    if user_launch:
        launch = shlex.split(user_launch)
        return launch, user_launch_processes(launch)
    if launch_file:
        return [*ACCELERATE, "--config_file", launch_file], launch_processes(launch_file)
    return [], 1


@dataclasses.dataclass
class Job:
    name: str                 # the row, or "teacher cache (rows ...)"
    command: list[str]        # direct: what follows the launch (-m csd.teacher_cache ...); else the whole command
    devices: int              # how many it takes
    launch: list[str]         # its launch ([]: python), given CSD_LAUNCH; an accelerate launch gets its port
    log: Path
    direct: bool = False      # the command runs under the launch itself (else the launch goes to CSD_LAUNCH)
    # filled in when it runs
    assigned: list[str] = dataclasses.field(default_factory=list)
    port: Optional[int] = None
    status: Optional[int] = None
    seconds: float = 0.0


def launch_with_port(job: Job) -> list[str]:
    """The job's launch with its own rendezvous port (accelerate's --main_process_port; other launches as given)."""
    return [*job.launch, *(["--main_process_port", str(job.port)] if is_accelerate(job.launch) else [])]


def job_command(job: Job) -> list[str]:
    return [*(launch_with_port(job) or [sys.executable]), *job.command] if job.direct else job.command


def job_env(job: Job, base: dict) -> dict:
    """The job's environment: its devices, its port (MASTER_PORT; and CSD_LAUNCH with it), its launch; nothing else
    changed."""
    env = {**base, "CUDA_VISIBLE_DEVICES": ",".join(job.assigned), "MASTER_PORT": str(job.port)}
    env.pop("CSD_LAUNCH", None)
    if job.launch:
        env["CSD_LAUNCH"] = shlex.join(launch_with_port(job))
    return env


def run_jobs(jobs: list[Job], devices: list[str], prefix: str, env: Optional[dict] = None, poll_s: float = 0.5,
             start: Optional[Callable] = None) -> list[Job]:
    """Run every job once, each on ``job.devices`` of ``devices`` that no other running job holds, in order (every
    waiting job that fits the free devices starts); returns the jobs with status (exit code) and seconds filled in.
    ``start``: subprocess.Popen's signature (tests pass fakes)."""
    start = start or subprocess.Popen
    too_big = [job for job in jobs if job.devices > len(devices)]
    if too_big:
        job = too_big[0]
        raise SystemExit(f"csd.tables: error: {prefix}/{job.name} takes {job.devices} devices (its launch: "
                         f"{shlex.join(job.launch)}) but --devices gives {len(devices)}: pass more devices, or set "
                         f"CSD_LAUNCH with --num_processes {len(devices)} and a train.grad_accum that keeps the batch")
    base = dict(os.environ if env is None else env)
    free, waiting, running, ports = list(devices), list(jobs), {}, set()
    while waiting or running:
        for job in list(waiting):
            if job.devices > len(free):
                continue
            job.assigned, free = free[:job.devices], free[job.devices:]
            while (port := free_port()) in ports:  # two jobs never share a port, even one just released
                pass
            job.port = port
            ports.add(port)
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with open(job.log, "w") as log:
                process = start(job_command(job), env=job_env(job, base), stdout=log, stderr=subprocess.STDOUT)
            running[job.name] = (job, process, time.monotonic())
            waiting.remove(job)
            print(f"== {prefix}/{job.name}: started on device{'s' * (job.devices > 1)} {','.join(job.assigned)} "
                  f"(port {job.port}); log {job.log}", flush=True)
        time.sleep(poll_s)
        for name, (job, process, started) in list(running.items()):
            if process.poll() is None:
                continue
            job.status, job.seconds = process.returncode, time.monotonic() - started
            free = [d for d in devices if d in free or d in job.assigned]  # back in --devices order
            del running[name]
            outcome = "" if job.status == 0 else f" (exit {job.status}): {last_line(job.log)[:300]}"
            print(f"== {prefix}/{job.name}: {'done' if job.status == 0 else 'FAILED'} after {job.seconds / 60:.1f} min"
                  f"{outcome}", flush=True)
    return jobs


def last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] if path.exists() else []
    return lines[-1].strip() if lines else "(no output)"


def summary(prefix: str, jobs: list[Job], skipped: list[str], not_run: dict[str, str]) -> str:
    lines = [f"== {prefix}: {sum(j.status == 0 for j in jobs)} done, {sum(j.status != 0 for j in jobs)} failed, "
             f"{len(skipped)} already finished, {len(not_run)} not run"]
    for job in jobs:
        state = "done" if job.status == 0 else f"FAILED (exit {job.status})"
        lines.append(f"   {job.name:<28} {state:<18} devices {','.join(job.assigned):<16} {job.seconds / 60:6.1f} min  "
                     f"{job.log}")
    lines += [f"   {row:<28} finished before, not run again" for row in skipped]
    lines += [f"   {row:<28} not run: {why}" for row, why in not_run.items()]
    return "\n".join(lines)


def child_arguments(args) -> list[str]:
    """The parent's command line for one row: its table, --tiny/--force/--wandb/--sweep and overrides."""
    return [args.table, *["--tiny"] * args.tiny, *["--force"] * args.force, *["--wandb"] * args.wandb,
            *(f"--sweep={sweep}" for sweep in args.sweep), *args.overrides]


def run_on_devices(args, configured: list, name: str, root: Path, cache_overrides: list[tuple[list[str], list[str]]],
                   finished_rows: set[str]) -> int:
    """The rows of ``configured`` ((Run, overrides, config) each) as jobs over ``args.devices``; ``cache_overrides``:
    (csd.teacher_cache overrides, rows reading it) per cache to build first; ``finished_rows``: rows trained and
    evaluated already (not started). Returns the number of failed rows and caches."""
    devices = parse_devices(args.devices)
    user_launch = os.environ.get("CSD_LAUNCH")
    logs = root / name / "logs"
    launch_of = {r.row: row_launch(r.launch, user_launch) for r, _, _ in configured}
    caches = []
    for k, (overrides, rows) in enumerate(cache_overrides):
        launch, count = launch_of[rows[0]]
        caches.append(Job(f"teacher cache ({', '.join(rows)})", ["-m", "csd.teacher_cache", *overrides], count,
                          launch, logs / f"teacher_cache_{k}.log", direct=True))
    run_jobs(caches, devices, name)
    if args.caches_only:
        print(summary(name, caches, [], {}), flush=True)
        return sum(bool(job.status) for job in caches)
    not_run = {row: f"its teacher cache failed ({job.log})" for job, (_, rows) in zip(caches, cache_overrides)
               if job.status for row in rows}
    skipped = [r.row for r, _, _ in configured if r.row in finished_rows]
    rows = [Job(r.row, [sys.executable, "-m", "csd.tables", *child_arguments(args), "--only", r.row, "--no-collect"],
                launch_of[r.row][1], launch_of[r.row][0], logs / f"{r.row}.log")
            for r, _, _ in configured if r.row not in finished_rows and r.row not in not_run]
    run_jobs(rows, devices, name)
    print(summary(name, rows, skipped, not_run), flush=True)
    return sum(bool(job.status) for job in [*caches, *rows])

"""Repeat a 2-process ZeRO-3 launch K times beside CPU-burning processes and count the clean exits.

    python scripts/stress_launch.py --repeats 20            # docs/testing.md records the last count
    python scripts/stress_launch.py --repeats 5 --config zero1_bf16_4gpu.yaml --burners 2

A clean exit: return code 0, the final model written, and no C++ abort at exit ("terminate called ..."), which is
how a finished run that left its process group alive used to die now and then on a loaded machine. Each launch is
the test suite's (tests/test_distributed.py): the tiny pair, 3 steps, final/ saved, its own free port. Prints one
line per launch and a summary; --json writes them.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from csd.testing import launch_command, launch_env, save_tiny_checkpoint, tiny_run_overrides  # noqa: E402


def burn(stop_at: float) -> None:
    while time.time() < stop_at:
        sum(i * i for i in range(10_000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--config", default="zero3_bf16_4gpu.yaml", help="a configs/accelerate/ file")
    parser.add_argument("--burners", type=int, default=1, help="CPU-burning processes beside each launch")
    parser.add_argument("--timeout", type=int, default=600, help="seconds before a launch counts as hung")
    parser.add_argument("--json", type=Path, help="write the per-launch results here")
    args = parser.parse_args()
    if not (REPO / "configs" / "accelerate" / args.config).is_file():
        parser.error(f"--config {args.config}: no such file in configs/accelerate/")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    from csd.ops import load_needed_ops

    load_needed_ops(offload=True)  # built once here, not inside the timed launches
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        teacher = save_tiny_checkpoint(Path(scratch) / "teacher", arch="llama", layers=2, hidden=48, seed=1)
        student = save_tiny_checkpoint(Path(scratch) / "student", arch="llama", layers=1, hidden=32, seed=2)
        burners = [multiprocessing.Process(target=burn, args=(time.time() + 24 * 3600,), daemon=True)
                   for _ in range(args.burners)]
        for burner in burners:
            burner.start()
        try:
            for index in range(args.repeats):
                output_root = Path(scratch) / f"run{index}"
                command = launch_command(args.config, *tiny_run_overrides(teacher, student, output_root), "loss=csd",
                                         "train.max_steps=3", "train.batch_size=2", "train.save_final_model=true")
                start = time.time()
                try:
                    done = subprocess.run(command, cwd=REPO, env=launch_env(), capture_output=True, text=True,
                                          timeout=args.timeout)
                    code, stderr = done.returncode, done.stderr
                except subprocess.TimeoutExpired as expired:
                    code, stderr = "timeout", str(expired.stderr or "")
                final = (output_root / "default" / "run" / "final" / "model.safetensors").exists()
                aborted = "terminate called" in stderr
                clean = code == 0 and final and not aborted
                results.append({"launch": index, "return_code": code, "final_saved": final, "abort_at_exit": aborted,
                                "clean": clean, "seconds": round(time.time() - start, 1)})
                print(f"launch {index + 1}/{args.repeats}: {'clean' if clean else 'FAILED'} (rc {code}, final/ "
                      f"{'saved' if final else 'missing'}{', abort at exit' if aborted else ''}, "
                      f"{results[-1]['seconds']} s)", flush=True)
                if not clean:
                    print(stderr[-3000:], file=sys.stderr)
        finally:
            for burner in burners:
                burner.terminate()
    clean = sum(r["clean"] for r in results)
    print(f"{clean} of {len(results)} launches of {args.config} exited cleanly beside {args.burners} CPU burner(s)")
    if args.json:
        args.json.write_text(json.dumps({"config": args.config, "burners": args.burners, "clean": clean,
                                         "launches": results}, indent=1) + "\n")
    sys.exit(0 if clean == len(results) else 1)


if __name__ == "__main__":
    main()

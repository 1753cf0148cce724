"""DeepSpeed's compiled ops: built once per environment, in the environment's own folder, never waiting on a dead build.

    python -m csd.ops              # build them now (the set-up, `make install`, runs this once)

DeepSpeed compiles some C++ ops on first use (the shared-memory collective of CPU processes, CPU Adam for offload)
through ``torch.utils.cpp_extension``, which guards each build folder with a ``lock`` file: a process killed while it
builds leaves that file behind, and every later load sleeps on it forever, silently. Three things prevent that:

- **Each environment has its own folder**: ``TORCH_EXTENSIONS_DIR`` defaults to ``<sys.prefix>/torch_extensions``
  (a venv's own directory), so two checkouts or CI never rebuild over each other in ``~/.cache``.
- **Built ahead of time** by ``python -m csd.ops`` at install, so a launch normally only loads them.
- **Loaded under an advisory lock the kernel releases when its holder dies** (``fcntl.flock`` on
  ``<folder>/<op>.csd.lock``). Whoever holds it is the only process building that op, so a torch ``lock`` file found
  while holding it was left by a killed build: it is removed, with one line saying so. A live builder is waited for
  (one line with its pid), at most ``CSD_OPS_WAIT_S`` seconds (default 1200), then the load stops with one line.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

WAIT_ENV = "CSD_OPS_WAIT_S"


def extensions_dir() -> Path:
    """Where torch builds extensions for this environment (``TORCH_EXTENSIONS_DIR`` wins when set)."""
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path(sys.prefix) / "torch_extensions")


def use_environment_extensions_dir() -> Path:
    """Point torch's extension builds at this environment's folder (before any op loads); returns it."""
    folder = extensions_dir()
    os.environ["TORCH_EXTENSIONS_DIR"] = str(folder)
    return folder


def needed_ops(offload: bool = True) -> list[str]:
    """The DeepSpeed op builders this project's launches load on this machine's accelerator."""
    from deepspeed.accelerator import get_accelerator

    names = ["ShareMemCommBuilder"] if get_accelerator().device_name() == "cpu" else []
    return names + (["CPUAdamBuilder"] if offload else [])


def _say(message: str) -> None:
    print(f"csd.ops: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _build_lock(folder: Path, op: str):
    """Hold ``<folder>/<op>.csd.lock`` exclusively (flock: released by the kernel when the holder dies)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{op}.csd.lock"
    limit = float(os.environ.get(WAIT_ENV, "1200"))
    with open(path, "a+") as handle:
        start, said = time.time(), False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    handle.seek(0)
                    _say(f"waiting for process {handle.read().strip() or '?'} to finish building DeepSpeed op {op} "
                         f"({path})")
                    said = True
                if time.time() - start > limit:
                    raise RuntimeError(f"DeepSpeed op {op}: another process has held {path} for over {limit:.0f} s; "
                                       f"if it is stuck, kill it ({WAIT_ENV} sets this limit)")
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_build_lock(folder: Path, op_name: str) -> bool:
    """Remove torch's ``lock`` in the op's build folder; only call this while holding the op's build lock."""
    stale = folder / op_name / "lock"
    if not stale.exists():
        return False
    _say(f"removing {stale}: a build of {op_name} was killed before it finished, and torch would wait on it forever")
    stale.unlink(missing_ok=True)
    return True


def load_op(builder_name: str):
    """The loaded op module, built first if needed, safely against concurrent and killed builds."""
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder(builder_name)
    if builder is None:
        return None
    folder = use_environment_extensions_dir()
    with _build_lock(folder, builder.name):
        remove_stale_build_lock(folder, builder.name)
        return builder.load()


def load_needed_ops(offload: bool) -> None:
    """Before DeepSpeed starts: load (building if needed) the ops it will ask for; DeepSpeed then finds them loaded."""
    for name in needed_ops(offload):
        load_op(name)


def main() -> None:
    folder = use_environment_extensions_dir()
    for name in needed_ops():
        start = time.time()
        try:
            load_op(name)
        except Exception as error:  # noqa: BLE001 — an op this machine cannot build is reported, not fatal at install
            _say(f"could not build {name}: {error}")
            continue
        _say(f"{name} ready in {folder} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()

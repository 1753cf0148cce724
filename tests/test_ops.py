"""DeepSpeed's compiled ops (csd/ops.py): a launch killed while it builds them never makes a later launch hang.

torch guards each build folder with a `lock` file that a killed build leaves behind; every later load used to sleep
on it forever. Here a real 2-process ZeRO-3 launch is SIGKILLed (the launcher and both ranks) while it builds the
shared-memory op in an empty extensions folder, and the next launch must finish within a bounded time, saying in one
line that it removed the stale lock.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from csd.testing import REPO, launch_command, launch_env, tiny_run_overrides

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gloo multi-process launch, fcntl")
BOUND_S = 420  # building the op (about a minute on 2 busy cores) and a 1-step run; without the fix: forever


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process under it (the ranks run in sessions of their own)."""
    tree = [psutil.Process(process.pid)]
    tree += tree[0].children(recursive=True)
    for member in tree:
        try:
            member.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=60)


def test_a_launch_killed_during_the_op_build_leaves_no_hang(tiny_pair, tmp_path):
    extensions = tmp_path / "torch_extensions"  # empty: this launch has to build the op
    env = {**launch_env(), "TORCH_EXTENSIONS_DIR": str(extensions)}
    command = launch_command("zero3_bf16_4gpu.yaml", *tiny_run_overrides(*tiny_pair, tmp_path / "out"),
                             "train.max_steps=1", "train.batch_size=2")
    stale = extensions / "deepspeed_shm_comm" / "lock"
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not stale.exists():
        assert first.poll() is None, "the launch ended before it began building the op"
        assert time.time() < deadline, "the launch never began building the op"
        time.sleep(0.05)
    kill_tree(first)
    assert stale.exists()  # what a killed build leaves: torch alone would wait on it forever

    second = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = second.communicate(timeout=BOUND_S)
    except subprocess.TimeoutExpired:
        kill_tree(second)
        pytest.fail(f"the launch after the killed build still runs after {BOUND_S} s (waiting on {stale}?)")
    assert second.returncode == 0, (out + err)[-4000:]
    assert f"csd.ops: removing {stale}" in err
    assert not stale.exists()


def test_a_live_build_is_waited_for_and_named(tmp_path):
    """While another process holds an op's build lock, a loader says whom it waits for, and gives up after
    CSD_OPS_WAIT_S with one line instead of waiting forever."""
    import fcntl

    extensions = tmp_path / "torch_extensions"
    extensions.mkdir()
    with open(extensions / "deepspeed_shm_comm.csd.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242")
        held.flush()
        result = subprocess.run([sys.executable, "-c", "from csd.ops import load_op; load_op('ShareMemCommBuilder')"],
                                cwd=REPO, capture_output=True, text=True, timeout=120,
                                env={**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions), "CSD_OPS_WAIT_S": "2"})
    assert result.returncode != 0
    assert "waiting for process 4242 to finish building DeepSpeed op deepspeed_shm_comm" in result.stderr
    assert "another process has held" in result.stderr.strip().splitlines()[-1]


def test_each_environment_builds_in_its_own_folder(monkeypatch):
    from csd.ops import extensions_dir

    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    assert extensions_dir() == Path(sys.prefix) / "torch_extensions"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/somewhere/else")
    assert extensions_dir() == Path("/somewhere/else")

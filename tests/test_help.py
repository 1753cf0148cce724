"""Every script and entry point answers --help with help text and exit status 0, runs nothing else, and shows no
traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.name for p in (REPO / "scripts").iterdir()
                 if p.suffix in (".py", ".sh") and not p.name.startswith("_"))
COMMANDS = {name: (["bash"] if name.endswith(".sh") else [sys.executable]) + [f"scripts/{name}"] for name in SCRIPTS}
COMMANDS |= {f"csd.{name}": [sys.executable, "-m", f"csd.{name}"] for name in ("train", "evaluate", "tables", "architectures", "plan")}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_prints_help_and_exits_zero(name):
    env = dict(os.environ, PYTHON=sys.executable, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([*COMMANDS[name], "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-2000:]
    assert "Traceback" not in output and "Error" not in output, output[-2000:]
    assert len(result.stdout.split()) >= 15, output        # a usage line alone is not help
    assert "wall time" not in output and "wrote " not in output, output   # nothing ran after the help

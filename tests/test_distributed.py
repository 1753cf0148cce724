"""The shipped launch files, run as a user runs them: 2 CPU processes, each equal to one process.

    accelerate launch --config_file configs/accelerate/<file>.yaml --num_processes 2 --mixed_precision no -m csd.train ...

Every multi-process run uses a global batch of 4 (2 processes x 2 rows) and is compared with one process taking
batch 4. The comparison is made sharp by AdamW with eps = 1: the update is then ~lr * gradient (linear in it), so
any difference in the gradient (a process training alone, a token mean over one rank only, a missed reduction)
shows in the weights instead of being flattened by Adam's normalisation. The tolerance is 1e-3 of the largest
weight change; each test also checks that the wrong answer (one rank's half batch alone) is far outside it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from csd.testing import REPO, launch_command, launch_env, tiny_run_overrides

STEPS = 3
SHARP = ("loss=csd", f"train.max_steps={STEPS}", "optim.lr=0.05", "optim.eps=1.0", "optim.scheduler=constant",
         "train.save_final_model=true")
TOLERANCE = 1e-3  # of the largest weight change

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gloo multi-process launch")


def common_overrides(tiny_pair, output_root: Path) -> list[str]:
    return [*tiny_run_overrides(*tiny_pair, output_root), *SHARP]


@pytest.fixture(scope="session", autouse=True)
def deepspeed_ops():
    """DeepSpeed's CPU ops (shared-memory communication, CPU Adam for offload), built by `make install`; built here
    when missing (a bare pytest), once, before any launch."""
    from csd.ops import load_needed_ops

    load_needed_ops(offload=True)


def launch(config_file: str, tiny_pair, output_root: Path, *overrides: str, fault: str | None = None) -> Path:
    """The README's multi-process command on 2 CPU processes; returns the run directory. With ``fault``
    (csd.checkpoint.fault_point's ``<point>@<step>``) the launch must die there: a rank is SIGKILLed."""
    command = launch_command(config_file, *common_overrides(tiny_pair, output_root), "train.batch_size=2", *overrides)
    env = launch_env() if fault is None else {**launch_env(), "CSD_FAULT": fault}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = f"{' '.join(command)}\n{(result.stdout + result.stderr)[-4000:]}"
    assert (result.returncode == 0) == (fault is None), output
    if fault is None:  # a finished run ends its process group: no abort at exit, no C++ "terminate called"
        assert "terminate called" not in result.stderr, output
    return output_root / "default" / "run"


def run_single(tiny_pair, output_root: Path, *overrides: str) -> Path:
    from csd.config import compose
    from csd.train import run

    run(compose([*common_overrides(tiny_pair, output_root), *overrides]))
    return output_root / "default" / "run"


def weights(run_dir: Path, folder: str = "final") -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / folder / "model.safetensors"))


def largest_difference(a: dict, b: dict, initial: dict) -> tuple[float, float]:
    """(max |Δa − Δb|, max |Δb|) over all tensors, Δ = change from the initial weights."""
    assert a.keys() == b.keys()
    difference = max(float((a[k] - b[k]).abs().max()) for k in a)
    change = max(float((b[k] - initial[k]).abs().max()) for k in b)
    return difference, change


def assert_same_update(candidate: dict, reference: dict, wrong: dict, initial: dict) -> None:
    difference, change = largest_difference(candidate, reference, initial)
    assert change > 1e-4, "the reference run did not move the weights"
    assert difference <= TOLERANCE * change, f"max weight difference {difference:.3g} vs largest change {change:.3g}"
    wrong_difference, _ = largest_difference(wrong, reference, initial)
    assert wrong_difference > 10 * TOLERANCE * change, "the comparison cannot tell a half batch from the whole"


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def references(tiny_pair, tmp_path_factory):
    """One process with the global batch (4), the same with validation, and the wrong answer: batch 2 alone."""
    root = tmp_path_factory.mktemp("single")
    return {
        "single": run_single(tiny_pair, root / "single", "train.batch_size=4", f"train.eval_every={STEPS}"),
        "half": run_single(tiny_pair, root / "half", "train.batch_size=2"),
        "initial": weights(Path(tiny_pair[1]), "."),
    }


@pytest.fixture(scope="module")
def zero3_run(tiny_pair, tmp_path_factory):
    """ZeRO-3, validation every step, best/ kept by validation loss."""
    return launch("zero3_bf16_4gpu.yaml", tiny_pair, tmp_path_factory.mktemp("zero3"), "train.eval_every=1")


def check_against_single(run_dir: Path, references: dict) -> None:
    assert_same_update(weights(run_dir), weights(references["single"]), weights(references["half"]),
                       references["initial"])


@pytest.mark.parametrize("config_file", ["ddp_bf16_4gpu.yaml", "zero1_bf16_4gpu.yaml", "zero3_offload_bf16_4gpu.yaml"])
def test_launch_file_equals_one_process(config_file, tiny_pair, tmp_path, references):
    run_dir = launch(config_file, tiny_pair, tmp_path, f"train.eval_every={STEPS}")
    check_against_single(run_dir, references)
    [multi], [single] = metrics(run_dir)["evaluations"], metrics(references["single"])["evaluations"]
    for key in ("val/kd", "val/ce"):  # validation sharded over the 2 processes = validation on one
        assert multi[key] == pytest.approx(single[key], rel=1e-5)


def test_zero3_trains_saves_full_weights_and_validates_as_one_process(zero3_run, references):
    check_against_single(zero3_run, references)
    summary, single = metrics(zero3_run), metrics(references["single"])
    assert [row["step"] for row in summary["history"]] == list(range(1, STEPS + 1))
    assert summary["evaluations"][-1]["val/kd"] == pytest.approx(single["evaluations"][-1]["val/kd"], rel=1e-5)
    # final/ is a normal from_pretrained model with full (gathered) weights
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(zero3_run / "final"))
    for name, tensor in weights(zero3_run).items():
        assert tuple(tensor.shape) == tuple(references["initial"][name].shape), name
    assert model.num_parameters() == sum(t.numel() for t in references["initial"].values())


def test_zero3_best_checkpoint_loads_in_evaluate(zero3_run, tmp_path):
    best = zero3_run / "best"
    values = [row["val/loss"] for row in metrics(zero3_run)["evaluations"]]
    assert metrics(zero3_run)["best"]["val/loss"] == min(values)
    result = subprocess.run(
        [sys.executable, "-m", "csd.evaluate", f"model.name_or_path={best}", "eval_sets=[tiny]", "seeds=[10]",
         "max_examples=2", "generation.max_new_tokens=4", "progress=false", f"output_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    # best/ is the best evaluation's model: the last step's (final/, full weights) exactly when that loss was lowest
    final = weights(zero3_run)
    same_as_final = all(torch.equal(tensor, final[name]) for name, tensor in weights(zero3_run, "best").items())
    assert same_as_final == (values.index(min(values)) == len(values) - 1)
    # its scores are the ROUGE-L (stemmed, best reference, x100) of the 2 answers it wrote, recomputed from them
    from rouge_score import rouge_scorer

    tiny = json.loads((tmp_path / "metrics.json").read_text())["results"]["tiny"]
    answers = [json.loads(line) for line in (tmp_path / "tiny" / "seed10" / "answers.jsonl").read_text().splitlines()]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [max(scorer.score(reference, answer["text"])["rougeL"].fmeasure for reference in answer["references"])
             for answer in answers]
    assert (tiny["n_examples"], tiny["seeds"], len(answers)) == (2, [10], 2)
    assert tiny["mean"]["rougeL"] == pytest.approx(100 * sum(rouge) / 2) == tiny["per_seed"]["10"]["rougeL"]


def test_zero3_fused_loss_equals_unfused(zero3_run, tiny_pair, tmp_path, references):
    fused = launch("zero3_bf16_4gpu.yaml", tiny_pair, tmp_path, "train.head=fused")
    assert_same_update(weights(fused), weights(zero3_run), weights(references["half"]), references["initial"])


def test_zero3_stopped_and_resumed_equals_uninterrupted(zero3_run, tiny_pair, tmp_path, references):
    launch("zero3_bf16_4gpu.yaml", tiny_pair, tmp_path, "train.eval_every=1", "train.stop_after_steps=1")
    assert not (tmp_path / "default" / "run" / "final").exists()
    resumed = launch("zero3_bf16_4gpu.yaml", tiny_pair, tmp_path, "train.eval_every=1", "train.resume=auto")
    # the resumed process ran steps 2..3 only (history before the stop comes from the checkpoint)
    assert [row["step"] for row in metrics(resumed)["history"]] == list(range(1, STEPS + 1))
    log = (resumed / "train.log").read_text() if (resumed / "train.log").exists() else ""
    assert "resumed from" in log and "at step 1" in log
    a, b = weights(resumed), weights(zero3_run)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7)


def test_zero3_killed_anywhere_resumes_to_the_uninterrupted_weights(zero3_run, tiny_pair, tmp_path):
    """SIGKILL a rank after an optimizer step, inside save_state (shards written, state file not), inside the best/
    write and between best/'s two renames; relaunch with train.resume=auto each time. Every best/ left on disk
    loads, and the run that finally finishes has the uninterrupted run's weights and best/."""
    from transformers import AutoModelForCausalLM

    settings = ("train.eval_every=1", "train.save_every=1", "train.resume=auto")
    run_dir = tmp_path / "default" / "run"
    for fault in ("step@2", "save_state@2", "save_best@2", "swap_best@3"):
        launch("zero3_bf16_4gpu.yaml", tiny_pair, tmp_path, *settings, fault=fault)
        best = run_dir / "best"
        if best.exists():
            AutoModelForCausalLM.from_pretrained(str(best))  # a half-written best/ would not load
    launch("zero3_bf16_4gpu.yaml", tiny_pair, tmp_path, *settings)
    for folder in ("final", "best"):
        a, b = weights(run_dir, folder), weights(zero3_run, folder)
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7)
    assert metrics(run_dir)["best"] == metrics(zero3_run)["best"]
    leftovers = [p.name for pattern in (".*.old", ".*.writing", "checkpoints/.deleting-*") for p in run_dir.glob(pattern)]
    assert leftovers == []  # nothing half-written or moved aside is left behind
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == [f"step_{STEPS:07d}"]


def test_zero3_lora_student_samples_on_policy_and_saves_an_adapter(tiny_pair, tmp_path):
    """Table 4 trains LoRA adapters under ZeRO-3; ImitKD sampling and validation generation need every rank."""
    run_dir = launch("zero3_bf16_4gpu.yaml", tiny_pair, tmp_path,
                     "model.student.lora={r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}",
                     "batches=imitkd", "batches.max_new_tokens=6", "train.eval_every=1", "train.eval_generate=4",
                     "train.max_steps=2")
    summary = metrics(run_dir)
    assert all("val/rougeL" in row for row in summary["evaluations"])
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    adapter = load_file(str(run_dir / "final" / "adapter_model.safetensors"))
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and all(t.numel() > 0 for t in adapter.values())
    assert any(float(t.abs().max()) > 0 for t in lora_b)  # B starts at zero: training moved it
    base = AutoModelForCausalLM.from_pretrained(tiny_pair[1])
    model = PeftModel.from_pretrained(base, str(run_dir / "final"))
    loaded = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert len(loaded) == len(lora_b)


def test_zero3_from_the_teacher_cache_equals_one_live_process(tiny_pair, tmp_path, references):
    """The cache built in one process, read under ZeRO-3 by 2 processes (each its own micro-batches' rows, the
    teacher's body never loaded): the update and the validation losses of one process with the live teacher."""
    from csd.config import compose
    from csd.teacher_cache import build_for

    folder = tmp_path / "cache"
    build_for(compose([*common_overrides(tiny_pair, tmp_path / "build"), f"train.teacher_cache={folder}"]))
    run_dir = launch("zero3_bf16_4gpu.yaml", tiny_pair, tmp_path, f"train.eval_every={STEPS}",
                     f"train.teacher_cache={folder}")
    check_against_single(run_dir, references)
    [multi], [single] = metrics(run_dir)["evaluations"], metrics(references["single"])["evaluations"]
    for key in ("val/kd", "val/ce"):
        assert multi[key] == pytest.approx(single[key], rel=1e-5)
    assert "complete, reading it" in (run_dir / "train.log").read_text()


def test_zero3_cache_build_over_two_processes_equals_one_process(tiny_pair, tmp_path):
    """`accelerate launch ... -m csd.teacher_cache`: each process writes its share of the shards of a ZeRO-3-sharded
    teacher; the folder holds the same shards, rows and fingerprint as the one-process build."""
    from safetensors.torch import load_file

    from csd.config import compose
    from csd.teacher_cache import build_for, read_manifest

    single, multi = tmp_path / "single", tmp_path / "multi"
    build_for(compose([*common_overrides(tiny_pair, tmp_path / "a"), f"train.teacher_cache={single}"]))
    command = launch_command("zero3_bf16_4gpu.yaml", *common_overrides(tiny_pair, tmp_path / "b"),
                             f"train.teacher_cache={multi}", module="csd.teacher_cache")
    result = subprocess.run(command, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "terminate called" not in result.stderr, result.stderr[-4000:]
    assert read_manifest(multi)["fingerprint"] == read_manifest(single)["fingerprint"]
    shards = sorted(path.name for path in single.glob("*.safetensors"))
    assert len(shards) > 1 and shards == sorted(path.name for path in multi.glob("*.safetensors"))
    for name in shards:
        one, two = load_file(str(single / name)), load_file(str(multi / name))
        assert one.keys() == two.keys()
        for key in one:
            torch.testing.assert_close(two[key], one[key], rtol=1e-6, atol=1e-7)

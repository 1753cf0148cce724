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

REPO = Path(__file__).resolve().parent.parent
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--mixed_precision", "no"]
STEPS = 3
SHARP = ("loss=csd", f"train.max_steps={STEPS}", "optim.lr=0.05", "optim.eps=1.0", "optim.scheduler=constant",
         "train.save_final_model=true")
TOLERANCE = 1e-3  # of the largest weight change

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gloo multi-process launch")


def common_overrides(tiny_pair, output_root: Path) -> list[str]:
    teacher, student = tiny_pair
    return ["model=tiny", f"model.teacher.name_or_path={teacher}", f"model.student.name_or_path={student}",
            "data=tiny", "train.max_length=96", "train.max_prompt_length=48", "train.eval_every=null",
            "train.save_every=null", f"output_root={output_root}", "run_name=run", *SHARP]


@pytest.fixture(scope="session", autouse=True)
def deepspeed_ops():
    """DeepSpeed compiles its CPU ops (shared-memory communication, CPU Adam for offload) on first use; built here
    once, before any launch, so two ranks never compile the same op at the same time."""
    from deepspeed.accelerator import get_accelerator

    for builder in ("ShareMemCommBuilder", "CPUAdamBuilder"):
        get_accelerator().create_op_builder(builder).load()


def launch(config_file: str, tiny_pair, output_root: Path, *overrides: str) -> Path:
    """The README's multi-process command on 2 CPU processes; returns the run directory."""
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HYDRA_FULL_ERROR="1")
    command = [*LAUNCH, "--config_file", str(REPO / "configs" / "accelerate" / config_file), "-m", "csd.train",
               *common_overrides(tiny_pair, output_root), "train.batch_size=2", *overrides]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}\n{(result.stdout + result.stderr)[-4000:]}"
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
    scores = json.loads((tmp_path / "metrics.json").read_text())
    assert "tiny" in json.dumps(scores)


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

"""Checkpoints on tiny models: a resumed run continues from the checkpoint's next step without redoing work;
best/ holds the weights of the best evaluation; keep_checkpoints prunes; a LoRA student's final/ reloads with peft.

A restart from scratch with the same seed ends on the same weights as a true resume, so comparing final weights
alone cannot tell the two apart: these tests count the optimizer steps each run performs and check that the
first resumed step starts from the checkpoint's weights, optimizer moments and learning-rate schedule."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import csd.models
import csd.train
from csd.checkpoint import STATE_FILE, latest_checkpoint
from csd.logger import RunLogger


@pytest.fixture
def logged_steps(monkeypatch):
    """Step numbers of the optimizer steps each run logs, one list per RunLogger (i.e. per run)."""
    runs, original_init, original_log = [], RunLogger.__init__, RunLogger.log

    def init(self, *args, **kwargs):
        runs.append([])
        original_init(self, *args, **kwargs)

    def log(self, metrics, step, advance=True):
        if advance:
            runs[-1].append(step)
        original_log(self, metrics, step, advance)

    monkeypatch.setattr(RunLogger, "__init__", init)
    monkeypatch.setattr(RunLogger, "log", log)
    return runs


def run_dir(root: Path) -> Path:
    return root / "default" / "run"


def test_resume_continues_at_the_next_step_and_does_not_redo_work(train_config, tmp_path, logged_steps):
    common = ("loss=csd", "train.max_steps=6", "optim.lr=1e-2", "optim.scheduler=linear", "train.save_final_model=true")
    full = csd.train.run(train_config(*common, f"output_root={tmp_path}/full"))
    assert csd.train.run(train_config(*common, f"output_root={tmp_path}/resumed", "train.stop_after_steps=3")) == \
        {"stopped_at": 3}
    checkpoint = latest_checkpoint(run_dir(tmp_path / "resumed"))
    assert checkpoint.name == "step_0000003"
    assert json.loads((checkpoint / STATE_FILE).read_text())["global_step"] == 3
    resumed = csd.train.run(train_config(*common, f"output_root={tmp_path}/resumed", "train.resume=auto"))

    assert logged_steps == [[1, 2, 3, 4, 5, 6], [1, 2, 3], [4, 5, 6]]  # the resumed run performs steps 4-6 only
    assert resumed["steps"] == 6 and [r["step"] for r in resumed["history"]] == list(range(1, 7))
    first_resumed = resumed["history"][3]
    # It starts from the checkpoint: its first step is the uninterrupted run's step 4 (weights, Adam moments and
    # data position restored), with step 4's learning rate (the schedule continues), not a fresh step 1.
    assert first_resumed["train/kd"] == pytest.approx(full["history"][3]["train/kd"], rel=1e-6)
    assert first_resumed["train/kd"] != pytest.approx(full["history"][0]["train/kd"], rel=1e-3)
    assert [r["train/lr"] for r in resumed["history"][3:]] == pytest.approx([5e-3, 1e-2 / 3, 1e-2 / 6])
    for a, b in zip(full["history"][3:], resumed["history"][3:]):
        assert b["train/kd"] == pytest.approx(a["train/kd"], rel=1e-6)
    full_weights = load_file(str(run_dir(tmp_path / "full") / "final" / "model.safetensors"))
    resumed_weights = load_file(str(run_dir(tmp_path / "resumed") / "final" / "model.safetensors"))
    for name, tensor in full_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=1e-6, atol=1e-7)


def test_resume_from_an_explicit_checkpoint_directory(train_config, tmp_path, logged_steps):
    """train.resume=<dir> continues from that checkpoint, even in another output directory."""
    common = ("loss=csd", "train.max_steps=4", "optim.lr=1e-2", "train.save_every=1", "train.keep_checkpoints=4")
    full = csd.train.run(train_config(*common, f"output_root={tmp_path}/a"))
    step2 = run_dir(tmp_path / "a") / "checkpoints" / "step_0000002"
    resumed = csd.train.run(train_config(*common, f"output_root={tmp_path}/b", f"train.resume={step2}"))
    assert logged_steps[-1] == [3, 4]
    assert resumed["history"][2]["train/kd"] == pytest.approx(full["history"][2]["train/kd"], rel=1e-6)


def test_a_finished_run_resumed_does_nothing(train_config, tmp_path, logged_steps):
    common = ("loss=csd", "train.max_steps=2", "train.save_every=1")
    csd.train.run(train_config(*common))
    summary = csd.train.run(train_config(*common, "train.resume=auto"))
    assert logged_steps == [[1, 2], []] and summary["steps"] == 2


def scripted_evaluations(monkeypatch, values: list[float]) -> None:
    """The validation returns val/loss and val/rougeL from a script, one value per evaluation."""
    script = iter(values)

    def evaluate(*args, **kwargs):
        value = next(script)
        return {"val/loss": value, "val/rougeL": value}

    import csd.distiller
    import csd.step

    monkeypatch.setattr(csd.step, "validation_loss", evaluate)
    monkeypatch.setattr(csd.distiller.Distiller, "generation_metrics", lambda self: {})  # the script has val/rougeL


@pytest.mark.parametrize("metric, best_step", [("val/loss", 2), ("val/rougeL", 3)])
def test_best_holds_the_weights_of_the_best_evaluation(train_config, tmp_path, monkeypatch, metric, best_step):
    """Evaluations 3, 1, 5, 2 at steps 1-4: the lowest loss is step 2's, the highest ROUGE-L step 3's."""
    scripted_evaluations(monkeypatch, [3.0, 1.0, 5.0, 2.0])
    summary = csd.train.run(train_config("loss=csd", "train.max_steps=4", "optim.lr=1e-2", "train.eval_every=1",
                                         "train.eval_generate=1", f"train.best_metric={metric}", "train.save_every=1",
                                         "train.keep_checkpoints=4"))
    assert summary["best"] == {metric: {2: 1.0, 3: 5.0}[best_step]}
    best = load_file(str(run_dir(tmp_path) / "best" / "model.safetensors"))
    for step in range(1, 5):
        at_step = load_file(str(run_dir(tmp_path) / "checkpoints" / f"step_{step:07d}" / "model.safetensors"))
        same = all(torch.equal(best[name], at_step[name]) for name in best)
        assert same == (step == best_step), step


def test_keep_checkpoints_prunes_the_oldest(train_config, tmp_path):
    csd.train.run(train_config("loss=csd", "train.max_steps=4", "train.save_every=1", "train.keep_checkpoints=2"))
    checkpoints = sorted(p.name for p in (run_dir(tmp_path) / "checkpoints").iterdir())
    assert checkpoints == ["step_0000003", "step_0000004"]
    assert latest_checkpoint(run_dir(tmp_path)).name == "step_0000004"
    assert all((run_dir(tmp_path) / "checkpoints" / c / STATE_FILE).exists() for c in checkpoints)


def test_default_settings_write_checkpoint_best_and_final(train_config, tmp_path):
    """With the default train config (evaluate and save every epoch) a run writes checkpoints/, best/ and final/;
    best/ and final/ load with from_pretrained, tokenizer included."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    csd.train.run(train_config("loss=csd", "train.max_steps=null", "train.epochs=1", "train.eval_every=epoch",
                               "train.save_every=epoch", "train.save_final_model=true", "train.eval_batches=1"))
    assert {p.name for p in run_dir(tmp_path).iterdir()} >= {"checkpoints", "best", "final", "config.yaml",
                                                             "metrics.json"}
    for name in ("best", "final"):
        assert AutoTokenizer.from_pretrained(run_dir(tmp_path) / name).chat_template
        AutoModelForCausalLM.from_pretrained(run_dir(tmp_path) / name)


def test_resume_auto_without_a_checkpoint_starts_from_scratch(train_config, logged_steps):
    summary = csd.train.run(train_config("loss=csd", "train.resume=auto"))
    assert logged_steps == [[1, 2]] and summary["steps"] == 2


def test_lora_adapter_saved_and_reloaded(train_config, tiny_pair, tmp_path):
    """final/ of a LoRA student is a peft adapter: loaded on the base model it gives the trained model's logits."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = train_config("loss=csd", "optim.lr=1e-2", "train.save_final_model=true",
                       "model.student.lora={r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}")
    models = csd.models.build_models(cfg)
    csd.train.run(cfg, models)
    final = run_dir(tmp_path) / "final"
    assert (final / "adapter_config.json").exists() and not (final / "model.safetensors").exists()
    adapter = load_file(str(final / "adapter_model.safetensors"))
    assert any("lora_B" in name and tensor.abs().max() > 0 for name, tensor in adapter.items())  # B starts at 0
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_pair[1]), str(final)).eval()
    input_ids = models.tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt").input_ids
    with torch.no_grad():
        trained = models.student.eval()(input_ids=input_ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_pair[1]).eval()(input_ids=input_ids).logits
        torch.testing.assert_close(reloaded(input_ids=input_ids).logits, trained, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(trained, base, atol=1e-4)  # the adapter matters

"""The trainer on tiny models: every objective trains, resume is exact, splitting a batch changes nothing,
configs resolve, and bad input fails early with a message naming the problem."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from csd.losses import LOSSES
from csd.train import run
from step_reference import record_batches, reference_step

REPO = Path(__file__).resolve().parent.parent


def _student_weights(output_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(output_dir / "final" / "model.safetensors"))


@pytest.mark.parametrize("name", sorted(LOSSES) + ["sft"])
def test_every_objective_trains(train_config, monkeypatch, name):
    """The first step's logged loss and gradient norm are the objective's float64 definition on that batch."""
    batches = record_batches(monkeypatch)
    cfg = train_config(f"loss={name}", "train.kd_ratio=0.0" if name == "sft" else "train.kd_ratio=1.0")
    summary = run(cfg)
    assert summary["steps"] == 2 and len(batches) == 2
    expected, first = reference_step(cfg, batches[:1]), summary["history"][0]
    key = "ce" if name == "sft" else "kd"
    assert first[f"train/{key}"] == pytest.approx(expected[key], rel=1e-4)
    assert first["train/grad_norm"] == pytest.approx(expected["grad_norm"], rel=1e-4)
    assert math.isfinite(summary["history"][1][f"train/{key}"])
    assert json.loads((Path(cfg.output_dir) / "metrics.json").read_text())["loss"] == name


def test_distillation_reduces_the_objective(train_config):
    summary = run(train_config("loss=csd", "train.max_steps=12", "optim.lr=3e-3", "optim.scheduler=constant",
                               "train.eval_every=6"))
    first, last = summary["evaluations"][0]["val/kd"], summary["evaluations"][-1]["val/kd"]
    assert last < first


def test_resume_reproduces_the_uninterrupted_run(train_config, tmp_path):
    common = ("loss=csd", "train.max_steps=6", "train.save_final_model=true", "optim.lr=1e-3")
    full = run(train_config(*common, f"output_root={tmp_path}/full"))
    stopped = run(train_config(*common, f"output_root={tmp_path}/resumed", "train.stop_after_steps=3"))
    assert stopped == {"stopped_at": 3}
    resumed = run(train_config(*common, f"output_root={tmp_path}/resumed", "train.resume=auto"))
    assert [r["step"] for r in resumed["history"]] == list(range(1, 7))
    for a, b in zip(full["history"], resumed["history"]):
        assert a["train/kd"] == pytest.approx(b["train/kd"], rel=1e-6, abs=1e-9)
        assert a["train/lr"] == pytest.approx(b["train/lr"], rel=1e-9)
    weights_full = _student_weights(tmp_path / "full" / "default" / "run")
    weights_resumed = _student_weights(tmp_path / "resumed" / "default" / "run")
    for name, tensor in weights_full.items():
        torch.testing.assert_close(tensor, weights_resumed[name], rtol=1e-6, atol=1e-7)


def test_gradient_accumulation_does_not_change_the_update(train_config, tiny_pair, tmp_path):
    """Token-mean over the whole step: 1×4 and 2×2 (batch × accumulation) give the same weights.

    AdamW with eps = 1 makes the first update ~lr·gradient (as tests/test_distributed.py): with the default eps it is
    ~lr·sign(gradient), and a gradient scaled wrongly by a constant (e.g. 1/grad_accum applied twice) would not show;
    nor would it through clipping to norm 1 (off here)."""
    from safetensors.torch import load_file

    common = ("loss=csd", "train.max_steps=1", "train.save_final_model=true", "optim.lr=0.05", "optim.eps=1.0",
              "optim.clip_grad=null")
    run(train_config(*common, "train.batch_size=4", "train.grad_accum=1", f"output_root={tmp_path}/a"))
    run(train_config(*common, "train.batch_size=2", "train.grad_accum=2", f"output_root={tmp_path}/b"))
    a, b = (_student_weights(tmp_path / d / "default" / "run") for d in ("a", "b"))
    initial = load_file(str(Path(tiny_pair[1]) / "model.safetensors"))
    change = max(float((b[n] - initial[n]).abs().max()) for n in b)
    difference = max(float((a[n] - b[n]).abs().max()) for n in a)
    # a gradient off by a factor 2 would move the weights by about half the change: far above the tolerance
    assert change > 1e-5 and difference <= 1e-3 * change, (difference, change)


@pytest.mark.parametrize("kd_ratio", [1.0, 0.3])
def test_fused_loss_matches_the_unfused_trainer(train_config, tmp_path, monkeypatch, kd_ratio):
    """Same logged kd and ce and the same weights after the steps, also when CE is mixed in (kd_ratio < 1); the
    first step's gradient is that of (1 − kd_ratio)·CE + kd_ratio·KD in float64 (0.3: swapped weights would show)."""
    # AdamW eps = 1: the update is ~lr·gradient, so float32 noise in tiny gradients is not blown up to lr-sized steps
    common = ("loss=csd", "loss.weighting=TS", f"train.kd_ratio={kd_ratio}", "train.save_final_model=true",
              "optim.lr=0.05", "optim.eps=1.0")
    batches = record_batches(monkeypatch)
    plain_cfg = train_config(*common, f"output_root={tmp_path}/plain")
    plain = run(plain_cfg)
    fused = run(train_config(*common, "train.head=fused", f"output_root={tmp_path}/fused"))
    expected = reference_step(plain_cfg, batches[:1])
    for summary in (plain, fused):
        for key in ("kd", "ce", "grad_norm"):
            assert summary["history"][0][f"train/{key}"] == pytest.approx(expected[key], rel=1e-4), key
    for a, b in zip(plain["history"], fused["history"]):
        assert a["train/kd"] == pytest.approx(b["train/kd"], rel=1e-5)
        assert a["train/ce"] == pytest.approx(b["train/ce"], rel=1e-5)
    a, b = (_student_weights(tmp_path / d / "default" / "run") for d in ("plain", "fused"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-7)


def test_lora_and_layer_cut_students_train(train_config, tiny_pair):
    teacher, _ = tiny_pair
    lora = run(train_config("model.student.lora={r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}"))
    cut = run(train_config(f"model.student.name_or_path={teacher}", "model.student.keep_layers=[1]"))
    assert lora["steps"] == cut["steps"] == 2
    # The cut student starts from the teacher's last layer, embeddings and head: closer than a random model.
    assert cut["history"][0]["train/kd"] < lora["history"][0]["train/kd"]


def test_padded_teacher_head_is_compared_on_the_tokenizer_length(train_config, tmp_path):
    """A teacher whose head has 24 rows beyond the tokenizer trains exactly as the same teacher without them: its
    padding rows (made huge here, so any padding logit reaching the loss would dominate it) are cut off."""
    from csd.testing import make_tiny_model, make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer(tmp_path / "padded")
    make_tiny_tokenizer(tmp_path / "unpadded")
    padded = make_tiny_model(tokenizer, layers=1, hidden=32, vocab_size=len(tokenizer) + 24, seed=5)
    with torch.no_grad():
        padded.get_output_embeddings().weight[len(tokenizer):] = 1e3
    padded.save_pretrained(tmp_path / "padded")
    padded.resize_token_embeddings(len(tokenizer))  # the same model, its first len(tokenizer) rows
    padded.save_pretrained(tmp_path / "unpadded")
    runs = {name: run(train_config(f"model.teacher.name_or_path={tmp_path / name}", f"output_root={tmp_path / 'runs' / name}"))
            for name in ("padded", "unpadded")}
    for a, b in zip(runs["padded"]["history"], runs["unpadded"]["history"], strict=True):
        for key in ("train/kd", "train/ce", "train/grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), key


def test_different_tokenizers_fail_before_training(train_config, tmp_path):
    from csd.testing import make_tiny_model, make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer(tmp_path / "other", vocab_size=300)
    make_tiny_model(tokenizer, layers=1, hidden=32).save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="tokenizers differ"):
        run(train_config(f"model.teacher.name_or_path={tmp_path / 'other'}"))
    assert not (tmp_path / "default" / "run" / "metrics.json").exists()


def test_missing_model_says_what_to_download(train_config):
    with pytest.raises(FileNotFoundError, match="huggingface-cli download no-such-org/no-such-model"):
        run(train_config("model.student.name_or_path=no-such-org/no-such-model"))


@pytest.mark.parametrize("override, message", [
    ("loss.name=foo", "loss.name='foo' is not allowed; choose one of: ab, csd"),
    ("optim.scheduler=step", "optim.scheduler='step' is not allowed; choose one of: constant, linear, cosine"),
    ("loss.weighting=XS", "two letters from U, S, T, M"),
    ("train.kd_ratio=2", "train.kd_ratio=2"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints=0 must be at least 1"),
    ("train.best_metric=val/rougeL", "set train.eval_generate"),
    ("train.best_metric=val/perplexity", "train.best_metric='val/perplexity' is not allowed; choose one of: val/loss, val/ce"),
])
def test_bad_config_is_one_clear_line(override, message):
    result = subprocess.run([sys.executable, "-m", "csd.train", "model=tiny", "model.teacher.name_or_path=x",
                             "model.student.name_or_path=y", override], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("csd.train: error:") and message in last, result.stderr[-2000:]


def test_unknown_group_option_lists_the_choices():
    result = subprocess.run([sys.executable, "-m", "csd.train", "loss=foo"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0 and "Available options in 'loss'" in result.stderr and "csd" in result.stderr


REQUIRED_KEYS = ["model.teacher", "model.student", "loss.name", "loss.temperature", "loss.weighting", "optim.lr",
                 "train.batch_size", "train.grad_accum", "train.epochs", "train.max_length", "train.max_prompt_length",
                 "train.seed", "train.kd_ratio"]


def test_cfg_job_prints_the_resolved_keys():
    result = subprocess.run([sys.executable, "-m", "csd.train", "experiment=table1", "optim.lr=3e-4", "--cfg", "job", "--resolve"],
                            capture_output=True, text=True, cwd=REPO, check=True)
    cfg = yaml.safe_load(result.stdout)
    for key in REQUIRED_KEYS:
        node = cfg
        for part in key.split("."):
            node = node[part]
    assert cfg["optim"]["lr"] == 3e-4 and cfg["model"]["student"]["name_or_path"] == "gpt2"
    assert cfg["train"]["epochs"] == 20 and cfg["train"]["seed"] == 10 and cfg["loss"]["weighting"] == "SS"


def test_sweep_gives_each_run_its_own_directory(tiny_pair, tmp_path):
    teacher, student = tiny_pair
    subprocess.run([sys.executable, "-m", "csd.train", "-m", "model=tiny", f"model.teacher.name_or_path={teacher}",
                    f"model.student.name_or_path={student}", "data=tiny", "train.batch_size=4", "train.max_steps=1",
                    "train.max_length=96", "train.max_prompt_length=48", "train.eval_every=null", "train.save_every=null",
                    "train.save_final_model=false", f"output_root={tmp_path}", "experiment_name=sweep",
                    "loss.temperature=1.0,1.5"], capture_output=True, text=True, cwd=REPO, check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    runs = sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/metrics.json"))
    assert len(runs) == 2 and any("temperature=1.5" in r for r in runs) and not any("name_or_path" in r for r in runs), runs
    temperatures = {yaml.safe_load((tmp_path / "sweep" / r / "config.yaml").read_text())["loss"]["temperature"] for r in runs}
    assert temperatures == {1.0, 1.5}


def test_accelerate_launch_configs_parse():
    from accelerate.commands.config.config_args import ClusterConfig

    files = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
    assert len(files) >= 9
    for path in files:
        config = ClusterConfig.from_yaml_file(str(path))
        gpus = int(path.stem.split("_")[-1].removesuffix("gpu"))
        assert config.num_processes == gpus and config.mixed_precision == "bf16"
        if path.stem.startswith("zero"):
            assert config.distributed_type.value == "DEEPSPEED"
            assert config.deepspeed_config["zero_stage"] == int(path.stem[4])
            assert config.deepspeed_config["offload_param_device"] == ("cpu" if "offload" in path.stem else "none")


def test_logger_none_does_not_import_wandb(train_config):
    """logger=none must neither need nor import wandb (a run works where W&B is broken or absent)."""
    run(train_config("train.max_steps=1"))
    assert "wandb" not in sys.modules


def test_logged_learning_rate_is_the_one_the_step_used(train_config):
    summary = run(train_config("optim.lr=1e-3", "optim.scheduler=linear", "train.max_steps=2"))
    assert [row["train/lr"] for row in summary["history"]] == pytest.approx([1e-3, 5e-4])


def test_validation_covers_every_example_once(train_config, tmp_path):
    """Validation batches tile the split (the last one short); the token-mean is over all of them."""
    from csd.data import TrainCollator, build_dataset, pad_token_id_of
    from csd.losses import IGNORE_INDEX
    from csd.models import build_models
    from csd.step import shift_labels, validation_loss as evaluate
    from accelerate import Accelerator

    cfg = train_config("train.batch_size=5")
    models = build_models(cfg)
    val_set = build_dataset(cfg.data, "validation", models.tokenizer, cfg.train.max_length, cfg.train.max_prompt_length)
    collate = TrainCollator(pad_token_id_of(models.tokenizer))
    metrics = evaluate(models.student, models, None, val_set, collate, cfg, Accelerator(cpu=True))
    whole = collate([val_set[i] for i in range(len(val_set))])
    with torch.no_grad():
        logits = models.student(input_ids=whole["input_ids"], attention_mask=whole["attention_mask"]).logits
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), shift_labels(whole["labels"]).flatten(),
                                                 ignore_index=IGNORE_INDEX)
    assert len(val_set) % 5 != 0 and metrics["val/ce"] == pytest.approx(expected.item(), rel=1e-5)


def test_bf16_autocast_gives_the_float32_loss(train_config, tmp_path):
    """train.mixed_precision=bf16 on CPU: the same first-step losses to bf16 accuracy (and not bit-equal: autocast ran)."""
    fp32 = run(train_config("train.max_steps=1", "train.mixed_precision=no", f"output_root={tmp_path}/fp32"))
    bf16 = run(train_config("train.max_steps=1", "train.mixed_precision=bf16", f"output_root={tmp_path}/bf16"))
    for key in ("train/kd", "train/ce"):
        a, b = fp32["history"][0][key], bf16["history"][0][key]
        assert b == pytest.approx(a, rel=3e-2) and a != b, key

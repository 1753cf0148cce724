"""loss.reduction=sequence: each sequence's token mean, then the mean over the step's examples (the release's
Table 3/4 trainers), against per-sequence losses computed one row at a time; token (default) unchanged."""
from __future__ import annotations

import pytest
import torch

from csd.losses import IGNORE_INDEX
from csd.models import build_models
from csd.step import optimizer_windows, shift_labels
from csd.train import run
from step_reference import record_batches, reference_step


def first_step_examples(cfg):
    from csd.data import TrainCollator, build_dataset, pad_token_id_of

    models = build_models(cfg)
    train_set = build_dataset(cfg.data, "train", models.tokenizer, cfg.train.max_length, cfg.train.max_prompt_length)
    indices = optimizer_windows(len(train_set), cfg, 1, 0)[0][0][0]
    rows = [TrainCollator(pad_token_id_of(models.tokenizer))([train_set[int(i)]]) for i in indices]
    return models, rows


def per_row_means(models, rows, objective):
    """(KD mean, CE mean) of each example alone (no padding at all)."""
    means = []
    with torch.no_grad():
        for row in rows:
            targets = shift_labels(row["labels"])
            logits = models.student(input_ids=row["input_ids"], attention_mask=row["attention_mask"]).logits
            teacher = models.teacher(input_ids=row["input_ids"], attention_mask=row["attention_mask"]).logits
            kd = objective(logits[..., : models.vocab], teacher[..., : models.vocab], targets).item()
            kept = targets[0] != IGNORE_INDEX
            log_z = torch.logsumexp(logits[0][kept].double(), dim=-1)
            ce = (log_z - logits[0][kept].double().gather(-1, targets[0][kept][:, None]).squeeze(-1)).mean().item()
            means.append((kd, ce, int(kept.sum())))
    return means


@pytest.mark.parametrize("reduction", ["sequence", "token"])
def test_logged_step_loss_is_the_asked_reduction(train_config, monkeypatch, reduction):
    """Logged kd and ce from each example alone; the step's gradient is that of 0.7·CE + 0.3·KD reduced as asked,
    in float64 (an uneven kd_ratio: at 0.5 swapped weights would give the same step)."""
    from csd.losses import get_loss

    cfg = train_config("loss=fkl", f"loss.reduction={reduction}", "train.max_steps=1", "train.kd_ratio=0.3")
    other = train_config("loss=fkl", f"loss.reduction={({'sequence': 'token', 'token': 'sequence'})[reduction]}",
                         "train.max_steps=1", "train.kd_ratio=0.3")
    batches = record_batches(monkeypatch)
    models, rows = first_step_examples(cfg)
    means = per_row_means(models, rows, get_loss("fkl"))
    lengths = [n for _, _, n in means]
    assert len(set(lengths)) > 1  # unequal lengths, or the two reductions would agree
    if reduction == "sequence":
        expected_kd = sum(kd for kd, _, _ in means) / len(means)
        expected_ce = sum(ce for _, ce, _ in means) / len(means)
    else:
        expected_kd = sum(kd * n for kd, _, n in means) / sum(lengths)
        expected_ce = sum(ce * n for _, ce, n in means) / sum(lengths)
    logged = run(cfg)["history"][0]
    assert logged["train/kd"] == pytest.approx(expected_kd, rel=1e-5)
    assert logged["train/ce"] == pytest.approx(expected_ce, rel=1e-5)
    step = reference_step(cfg, batches)
    assert (step["kd"], step["ce"]) == pytest.approx((expected_kd, expected_ce), rel=1e-5)
    assert logged["train/grad_norm"] == pytest.approx(step["grad_norm"], rel=1e-4)
    assert reference_step(other, batches)["grad_norm"] != pytest.approx(step["grad_norm"], rel=1e-2)


def test_sequence_reduction_changes_the_update(train_config, tmp_path):
    from safetensors.torch import load_file

    common = ("loss=csd", "train.max_steps=1", "train.save_final_model=true", "optim.lr=1e-2")
    run(train_config(*common, f"output_root={tmp_path}/token"))
    run(train_config(*common, "loss.reduction=sequence", f"output_root={tmp_path}/sequence"))
    a, b = (load_file(str(tmp_path / d / "default" / "run" / "final" / "model.safetensors")) for d in ("token", "sequence"))
    assert any(not torch.allclose(a[k], b[k]) for k in a)


def test_weighted_fused_loss_equals_the_weighted_logits_loss():
    from csd.losses import fused_linear_loss, get_loss

    generator = torch.Generator().manual_seed(3)
    hidden, head = torch.randn(9, 6, generator=generator), torch.randn(20, 6, generator=generator)
    teacher_hidden, teacher_head = torch.randn(9, 5, generator=generator), torch.randn(20, 5, generator=generator)
    labels = torch.randint(0, 20, (9,), generator=generator)
    labels[2] = IGNORE_INDEX
    weights = torch.rand(9, generator=generator)
    fused = fused_linear_loss("csd", hidden, head, teacher_hidden, teacher_head, labels, reduction="sum",
                              weights=weights, chunk_size=4)
    objective = get_loss("csd")
    per_token = [objective((hidden[i] @ head.T)[None, None], (teacher_hidden[i] @ teacher_head.T)[None, None],
                           labels[i][None, None], reduction="sum").item() for i in range(9)]
    expected = sum(w * v for w, v, y in zip(weights.tolist(), per_token, labels.tolist()) if y != IGNORE_INDEX)
    assert fused.item() == pytest.approx(expected, rel=1e-5)


class TwoProcesses:
    """An accelerator stand-in: two processes holding the same batches (accelerate's reduce sums them, "mean" ÷ 2)."""
    device = torch.device("cpu")

    def reduce(self, tensor, reduction="sum"):
        return tensor if reduction == "mean" else 2 * tensor


def test_step_counts_are_over_all_processes_and_a_chat_pair_is_one_example():
    """Shifted targets per row: 2, 1 and 0 (a label at position 0 predicts nothing). Per process and micro-batch:
    3 target tokens, 2 examples with a target; 2 micro-batches × 2 processes; a chat pair's two rows are one example."""
    from omegaconf import OmegaConf

    from csd.step import global_example_count, global_token_count

    batch = {"labels": torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 5, 6], [4, IGNORE_INDEX, IGNORE_INDEX, 7],
                                     [3, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])}
    batches, processes = [batch, batch], TwoProcesses()
    assert global_token_count(batches, processes) == 3 * 2 * 2
    assert global_example_count(batches, OmegaConf.create({"batches": {"name": "reference"}}), processes) == 2 * 2 * 2
    assert global_example_count(batches, OmegaConf.create({"batches": {"name": "chat_pairs"}}), processes) == 2 * 2 * 2 / 2


def test_a_step_of_one_example_is_that_examples_token_mean(train_config, monkeypatch):
    """batch_size 1, sequence reduction: the step's denominator is 1 example, and the gradient is that of its mean."""
    cfg = train_config("loss=fkl", "loss.reduction=sequence", "train.batch_size=1", "train.max_steps=1")
    batches = record_batches(monkeypatch)
    logged = run(cfg)["history"][0]
    step = reference_step(cfg, batches)
    assert logged["train/kd"] == pytest.approx(step["kd"], rel=1e-5)
    assert logged["train/grad_norm"] == pytest.approx(step["grad_norm"], rel=1e-4)

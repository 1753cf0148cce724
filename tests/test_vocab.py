"""Heads padded beyond the tokenizer (Qwen2.5 7B vs 1.5B, GPT-2 padded to a multiple of 64) are compared on the
FIRST len(tokenizer) logits: padding rows with huge weights must change nothing, in the plain and the fused loss."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from csd.train import run

PADDING = 24


def save_padded_copy(source: str, target: Path, extra_rows: int, scale: float = 1e3) -> Path:
    """``source`` with ``extra_rows`` appended to its embedding and head, filled with huge values: any padding
    logit that reached a loss would dominate it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    vocab = model.get_output_embeddings().weight.shape[0]
    model.resize_token_embeddings(vocab + extra_rows, mean_resizing=False)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            weight[vocab:] = scale * torch.randn(extra_rows, weight.shape[1], generator=generator)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def padded_teacher(tiny_pair, tmp_path_factory):
    return save_padded_copy(tiny_pair[0], tmp_path_factory.mktemp("padded") / "teacher", PADDING)


def test_shared_vocab_size_is_the_tokenizer_length(tiny_pair, padded_teacher):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from csd.models import shared_vocab_size

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair[1])
    student = AutoModelForCausalLM.from_pretrained(tiny_pair[1])
    teacher = AutoModelForCausalLM.from_pretrained(padded_teacher)
    assert teacher.get_output_embeddings().weight.shape[0] == len(tokenizer) + PADDING
    assert shared_vocab_size(tokenizer, tokenizer, student, teacher) == len(tokenizer)
    assert shared_vocab_size(tokenizer, tokenizer, teacher, student) == len(tokenizer)


def test_micro_batch_compares_the_first_vocab_logits(train_config, padded_teacher):
    """The trainer's distillation sum equals the objective on the unpadded teacher's logits, computed here."""
    from accelerate import Accelerator

    from csd.config import loss_kwargs
    from csd.data import TrainCollator, build_dataset, pad_token_id_of
    from csd.losses import get_loss
    from csd.models import build_models
    from csd.step import micro_batch_sums, shift_labels

    plain_cfg = train_config("loss=csd")
    cfg = train_config("loss=csd", f"model.teacher.name_or_path={padded_teacher}")
    models, plain = build_models(cfg), build_models(plain_cfg)
    assert models.vocab == plain.vocab == len(models.tokenizer)
    objective = get_loss("csd", **loss_kwargs(cfg.loss))
    data = build_dataset(cfg.data, "train", models.tokenizer, cfg.train.max_length, cfg.train.max_prompt_length)
    batch = TrainCollator(pad_token_id_of(models.tokenizer))([data[i] for i in range(4)])
    with torch.no_grad():
        sums = micro_batch_sums(models.student, models, objective, batch, cfg, Accelerator(cpu=True))
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        padded_logits = models.teacher(**inputs).logits
        unpadded_logits = plain.teacher(**inputs).logits
        assert padded_logits[..., len(models.tokenizer):].abs().max() > 100  # the padding logits are huge
        torch.testing.assert_close(padded_logits[..., :len(models.tokenizer)], unpadded_logits)
        expected = objective(models.student(**inputs).logits, unpadded_logits, shift_labels(batch["labels"]),
                             reduction="sum")
    torch.testing.assert_close(sums["kd"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused", [False, True])
def test_padded_teacher_trains_as_the_unpadded_one(train_config, padded_teacher, tmp_path, fused):
    common = ("loss=csd", "loss.weighting=TS", f"train.head={'fused' if fused else 'logits'}", "optim.lr=1e-2")
    plain = run(train_config(*common, f"output_root={tmp_path}/plain"))
    padded = run(train_config(*common, f"model.teacher.name_or_path={padded_teacher}", f"output_root={tmp_path}/padded"))
    for a, b in zip(plain["history"], padded["history"], strict=True):   # step 2 also checks step 1's gradient
        assert b["train/kd"] == pytest.approx(a["train/kd"], rel=1e-5)


def test_padded_student_head_is_sliced_too(train_config, tiny_pair, tmp_path):
    padded_student = save_padded_copy(tiny_pair[1], tmp_path / "student", 8)
    plain = run(train_config("loss=csd", "optim.lr=1e-2", f"output_root={tmp_path}/plain"))
    padded = run(train_config("loss=csd", "optim.lr=1e-2", f"model.student.name_or_path={padded_student}",
                              f"output_root={tmp_path}/padded"))
    for a, b in zip(plain["history"], padded["history"], strict=True):
        assert b["train/kd"] == pytest.approx(a["train/kd"], rel=1e-5)

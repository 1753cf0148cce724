"""One trainer step recomputed in float64 from the definitions, for tests that check a logged step (not a test file).

    batches = record_batches(monkeypatch)               # every micro-batch the trainer's steps compute a loss on
    summary = run(cfg)
    expected = reference_step(cfg, batches[: cfg.train.grad_accum])
    assert summary["history"][0]["train/kd"] == pytest.approx(expected["kd"], rel=1e-4)

``reference_step`` loads the run's initial teacher and student in float64 (the first step's loss is computed before
any update) and returns the step's ``kd`` and ``ce`` means, ``loss`` = (1 − kd_ratio)·CE + kd_ratio·KD and the norm
of its gradient over the student's parameters (the trainer logs it, before clipping, as train/grad_norm). KD per
token is tests/test_losses.py's naive float64 definition of the objective (logits cut to the tokenizer length);
CE = logsumexp(s) − s[target]. Means: loss.reduction=token over every target token of the step; sequence over each
row's tokens, then over the step's examples (a chat pair's two rows are one example).
"""
from __future__ import annotations

import torch

from test_losses import ref_rows

IGNORE = -100
NOT_OBJECTIVE_OPTIONS = ("name", "reduction", "chunk_size", "compile")


def record_batches(monkeypatch) -> list[dict]:
    """A list that fills with a copy of each micro-batch csd.step.micro_batch_sums is called with."""
    import csd.step

    seen, original = [], csd.step.micro_batch_sums

    def recording(student, models, objective, batch, *args, **kwargs):
        seen.append({key: value.detach().clone().cpu() for key, value in batch.items()})
        return original(student, models, objective, batch, *args, **kwargs)

    monkeypatch.setattr(csd.step, "micro_batch_sums", recording)
    return seen


def float64_model(path: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).eval()


def reference_step(cfg, batches: list[dict]) -> dict:
    from transformers import AutoTokenizer

    from omegaconf import OmegaConf

    vocab = len(AutoTokenizer.from_pretrained(cfg.model.student.name_or_path))
    name = cfg.loss.name
    kd_ratio = 0.0 if name == "sft" else float(cfg.train.kd_ratio)
    options = {k: v for k, v in OmegaConf.to_container(cfg.loss, resolve=True).items() if k not in NOT_OBJECTIVE_OPTIONS}
    student = float64_model(cfg.model.student.name_or_path)
    teacher = float64_model(cfg.model.teacher.name_or_path) if kd_ratio > 0 else None
    per_sequence = cfg.loss.get("reduction", "token") == "sequence"
    kd_total = ce_total = torch.zeros((), dtype=torch.float64)
    count = 0.0
    for batch in batches:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        logits = student(**inputs).logits
        teacher_logits = None
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(**inputs).logits[..., :vocab]
        for row in range(logits.shape[0]):
            targets = batch["labels"][row, 1:]
            kept = targets != IGNORE
            if not kept.any():
                continue
            s = logits[row, :-1][kept]
            ce = torch.logsumexp(s, dim=-1) - s.gather(-1, targets[kept][:, None]).squeeze(-1)
            kd = ref_rows(name, s[:, :vocab], teacher_logits[row, :-1][kept], **options) if teacher is not None else 0 * ce
            weight = 1.0 / int(kept.sum()) if per_sequence else 1.0
            kd_total, ce_total = kd_total + weight * kd.sum(), ce_total + weight * ce.sum()
            count += 1 if per_sequence else int(kept.sum())
    if per_sequence and cfg.batches.name == "chat_pairs":
        count /= 2
    kd_mean, ce_mean = kd_total / count, ce_total / count
    loss = (1 - kd_ratio) * ce_mean + kd_ratio * kd_mean
    loss.backward()
    grad_norm = torch.sqrt(sum((p.grad**2).sum() for p in student.parameters() if p.grad is not None))
    return {"kd": kd_mean.item(), "ce": ce_mean.item(), "loss": loss.item(), "grad_norm": grad_norm.item()}

"""The arithmetic of one optimizer step: micro-batches, the loss of each, and its weight in the step.

    loss = (1 − kd_ratio)·CE + kd_ratio·distillation       (loss.reduction=token: Σ per-token loss ÷ the step's target
         + lm_coef·CE on a pretraining corpus (train.lm_data)   tokens over all processes; sequence: each sequence's
                                                                token mean, Σ ÷ the step's examples)
The corpus term is a token mean of its own. Splitting a step over micro-batches or processes changes nothing but
the split: accelerate's 1/grad_accum and DDP/DeepSpeed's 1/processes are undone by the scale each backward gets.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from csd.distributed import gathered_in_backward, gathered_under_zero3, rows_per_example, unwrap_teacher
from csd.losses import IGNORE_INDEX
from csd.losses.cross_entropy import chunked_cross_entropy
from csd.losses.fused import fused_linear_loss_with
from csd.models import Models, TeacherHead, base_causal_lm, head_of, hidden_states_before_head, plain_head


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Targets aligned with the logits: position i predicts token i+1 (the last position predicts nothing).

    Shifting the labels instead of slicing the logits keeps the (B, T, V) logits contiguous (no copy)."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def target_mask(batch: dict) -> torch.Tensor:
    """(B, T) True where a position has a target (the shifted labels are not ignored)."""
    return shift_labels(batch["labels"]) != IGNORE_INDEX


def rows_with_targets(batch: dict) -> torch.Tensor:
    """How many rows of the batch have at least one target."""
    return (target_mask(batch).sum(dim=1) > 0).sum()


def optimizer_windows(num_examples: int, cfg: DictConfig, world: int, epoch: int) -> list[torch.Tensor]:
    """This epoch's example indices, one (grad_accum, world, batch_size) block per optimizer step.

    A fixed permutation per (seed, epoch) and no dependence on process-local state: a resumed run sees the
    same batches, and splitting a batch over micro-batches or processes changes nothing but the split."""
    per_step = cfg.train.batch_size * world * cfg.train.grad_accum
    generator = torch.Generator().manual_seed(cfg.train.seed * 1000 + epoch)
    order = torch.randperm(num_examples, generator=generator)
    steps = num_examples // per_step
    return list(order[: steps * per_step].view(steps, cfg.train.grad_accum, world, cfg.train.batch_size))


def teacher_precision(accelerator, teacher):
    """The teacher's forward under the run's autocast, except a float16 teacher (the release's --teacher-model-fp16):
    it runs in plain float16, as the release runs it outside the engine, not in the bf16 of the student's autocast.
    ``teacher`` may be a TeacherHead (training from a teacher cache): its head then runs as the whole teacher would."""
    weight = teacher.weight if isinstance(teacher, TeacherHead) else next(unwrap_teacher(teacher).parameters(), None)
    if weight is not None and weight.dtype == torch.float16:
        return torch.autocast(device_type=accelerator.device.type, enabled=False)
    return accelerator.autocast()


def micro_batch_sums(student, models: Models, objective, batch: dict, cfg: DictConfig, accelerator,
                     weights: Optional[torch.Tensor] = None) -> dict:
    """One micro-batch: ``loss`` = (1 − kd_ratio)·Σ CE + kd_ratio·Σ distillation (differentiable), the detached
    sums ``kd`` and ``ce`` for logging, and the number of target ``tokens``; each token's loss times its
    ``weights`` entry when given (a per-sequence mean).

    The logits are the (1, N, V) block of the N target positions (``logits_at_rows``); no float32 copy of them is
    made: CE and the objective run chunk by chunk, and CE keeps a gradient buffer only when its weight is non-zero."""
    targets = shift_labels(batch["labels"])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    rows = targets != IGNORE_INDEX  # the target positions: the only ones any loss reads
    sums = {"tokens": rows.sum()}
    cached = batch.get("teacher_hidden")  # the teacher's head inputs at the target positions (csd/teacher_cache.py)
    if cached is not None and cached.shape[0] != int(sums["tokens"]):
        raise RuntimeError(f"the teacher cache gave {cached.shape[0]} rows for a batch with {int(sums['tokens'])} "
                           "target positions")
    kd_ratio = cfg.train.kd_ratio if objective is not None else 0.0
    if cfg.train.head == "fused" and objective is not None:
        unwrapped = accelerator.unwrap_model(student)
        hidden = hidden_states_before_head(student, unwrapped, inputs).flatten(0, 1)
        head = base_causal_lm(unwrapped).get_output_embeddings().weight
        flat_targets, flat_weights = targets.flatten(), None if weights is None else weights.flatten()
        if cached is None:
            teacher_module = unwrap_teacher(models.teacher)
            with torch.no_grad(), teacher_precision(accelerator, models.teacher):
                teacher_hidden = hidden_states_before_head(models.teacher, teacher_module, inputs).flatten(0, 1)
            teacher_head = teacher_module.get_output_embeddings().weight
            gathered = (head, teacher_head)
        else:  # the cache holds the target positions only: the loss sees those rows, the same sums
            keep = rows.flatten()
            hidden, flat_targets, teacher_hidden = hidden[keep], flat_targets[keep], cached
            flat_weights = None if flat_weights is None else flat_weights[keep]
            teacher_head, gathered = models.teacher_head.weight, (head,)
        with gathered_under_zero3(accelerator, *gathered):  # ZeRO-3 shards the heads: gather them
            loss = fused_linear_loss_with(objective, hidden, head[: models.vocab], teacher_hidden,
                                          teacher_head[: models.vocab], flat_targets, reduction="sum",
                                          kd_weight=kd_ratio, ce_weight=1.0 - kd_ratio, parts=sums,
                                          weights=flat_weights)
        sums["loss"] = gathered_in_backward(accelerator, loss, head)
        return sums
    # The logits path: (N, V) logits at the N target positions only (no objective reads the others).
    row_targets = targets[rows].unsqueeze(0)
    row_weights = None if weights is None else weights[rows].unsqueeze(0)
    logits, head = logits_at_rows(student, accelerator.unwrap_model(student), inputs, rows, models.vocab, accelerator)
    with torch.set_grad_enabled(torch.is_grad_enabled() and kd_ratio < 1.0):
        ce = chunked_cross_entropy(logits, row_targets, reduction="sum", weights=row_weights)
    sums["ce"], sums["loss"] = ce.detach(), ce
    if objective is not None:
        with torch.no_grad(), teacher_precision(accelerator, models.teacher_head or models.teacher):
            if cached is not None:
                teacher_logits = models.teacher_head.logits(cached, models.vocab).unsqueeze(0)
            else:
                teacher_logits, _ = logits_at_rows(models.teacher, unwrap_teacher(models.teacher), inputs, rows,
                                                   models.vocab, accelerator)
        kd = objective(logits, teacher_logits, row_targets, reduction="sum", weights=row_weights)
        sums["kd"] = kd.detach()
        sums["loss"] = kd if kd_ratio >= 1.0 else (1.0 - kd_ratio) * ce + kd_ratio * kd
    if head is not None:  # the head ran outside the model's forward: ZeRO-3 gathers it for the backward too
        sums["loss"] = gathered_in_backward(accelerator, sums["loss"], head)
    return sums


def logits_at_rows(model, unwrapped, inputs: dict, rows: torch.Tensor, vocab: Optional[int],
                   accelerator) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(1, N, vocab) logits at the N positions where ``rows`` (B, T) is True, and the head weight when it ran
    outside the model's forward (None when the whole model computed the logits). ``model`` is the forward to call
    (DDP/DeepSpeed-wrapped or not), ``unwrapped`` the transformers model. A plain head (csd.models.PLAIN_HEADS)
    runs at those positions only: on a short answer after a long prompt that is most of the head's FLOPs and of
    the (B, T, V) logits' memory; any other head runs in the model's own forward, then the rows are taken."""
    if not plain_head(unwrapped):
        return model(**inputs, use_cache=False).logits[rows][..., :vocab].unsqueeze(0), None
    hidden = hidden_states_before_head(model, unwrapped, inputs)[rows]
    head = head_of(unwrapped, copy=False)
    with gathered_under_zero3(accelerator, head.weight):  # ZeRO-3 shards the head: gather it
        return head.logits(hidden, vocab).unsqueeze(0), head.weight


def lm_cross_entropy_sum(student, batch: dict) -> torch.Tensor:
    """Σ CE over the target tokens of a batch (the lm_coef term; csd.sweep.reference_nll)."""
    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return chunked_cross_entropy(logits, shift_labels(batch["labels"]), reduction="sum")


def global_token_count(batches: list, accelerator) -> float:
    local = sum(int(target_mask(b).sum()) for b in batches)
    return accelerator.reduce(torch.tensor(float(local), device=accelerator.device), "sum").item()


def per_sequence(cfg: DictConfig) -> bool:
    """loss.reduction: ``token`` = one mean over every target token of the step; ``sequence`` = the token mean of
    each sequence, averaged over the step's examples (the release's Table 3/4 trainers)."""
    return cfg.loss.get("reduction", "token") == "sequence"


def token_weights(batch: dict, cfg: DictConfig) -> Optional[torch.Tensor]:
    """None for a token mean; for a per-sequence mean each target token weighs 1 / (its sequence's target count)."""
    if not per_sequence(cfg):
        return None
    targets = target_mask(batch).float()
    return targets / targets.sum(dim=1, keepdim=True).clamp(min=1.0)


def global_example_count(batches: list, cfg: DictConfig, accelerator) -> float:
    """Examples with a target in the step, over all processes; a chat pair (teacher and student row) is one
    example, so its two per-sequence means are summed as the release does."""
    rows = sum(int(rows_with_targets(b)) for b in batches)
    return accelerator.reduce(torch.tensor(rows / rows_per_example(cfg), device=accelerator.device), "sum").item()


def train_step(window, batch_source, student, models, objective, optimizer, scheduler, cfg, accelerator,
               lm_batches=None) -> dict:
    """One optimizer step over ``grad_accum`` micro-batches; returns the step's token-mean metrics."""
    rank = accelerator.process_index
    batches = [batch_source(micro[rank], student) for micro in window]
    corpus = [lm_batches.next_batch() for _ in window] if lm_batches is not None else [None] * len(window)
    global_tokens = global_token_count(batches, accelerator)
    denominator = global_example_count(batches, cfg, accelerator) if per_sequence(cfg) else global_tokens
    # accelerate divides by grad_accum and DDP/DeepSpeed average over processes: undo both, so each token (or
    # example) has weight 1/denominator whatever the split.
    scale = accelerator.num_processes * cfg.train.grad_accum / max(denominator, 1.0)
    tokens = {"kd": denominator, "ce": denominator}
    if lm_batches is not None:  # the corpus term is a token mean of its own, weighted by lm_coef
        tokens["lm_ce"] = global_token_count(corpus, accelerator)
        lm_scale = cfg.train.lm_coef * accelerator.num_processes * cfg.train.grad_accum / max(tokens["lm_ce"], 1.0)
    totals = dict.fromkeys(tokens, 0.0)
    for batch, corpus_batch in zip(batches, corpus):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.accumulate(student):
            sums = micro_batch_sums(student, models, objective, batch, cfg, accelerator, token_weights(batch, cfg))
            loss = sums["loss"] * scale
            if corpus_batch is not None:  # one backward for both: DeepSpeed counts a micro-step per backward
                sums["lm_ce"] = lm_cross_entropy_sum(student, {k: v.to(accelerator.device) for k, v in corpus_batch.items()})
                loss = loss + lm_scale * sums["lm_ce"]
            accelerator.backward(loss)
        for key in totals:
            if key in sums:
                totals[key] += sums[key].detach().float()
    grad_norm = accelerator.clip_grad_norm_(student.parameters(), cfg.optim.clip_grad) if cfg.optim.clip_grad else None
    learning_rate = scheduler.get_last_lr()[0]  # the rate this step used
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    metrics = {f"train/{k}": accelerator.reduce(torch.as_tensor(v, device=accelerator.device).float(), "sum").item() / max(tokens[k], 1.0)
               for k, v in totals.items() if objective is not None or k != "kd"}
    metrics["train/lr"] = learning_rate
    metrics["train/tokens"] = global_tokens
    if grad_norm is not None:
        metrics["train/grad_norm"] = float(grad_norm)
    return metrics


@torch.no_grad()
def validation_loss(student, models, objective, val_set, collate, cfg, accelerator) -> dict:
    """Distillation loss and CE on the validation split, reduced as loss.reduction says, on every process alike."""
    totals = torch.zeros(3, device=accelerator.device)  # kd, ce, tokens
    rank, world, size = accelerator.process_index, accelerator.num_processes, cfg.train.batch_size
    # Every rank runs the same number of forward passes (DDP buffer syncs and ZeRO-3 gathers are collectives);
    # a rank past the end reuses the first examples with every label ignored.
    rounds = min(math.ceil(len(val_set) / (world * size)), cfg.train.eval_batches or math.inf)
    for round_index in range(int(rounds)):
        start = (round_index * world + rank) * size
        batch = collate([val_set[i] for i in range(start, min(start + size, len(val_set)))] or [val_set[0]])
        if start >= len(val_set):
            batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
            if "teacher_hidden" in batch:  # no targets left: no cached rows either
                batch["teacher_hidden"] = batch["teacher_hidden"][:0]
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        sums = micro_batch_sums(student, models, objective, batch, cfg, accelerator, token_weights(batch, cfg))
        count = rows_with_targets(batch) if per_sequence(cfg) else sums["tokens"]
        totals += torch.stack([sums.get("kd", torch.zeros(())).float().to(totals.device), sums["ce"].float(), count.float()])
    kd, ce, tokens = accelerator.reduce(totals, "sum").tolist()
    metrics = {"val/ce": ce / max(tokens, 1.0)}
    if objective is not None:
        metrics["val/kd"] = kd / max(tokens, 1.0)
    metrics["val/loss"] = metrics.get("val/kd", metrics["val/ce"])
    return metrics

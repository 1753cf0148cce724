"""Distil a teacher into a student (or fine-tune with loss=sft): ``python -m csd.train experiment=<preset> ...``.

The same command runs on one CPU and under ``accelerate launch -m csd.train`` on many GPUs (DDP or DeepSpeed).
The story, top to bottom: build models and data, then for each optimizer step draw ``grad_accum`` micro-batches,
weight every target token equally across micro-batches and processes, step, log, evaluate, checkpoint.

    loss = (1 − kd_ratio)·CE + kd_ratio·distillation,   both as Σ per-token loss ÷ global number of target tokens
         + lm_coef·CE on a pretraining corpus (train.lm_data), Σ ÷ that corpus batch's own global token count
Where micro-batches come from (references, student samples, chat pairs) is the `onpolicy` group (csd/onpolicy).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Optional

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from csd.checkpoint import STATE_FILE, latest_checkpoint, save_checkpoint, save_model
from csd.config import distillation_enabled, loss_kwargs, validate_train_config
from csd.data import TrainCollator, build_dataset, pad_token_id_of
from csd.distributed import (check_launch, gathered_in_backward, gathered_under_zero3, make_accelerator, prepare_teacher,
                             synced_generation, unwrap_teacher)
from csd.logger import RunLogger
from csd.losses import IGNORE_INDEX, get_loss
from csd.losses.cross_entropy import chunked_cross_entropy
from csd.losses.fused import fused_linear_loss_with
from csd.models import (TOKENIZER_KEYS, base_causal_lm, hidden_states_before_head, load_model, load_teacher_and_student,
                        load_tokenizer, same_source, shared_vocab_size)
from csd.onpolicy import build_batch_source, build_lm_batches, check_config as check_onpolicy_config
from csd.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Models:
    student: torch.nn.Module
    tokenizer: object
    teacher: Optional[torch.nn.Module] = None
    vocab: Optional[int] = None  # logits compared on [:vocab]


@dataclasses.dataclass
class TrainState:
    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_value: Optional[float] = None
    history: list = dataclasses.field(default_factory=list)
    evaluations: list = dataclasses.field(default_factory=list)


def build_models(cfg: DictConfig) -> Models:
    tokenizer = load_tokenizer(cfg.model.student)
    if not distillation_enabled(cfg):
        return Models(load_model(cfg.model.student), tokenizer)
    teacher, student = load_teacher_and_student(cfg.model.teacher, cfg.model.student)
    shared = same_source(cfg.model.teacher, cfg.model.student, TOKENIZER_KEYS)
    teacher_tokenizer = tokenizer if shared else load_tokenizer(cfg.model.teacher)
    vocab = shared_vocab_size(tokenizer, teacher_tokenizer, student, teacher)
    return Models(student, tokenizer, teacher, vocab)


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Targets aligned with the logits: position i predicts token i+1 (the last position predicts nothing).

    Shifting the labels instead of slicing the logits keeps the (B, T, V) logits contiguous (no copy)."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def optimizer_windows(num_examples: int, cfg: DictConfig, world: int, epoch: int) -> list[torch.Tensor]:
    """This epoch's example indices, one (grad_accum, world, batch_size) block per optimizer step.

    A fixed permutation per (seed, epoch) and no dependence on process-local state: a resumed run sees the
    same batches, and splitting a batch over micro-batches or processes changes nothing but the split."""
    per_step = cfg.train.batch_size * world * cfg.train.grad_accum
    generator = torch.Generator().manual_seed(cfg.train.seed * 1000 + epoch)
    order = torch.randperm(num_examples, generator=generator)
    steps = num_examples // per_step
    return list(order[: steps * per_step].view(steps, cfg.train.grad_accum, world, cfg.train.batch_size))


def micro_batch_sums(student, models: Models, objective, batch: dict, cfg: DictConfig, accelerator,
                     weights: Optional[torch.Tensor] = None) -> dict:
    """One micro-batch: ``loss`` = (1 − kd_ratio)·Σ CE + kd_ratio·Σ distillation (differentiable), the detached
    sums ``kd`` and ``ce`` for logging, and the number of target ``tokens``; each token's loss times its
    ``weights`` entry when given (a per-sequence mean).

    No float32 copy of the (B, T, V) logits is made: CE and the objective run chunk by chunk, and CE keeps a
    gradient buffer only when its weight is non-zero."""
    targets = shift_labels(batch["labels"])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    kd_ratio = cfg.train.kd_ratio if objective is not None else 0.0
    sums = {"tokens": (targets != IGNORE_INDEX).sum()}
    if cfg.loss.get("fused", False) and objective is not None:
        unwrapped = accelerator.unwrap_model(student)
        teacher_module = unwrap_teacher(models.teacher)
        hidden = hidden_states_before_head(student, unwrapped, inputs)
        with torch.no_grad(), accelerator.autocast():
            teacher_hidden = hidden_states_before_head(models.teacher, teacher_module, inputs)
        head = base_causal_lm(unwrapped).get_output_embeddings().weight
        teacher_head = teacher_module.get_output_embeddings().weight
        with gathered_under_zero3(accelerator, head, teacher_head):  # ZeRO-3 shards the heads: gather them
            loss = fused_linear_loss_with(objective, hidden.flatten(0, 1), head[: models.vocab],
                                          teacher_hidden.flatten(0, 1), teacher_head[: models.vocab],
                                          targets.flatten(), reduction="sum", kd_weight=kd_ratio,
                                          ce_weight=1.0 - kd_ratio, parts=sums,
                                          weights=None if weights is None else weights.flatten())
        sums["loss"] = gathered_in_backward(accelerator, loss, head)
        return sums
    logits = student(**inputs, use_cache=False).logits
    with torch.set_grad_enabled(torch.is_grad_enabled() and kd_ratio < 1.0):
        ce = chunked_cross_entropy(logits, targets, reduction="sum", weights=weights)
    sums["ce"], sums["loss"] = ce.detach(), ce
    if objective is not None:
        with torch.no_grad(), accelerator.autocast():
            teacher_logits = models.teacher(**inputs, use_cache=False).logits
        vocab = models.vocab
        if logits.shape[-1] != vocab or teacher_logits.shape[-1] != vocab:
            logits, teacher_logits = logits[..., :vocab], teacher_logits[..., :vocab]
        kd = objective(logits, teacher_logits, targets, reduction="sum", weights=weights)
        sums["kd"] = kd.detach()
        sums["loss"] = kd if kd_ratio >= 1.0 else (1.0 - kd_ratio) * ce + kd_ratio * kd
    return sums


class ReferenceBatches:
    """Off-policy distillation: micro-batches of the data set's reference responses.

    A batch source maps this process's example indices of one micro-batch to a right-padded training batch
    ``{input_ids, attention_mask, labels}``; on-policy sources (student samples, replay buffer) plug in here."""

    def __init__(self, train_set, collate):
        self.train_set, self.collate = train_set, collate

    def __call__(self, indices: torch.Tensor, student) -> dict:
        return self.collate([self.train_set[int(i)] for i in indices])


def lm_cross_entropy_sum(student, batch: dict) -> torch.Tensor:
    """Σ CE over the target tokens of a pretraining-corpus batch (the lm_coef term)."""
    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return chunked_cross_entropy(logits, shift_labels(batch["labels"]), reduction="sum")


def global_token_count(batches: list, accelerator) -> float:
    local = sum(int((shift_labels(b["labels"]) != IGNORE_INDEX).sum()) for b in batches)
    return accelerator.reduce(torch.tensor(float(local), device=accelerator.device), "sum").item()


def per_sequence(cfg: DictConfig) -> bool:
    """loss.reduction: ``token`` = one mean over every target token of the step; ``sequence`` = the token mean of
    each sequence, averaged over the step's examples (the release's Table 3/4 trainers)."""
    return cfg.loss.get("reduction", "token") == "sequence"


def token_weights(batch: dict, cfg: DictConfig) -> Optional[torch.Tensor]:
    """None for a token mean; for a per-sequence mean each target token weighs 1 / (its sequence's target count)."""
    if not per_sequence(cfg):
        return None
    targets = (shift_labels(batch["labels"]) != IGNORE_INDEX).float()
    return targets / targets.sum(dim=1, keepdim=True).clamp(min=1.0)


def global_example_count(batches: list, cfg: DictConfig, accelerator) -> float:
    """Examples with a target in the step, over all processes; a chat pair (teacher and student row) is one
    example, so its two per-sequence means are summed as the release does."""
    rows = sum(int(((shift_labels(b["labels"]) != IGNORE_INDEX).sum(dim=1) > 0).sum()) for b in batches)
    rows_per_example = 2 if cfg.onpolicy.name == "chat_pairs" else 1
    return accelerator.reduce(torch.tensor(rows / rows_per_example, device=accelerator.device), "sum").item()


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
def evaluate(student, models, objective, val_set, collate, cfg, accelerator) -> dict:
    """Distillation loss and CE on the validation split, reduced as loss.reduction says (+ ROUGE-L of generations if asked)."""
    was_training = student.training
    student.eval()
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
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        sums = micro_batch_sums(student, models, objective, batch, cfg, accelerator, token_weights(batch, cfg))
        count = ((shift_labels(batch["labels"]) != IGNORE_INDEX).sum(dim=1) > 0).sum() if per_sequence(cfg) else sums["tokens"]
        totals += torch.stack([sums.get("kd", torch.zeros(())).float().to(totals.device), sums["ce"].float(), count.float()])
    kd, ce, tokens = accelerator.reduce(totals, "sum").tolist()
    metrics = {"val/ce": ce / max(tokens, 1.0)}
    if objective is not None:
        metrics["val/kd"] = kd / max(tokens, 1.0)
    metrics["val/loss"] = metrics.get("val/kd", metrics["val/ce"])
    if cfg.train.eval_generate:
        # Every rank needs the numbers to agree on the best checkpoint. Under multi-process ZeRO-3 every rank must
        # take part in each forward: all generate the same prompts with the same seed (synced); otherwise the main
        # process generates and broadcasts.
        from accelerate.utils import broadcast_object_list

        synced = synced_generation(accelerator)
        generated = [generation_metrics(accelerator.unwrap_model(student), models.tokenizer, val_set, cfg, synced)
                     if synced or accelerator.is_main_process else None]
        metrics.update(generated[0] if synced else broadcast_object_list(generated, from_process=0)[0])
    student.train(was_training)
    return metrics


def generation_metrics(model, tokenizer, val_set, cfg: DictConfig, synced_gpus: bool = False) -> dict:
    from csd.generation import generate
    from csd.metrics import compute_metric

    examples = val_set.examples[: cfg.train.eval_generate]
    # Seeded generation runs in a forked RNG: it does not shift the training random stream.
    predictions = generate(model, tokenizer, [e["prompt"] for e in examples], max_new_tokens=cfg.data.max_new_tokens,
                           do_sample=cfg.data.do_sample, seed=cfg.train.seed, batch_size=cfg.train.batch_size,
                           max_prompt_length=cfg.train.max_prompt_length, progress=False, synced_gpus=synced_gpus,
                           precision=cfg.train.mixed_precision)
    return {f"val/{k}": v for k, v in compute_metric(cfg.data.metric, predictions, examples).items()}


def is_due(every, step: int, end_of_epoch: bool) -> bool:
    if every is None:
        return False
    return end_of_epoch if every == "epoch" else step % int(every) == 0


def run(cfg: DictConfig, models: Optional[Models] = None) -> dict:
    """Train as ``cfg`` says; returns the summary also written to ``<output_dir>/metrics.json``."""
    from accelerate.utils import set_seed

    validate_train_config(cfg)
    started = time.time()
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    accelerator = make_accelerator(cfg)
    check_launch(cfg, accelerator)
    check_onpolicy_config(cfg, accelerator)
    set_seed(cfg.train.seed, device_specific=True)  # + process index: ranks draw different dropout masks
    distil = distillation_enabled(cfg)
    models = models or build_models(cfg)
    objective = get_loss(cfg.loss.name, **loss_kwargs(cfg.loss)) if distil else None
    if distil and cfg.loss.get("fused", False):
        capped = [n for n, m in (("student", models.student), ("teacher", models.teacher))
                  if getattr(getattr(m, "config", None), "final_logit_softcapping", None)]
        if capped:  # the fused head computes hidden @ W.T only; these models transform their logits afterwards
            raise ValueError(f"loss.fused=true cannot reproduce the final logit soft-capping of the {' and '.join(capped)}; use loss.fused=false")
    if distil and models.vocab is None:
        models.vocab = len(models.tokenizer)
    if cfg.train.gradient_checkpointing:
        models.student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    data_args = (models.tokenizer, cfg.train.max_length, cfg.train.max_prompt_length)
    train_set = build_dataset(cfg.data, "train", *data_args)
    val_set = build_dataset(cfg.data, "validation", *data_args)
    collate = TrainCollator(pad_token_id_of(models.tokenizer))
    steps_per_epoch = len(optimizer_windows(len(train_set), cfg, accelerator.num_processes, 0))
    if steps_per_epoch == 0:
        raise ValueError(f"the train split has {len(train_set)} examples, fewer than one optimizer step takes "
                         f"(train.batch_size × processes × train.grad_accum); lower train.batch_size")
    total_steps = cfg.train.max_steps or steps_per_epoch * cfg.train.epochs

    student, optimizer = accelerator.prepare(models.student, build_optimizer(models.student, cfg.optim))
    # After prepare: ZeRO regroups the optimizer's parameter groups, and the scheduler must drive those.
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
    accelerator.register_for_checkpointing(scheduler)  # stepped by us once per optimizer step
    models.teacher = prepare_teacher(accelerator, models.teacher)

    batch_source = build_batch_source(cfg, ReferenceBatches(train_set, collate), models.tokenizer, accelerator)
    lm_batches = build_lm_batches(cfg, models.tokenizer, accelerator)
    for stateful in (batch_source, lm_batches):  # replay buffer, coins, corpus position: restored by train.resume
        if hasattr(stateful, "state_dict"):
            accelerator.register_for_checkpointing(stateful)

    state = TrainState()
    resume_from = latest_checkpoint(output_dir) if cfg.train.resume == "auto" else cfg.train.resume
    if resume_from:
        accelerator.load_state(str(resume_from))
        state = TrainState(**json.loads((Path(resume_from) / STATE_FILE).read_text()))
        log.info("resumed from %s at step %d", resume_from, state.global_step)
    logger = RunLogger(cfg, output_dir, total_steps, state.global_step, accelerator.is_main_process)
    tokens_seen, tick = 0.0, time.time()
    stopping = False
    student.train()
    while state.global_step < total_steps:
        windows = optimizer_windows(len(train_set), cfg, accelerator.num_processes, state.epoch)
        for window in windows[state.step_in_epoch:]:
            metrics = train_step(window, batch_source, student, models, objective, optimizer, scheduler, cfg, accelerator,
                                 lm_batches)
            state.global_step += 1
            state.step_in_epoch += 1
            tokens_seen += metrics.pop("train/tokens")
            metrics["train/epoch"] = state.epoch + state.step_in_epoch / len(windows)
            if state.global_step % cfg.train.log_every == 0:
                metrics["train/tokens_per_s"] = tokens_seen / max(time.time() - tick, 1e-9)
                tokens_seen, tick = 0.0, time.time()
            state.history.append({"step": state.global_step, **metrics})
            logger.log(metrics, state.global_step)
            end_of_epoch = state.step_in_epoch == len(windows)
            finished = state.global_step >= total_steps
            if is_due(cfg.train.eval_every, state.global_step, end_of_epoch) or (finished and cfg.train.eval_every is not None):
                evaluation = evaluate(student, models, objective, val_set, collate, cfg, accelerator)
                state.evaluations.append({"step": state.global_step, **evaluation})
                logger.log(evaluation, state.global_step, advance=False)
                value = evaluation.get(cfg.train.best_metric)
                higher_better = not cfg.train.best_metric.endswith(("loss", "ce", "kd"))
                if value is not None and (state.best_value is None or (value > state.best_value if higher_better else value < state.best_value)):
                    state.best_value = value
                    save_model(accelerator, student, models.tokenizer, output_dir / "best")
            if end_of_epoch:
                state.epoch += 1
                state.step_in_epoch = 0
            stopping = cfg.train.stop_after_steps is not None and state.global_step >= cfg.train.stop_after_steps
            if is_due(cfg.train.save_every, state.global_step, end_of_epoch) or stopping:
                save_checkpoint(accelerator, output_dir, state, cfg.train.keep_checkpoints)
            if finished or stopping:
                break
        if stopping:
            logger.close()
            log.warning("stopped after step %d as train.stop_after_steps asks; resume with train.resume=auto", state.global_step)
            return {"stopped_at": state.global_step}

    if cfg.train.save_final_model:
        save_model(accelerator, student, models.tokenizer, output_dir / "final")
    summary = {
        "experiment": cfg.experiment_name, "run": cfg.run_name, "loss": cfg.loss.name, "steps": state.global_step,
        "train": state.history[-1] if state.history else {}, "val": state.evaluations[-1] if state.evaluations else {},
        "best": {cfg.train.best_metric: state.best_value}, "history": state.history, "evaluations": state.evaluations,
        "wall_s": time.time() - started,
    }
    logger.write_metrics(summary)
    logger.close()
    return summary


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> Optional[float]:
    try:
        summary = run(cfg)
    except (ValueError, FileNotFoundError, ImportError) as error:  # bad config or input: one line, no traceback
        if os.environ.get("HYDRA_FULL_ERROR") == "1":  # Hydra's own switch for full tracebacks
            raise
        raise SystemExit(f"csd.train: error: {error}") from None
    value = summary.get("val", {}).get(cfg.train.best_metric)
    return None if value is None or math.isnan(value) else value


if __name__ == "__main__":
    main()

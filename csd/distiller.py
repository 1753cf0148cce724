"""The training recipe: one object whose state lives on ``self``, so resuming is saving and loading that state.

    distiller = Distiller(cfg)          # cfg: the Hydra config of `python -m csd.train` (csd.config.compose)
    distiller.setup()                   # accelerator, models, data, optimiser, schedule, batch sources, resume
    summary = distiller.train()         # the loop below; writes <output_dir>/metrics.json

The loop, top to bottom: for each optimizer step draw its micro-batches (csd/step.py), step, log; at the due
steps validate (loss, optionally generated responses scored by csd.evaluate.score), keep best/, checkpoint.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import logging
import time
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig

from csd.checkpoint import (STATE_FILE, fault_point, latest_checkpoint, recover_interrupted_saves, save_checkpoint,
                            save_model)
from csd.config import distillation_enabled, higher_is_better, loss_kwargs, validate
from csd.data import TrainCollator, pad_token_id_of
from csd.distributed import make_accelerator, prepare_teacher, synced_generation
from csd.logger import RunLogger
from csd.losses import get_loss
from csd.models import Models, build_models, head_of, load_tokenizer, refuse_fused_head_if_softcapped
from csd.batches import ReferenceBatches, build_batch_source, build_lm_batches
from csd.optim import build_optimizer, build_scheduler
from csd import step as steps, teacher_cache

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainState:
    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_value: Optional[float] = None
    history: list = dataclasses.field(default_factory=list)
    evaluations: list = dataclasses.field(default_factory=list)


def is_due(every, step: int, end_of_epoch: bool) -> bool:
    if every is None:
        return False
    return end_of_epoch if every == "epoch" else step % int(every) == 0


class Distiller:
    def __init__(self, cfg: DictConfig, models: Optional[Models] = None):
        validate(cfg)  # every check of the config, before anything loads
        self.cfg, self.models = cfg, models
        self.output_dir = Path(cfg.output_dir)
        self.state = TrainState()
        self.started = time.time()

    # --- build -----------------------------------------------------------------------------------------------
    def setup(self) -> "Distiller":
        from accelerate.utils import set_seed

        cfg = self.cfg
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator = accelerator = make_accelerator(cfg)
        set_seed(cfg.train.seed, device_specific=True)  # + process index: ranks draw different dropout masks
        distil = distillation_enabled(cfg)
        models = self.models = self.models_and_data(accelerator)
        self.objective = get_loss(cfg.loss.name, **loss_kwargs(cfg.loss)) if distil else None
        if distil and cfg.train.head == "fused":
            refuse_fused_head_if_softcapped(models)
        if distil and models.vocab is None:
            models.vocab = len(models.tokenizer)
        if cfg.train.gradient_checkpointing:
            models.student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

        steps_per_epoch = len(steps.optimizer_windows(len(self.train_set), cfg, accelerator.num_processes, 0))
        if steps_per_epoch == 0:
            raise ValueError(f"the train split has {len(self.train_set)} examples, fewer than one optimizer step takes "
                             f"(train.batch_size × processes × train.grad_accum); lower train.batch_size")
        self.total_steps = cfg.train.max_steps or steps_per_epoch * cfg.train.epochs

        self.student, self.optimizer = accelerator.prepare(models.student, build_optimizer(models.student, cfg.optim))
        # After prepare: ZeRO regroups the optimizer's parameter groups, and the scheduler must drive those.
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.total_steps)
        accelerator.register_for_checkpointing(self.scheduler)  # stepped by us once per optimizer step
        models.teacher = prepare_teacher(accelerator, models.teacher)
        self.batch_source = build_batch_source(cfg, ReferenceBatches(self.train_set, self.collate), models.tokenizer,
                                               accelerator, self.student_set)
        self.lm_batches = build_lm_batches(cfg, models.tokenizer, accelerator)
        for stateful in (self.batch_source, self.lm_batches):  # buffer, coins, corpus position: restored on resume
            if hasattr(stateful, "state_dict"):
                accelerator.register_for_checkpointing(stateful)
        if accelerator.is_main_process:
            recover_interrupted_saves(self.output_dir)  # a best/ or final/ a kill left moved aside
        accelerator.wait_for_everyone()
        resume_from = latest_checkpoint(self.output_dir) if cfg.train.resume == "auto" else cfg.train.resume
        if resume_from:
            self.load_state_dict(resume_from)
        self.logger = RunLogger(cfg, self.output_dir, self.total_steps, self.state.global_step,
                                accelerator.is_main_process)
        return self

    def models_and_data(self, accelerator) -> Models:
        """The models and the encoded splits. With ``train.teacher_cache`` the splits carry the teacher's hidden states
        (csd/teacher_cache.py, built first where missing) and the teacher is its head only."""
        cfg = self.cfg
        cached = distillation_enabled(cfg) and cfg.train.get("teacher_cache") is not None
        models = self.models or (None if cached else build_models(cfg))
        tokenizer = models.tokenizer if models is not None else load_tokenizer(cfg.model.student)
        splits = teacher_cache.run_splits(cfg, tokenizer)
        self.collate = TrainCollator(pad_token_id_of(tokenizer))
        if cached:
            given = models.teacher if models is not None else None
            load = (lambda: prepare_teacher(accelerator, given)) if given is not None else \
                (lambda: teacher_cache.load_teacher(cfg, accelerator))
            _, splits = teacher_cache.prepare(cfg, accelerator, tokenizer, splits, load, self.collate)
            gc.collect()  # a teacher loaded to build the cache is gone
            if models is None:
                models = build_models(cfg, teacher_head_only=True)
            else:
                models = dataclasses.replace(models, teacher=None, teacher_head=head_of(models.teacher))
        self.train_set, self.val_set, self.student_set = splits["train"], splits["validation"], splits.get("train_student")
        return models

    # --- the loop --------------------------------------------------------------------------------------------
    def train(self) -> dict:
        cfg, state = self.cfg, self.state
        tokens_seen, tick = 0.0, time.time()
        self.student.train()
        while state.global_step < self.total_steps:
            windows = steps.optimizer_windows(len(self.train_set), cfg, self.accelerator.num_processes, state.epoch)
            for window in windows[state.step_in_epoch:]:
                metrics = steps.train_step(window, self.batch_source, self.student, self.models, self.objective,
                                           self.optimizer, self.scheduler, cfg, self.accelerator, self.lm_batches)
                state.global_step += 1
                state.step_in_epoch += 1
                fault_point("step", state.global_step)
                tokens_seen += metrics.pop("train/tokens")
                metrics["train/epoch"] = state.epoch + state.step_in_epoch / len(windows)
                if state.global_step % cfg.train.log_every == 0:
                    metrics["train/tokens_per_s"] = tokens_seen / max(time.time() - tick, 1e-9)
                    tokens_seen, tick = 0.0, time.time()
                state.history.append({"step": state.global_step, **metrics})
                self.logger.log(metrics, state.global_step)
                end_of_epoch = state.step_in_epoch == len(windows)
                finished = state.global_step >= self.total_steps
                if is_due(cfg.train.eval_every, state.global_step, end_of_epoch) or (finished and cfg.train.eval_every is not None):
                    self.keep_if_best(self.validate())
                if end_of_epoch:
                    state.epoch += 1
                    state.step_in_epoch = 0
                stopping = cfg.train.stop_after_steps is not None and state.global_step >= cfg.train.stop_after_steps
                if is_due(cfg.train.save_every, state.global_step, end_of_epoch) or stopping:
                    self.save("checkpoint")
                if stopping:
                    self.logger.close()
                    log.warning("stopped after step %d as train.stop_after_steps asks; resume with train.resume=auto",
                                state.global_step)
                    return {"stopped_at": state.global_step}
                if finished:
                    break
        if cfg.train.save_final_model:
            self.save("final")
        summary = self.summary()
        self.logger.write_metrics(summary)
        self.logger.close()
        return summary

    # --- validation, selection, saving -------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        """Validation loss, plus ROUGE-L (or the set's metric) of ``train.eval_generate`` generated responses."""
        was_training = self.student.training
        self.student.eval()
        metrics = steps.validation_loss(self.student, self.models, self.objective, self.val_set, self.collate, self.cfg,
                                        self.accelerator)
        if self.cfg.train.eval_generate:
            metrics.update(self.generation_metrics())
        self.student.train(was_training)
        self.state.evaluations.append({"step": self.state.global_step, **metrics})
        self.logger.log(metrics, self.state.global_step, advance=False)
        return metrics

    def generation_metrics(self) -> dict:
        """Every rank needs the numbers to agree on best/. Under multi-process ZeRO-3 every rank takes part in each
        forward: all generate the same prompts with the same seed (synced); otherwise rank 0 generates and broadcasts."""
        from accelerate.utils import broadcast_object_list

        from csd.evaluate import Generator, score

        cfg, synced = self.cfg, synced_generation(self.accelerator)
        scores = None
        if synced or self.accelerator.is_main_process:
            generator = Generator(self.accelerator.unwrap_model(self.student), self.models.tokenizer,
                                  batch_size=cfg.train.batch_size, precision=cfg.train.mixed_precision, synced_gpus=synced)
            # the release's training-time generation: the data set's sampling, no n-gram blocking
            decoding = {"no_repeat_ngram_size": 0, "max_prompt_length": cfg.train.max_prompt_length}
            result = score(generator, self.val_set.examples[: cfg.train.eval_generate], dict(cfg.data), [cfg.train.seed],
                           decoding)
            scores = {f"val/{k}": v for k, v in result["mean"].items()}
        return scores if synced else broadcast_object_list([scores], from_process=0)[0]

    def keep_if_best(self, metrics: dict) -> None:
        key = self.cfg.train.best_metric
        value = metrics.get(key)
        best = self.state.best_value
        if value is not None and (best is None or (value > best if higher_is_better(key) else value < best)):
            self.state.best_value = value
            self.save("best")

    def save(self, kind: str) -> None:
        """``checkpoint``: the full training state (checkpoints/step_*); ``best`` / ``final``: a loadable model."""
        if kind == "checkpoint":
            save_checkpoint(self.accelerator, self.output_dir, self.state, self.cfg.train.keep_checkpoints)
        else:
            save_model(self.accelerator, self.student, self.models.tokenizer, self.output_dir / kind, self.state.global_step)

    def state_dict(self) -> dict:
        """The loop's own state (weights, optimizer, schedule, RNG and batch sources are accelerate's)."""
        return dataclasses.asdict(self.state)

    def load_state_dict(self, checkpoint: str | Path) -> None:
        self.accelerator.load_state(str(checkpoint))
        self.state = TrainState(**json.loads((Path(checkpoint) / STATE_FILE).read_text()))
        log.info("resumed from %s at step %d", checkpoint, self.state.global_step)

    def summary(self) -> dict:
        cfg, state = self.cfg, self.state
        return {"experiment": cfg.experiment_name, "run": cfg.run_name, "loss": cfg.loss.name, "steps": state.global_step,
                "train": state.history[-1] if state.history else {},
                "val": state.evaluations[-1] if state.evaluations else {},
                "best": {cfg.train.best_metric: state.best_value}, "history": state.history,
                "evaluations": state.evaluations, "wall_s": time.time() - self.started}

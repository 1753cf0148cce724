"""Run logging: a progress bar with ETA, optional W&B, and the run's files (config.yaml, metrics.json, wandb_run.json).

W&B (logger=wandb): one W&B run per training run, named like its directory (cfg.run_name), grouped by experiment
(one group per paper table), tagged with the objective and its weighting, the resolved config as its config, the
optimizer step as its step. System metrics only with a GPU (logger.system_metrics). The id goes to
<run>/wandb_run.json: a resumed training continues that W&B run, and `python -m csd.evaluate` on the run's
checkpoint (<run>/best, <run>/final) writes its scores into it (log_evaluation). W&B never stops a run: when it is
missing or cannot start or log, one warning, and the run goes on without it.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Optional

from omegaconf import DictConfig, OmegaConf

from csd.checkpoint import write_text_atomic

log = logging.getLogger(__name__)
RUN_ID_FILE = "wandb_run.json"
_warned = False


class RunLogger:
    def __init__(self, cfg: DictConfig, output_dir: Path, total_steps: int, initial_step: int, is_main: bool):
        from tqdm.auto import tqdm

        self.is_main = is_main
        self.output_dir = output_dir
        self.wandb_run = None
        if is_main:
            (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            if cfg.logger.name == "wandb":
                self.wandb_run = start_training_run(cfg, output_dir, resuming=initial_step > 0)
        self.progress = tqdm(total=total_steps, initial=initial_step, desc=f"{cfg.experiment_name}/{cfg.run_name}",
                             disable=not is_main, dynamic_ncols=True)

    def log(self, metrics: dict, step: int, advance: bool = True) -> None:
        if not self.is_main:
            return
        if advance:
            self.progress.update(1)
            shown = {k.split("/")[-1]: f"{v:.4g}" for k, v in metrics.items() if k in ("train/kd", "train/ce", "train/lr")}
            self.progress.set_postfix(shown, refresh=False)
        else:
            self.progress.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        if self.wandb_run is not None:
            try:
                self.wandb_run.log(metrics, step=step)
            except Exception as error:  # noqa: BLE001 - W&B must not stop training
                warn_once(f"W&B logging failed ({type(error).__name__}: {error}); continuing without W&B")
                finish(self.wandb_run)
                self.wandb_run = None

    def write_metrics(self, summary: dict) -> None:
        if self.is_main:
            write_text_atomic(self.output_dir / "metrics.json", json.dumps(summary, indent=1) + "\n")

    def close(self) -> None:
        self.progress.close()
        if self.wandb_run is not None:
            finish(self.wandb_run)
            self.wandb_run = None


def warn_once(message: str) -> None:
    global _warned
    if not _warned:
        log.warning(message)
        _warned = True


def wandb_mode(configured: Optional[str]) -> str:
    """WANDB_MODE wins over the config; offline unless one of them says otherwise."""
    return os.environ.get("WANDB_MODE") or configured or "offline"


def wandb_dir(default: Path) -> str:
    """Where W&B writes its files: WANDB_DIR if set, else next to the run's own files (read here, at each run: W&B
    itself reads WANDB_DIR once per process)."""
    return os.environ.get("WANDB_DIR") or str(default)


def objective_tags(loss_cfg) -> list[str]:
    """The objective and its weighting (CSD's (a, b), DLD's weight and normalisation): the table's row labels."""
    tags = [str(loss_cfg.name)]
    for key in ("weighting", "weight", "normalize"):
        if loss_cfg.get(key) is not None:
            tags.append(f"{key}={loss_cfg.get(key)}")
    return tags


def run_tags(cfg: DictConfig) -> list[str]:
    extra = (cfg.logger.get("tags") or []) if "logger" in cfg else []
    return list(dict.fromkeys([*objective_tags(cfg.loss), *map(str, extra)]))


def start_wandb(system_metrics="auto", **init_kwargs):
    """``wandb.init(**init_kwargs)``, or None after one warning when W&B is missing or cannot start.

    system_metrics: auto (only with a GPU: on CPU the sampler costs time and shows nothing of interest), true, false."""
    try:
        import wandb

        if system_metrics == "auto":
            import torch

            system_metrics = torch.cuda.is_available()
        # finish_previous: a run left open (e.g. by an earlier failure in this process) is closed, never reused
        return wandb.init(settings=wandb.Settings(x_disable_stats=not system_metrics), reinit="finish_previous",
                          **init_kwargs)
    except Exception as error:  # noqa: BLE001 - ImportError, network, auth, bad settings: never fatal
        warn_once(f"W&B could not start ({type(error).__name__}: {error}); continuing without W&B")
        return None


def finish(run) -> None:
    try:
        run.finish()
    except Exception as error:  # noqa: BLE001
        warn_once(f"W&B could not finish the run ({type(error).__name__}: {error})")


def read_run_id(run_dir: Optional[Path]) -> Optional[dict]:
    path = Path(run_dir) / RUN_ID_FILE if run_dir else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def write_run_id(run_dir: Path, run, mode: str) -> None:
    record = {"id": run.id, "project": run.project, "entity": run.entity or None, "group": run.group or None,
              "name": run.name, "tags": list(run.tags or []), "mode": mode}
    (Path(run_dir) / RUN_ID_FILE).write_text(json.dumps(record, indent=1) + "\n")


def start_training_run(cfg: DictConfig, output_dir: Path, resuming: bool):
    """The training run's W&B run: the saved one when training resumes from a checkpoint, else a new one."""
    saved = read_run_id(output_dir) if resuming else None
    mode = wandb_mode(cfg.logger.mode)
    run = start_wandb(cfg.logger.get("system_metrics", "auto"), project=cfg.logger.project, entity=cfg.logger.entity,
                      group=cfg.logger.group, name=cfg.run_name, tags=run_tags(cfg), job_type="train", mode=mode,
                      dir=wandb_dir(output_dir), config=OmegaConf.to_container(cfg, resolve=True),
                      id=saved["id"] if saved else None, resume="allow" if saved else None)
    if run is not None:
        write_run_id(output_dir, run, mode)
    return run


def read_metrics(output_dir: Path) -> Optional[dict]:
    path = Path(output_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


# ----- evaluation results into the training run's W&B run (python -m csd.evaluate) -----

def training_run_dir(checkpoints: Iterable) -> Optional[Path]:
    """The training run directory a checkpoint lives in: the first of the checkpoint and the two folders above it
    (<run>/best, <run>/final, <run>/checkpoints/step_N) holding a training config.yaml (with run_name)."""
    for checkpoint in checkpoints:
        path = Path(str(checkpoint)) if checkpoint else None
        if path is None or not path.is_dir():
            continue
        for candidate in (path, path.parent, path.parent.parent):
            config = candidate / "config.yaml"
            if config.is_file() and {"run_name", "experiment_name", "loss"} <= set(OmegaConf.load(config)):
                return candidate
    return None


def evaluation_summary(report: dict) -> dict:
    """Flat W&B summary keys: eval/<set>/<metric> (mean over seeds), eval/<set>/<metric>_std, eval/<set>/seed<k>/<metric>."""
    summary = {"eval/checkpoint": str(report["model"].get("peft_path") or report["model"]["name_or_path"])}
    for name, result in report["results"].items():
        if "mean" not in result:  # MT-Bench / AlpacaEval: answer files for a judge
            summary[f"eval/{name}/answer_file"] = result["answer_file"]
            continue
        summary[f"eval/{name}/n_examples"] = result["n_examples"]
        summary.update({f"eval/{name}/{key}": value for key, value in result["mean"].items()})
        summary.update({f"eval/{name}/{key}_std": value for key, value in result["std"].items()})
        for seed, scores in result["per_seed"].items():
            summary.update({f"eval/{name}/seed{seed}/{key}": value for key, value in scores.items()})
    return summary


def sample_rows(answers_file: Path, limit: int) -> list[list]:
    rows = []
    for line in answers_file.read_text(encoding="utf-8").splitlines()[:limit]:
        answer = json.loads(line)
        rows.append([answer["index"], answer["prompt"], "\n".join(answer.get("references") or []), answer["text"]])
    return rows


def log_evaluation(cfg: DictConfig, report: dict, output_dir: Path) -> Optional[str]:
    """Write an evaluation report into W&B; returns the W&B run id, or None when nothing was logged.

    logger=auto logs only when the scored training run has a W&B run (its wandb_run.json), and resumes it;
    logger=wandb also without one: a linked run (job_type eval) in the training run's group, named and tagged like it,
    whose id is then saved in the run directory; or, for a checkpoint outside any training run, a run of its own."""
    choice = OmegaConf.select(cfg, "logger.name", default="none")
    if choice == "none":
        return None
    run_dir = Path(cfg.run_dir) if cfg.get("run_dir") else \
        training_run_dir([cfg.model.get("peft_path"), cfg.model.name_or_path])
    saved = read_run_id(run_dir)
    if saved is None and choice == "auto":
        return None
    settings = cfg.logger
    config = {"eval": OmegaConf.to_container(cfg, resolve=True)}
    if saved is not None:
        kwargs = dict(id=saved["id"], resume="allow", project=saved["project"], entity=saved.get("entity"),
                      group=saved.get("group"), name=saved.get("name"), tags=saved.get("tags"),
                      mode=wandb_mode(saved.get("mode")))
    elif run_dir is not None:
        train_cfg = OmegaConf.load(run_dir / "config.yaml")
        kwargs = dict(project=settings.project, entity=settings.entity, job_type="eval", name=train_cfg.run_name,
                      group=settings.group or train_cfg.experiment_name, tags=run_tags(train_cfg),
                      mode=wandb_mode(settings.mode))
        config.update(OmegaConf.to_container(train_cfg, resolve=True))
    else:
        kwargs = dict(project=settings.project, entity=settings.entity, group=settings.group, job_type="eval",
                      name=cfg.model.get("model_id") or Path(str(cfg.model.name_or_path).rstrip("/")).name,
                      tags=list(settings.tags), mode=wandb_mode(settings.mode))
    run = start_wandb(settings.get("system_metrics", "auto"), dir=wandb_dir(run_dir or output_dir), config=config,
                      **kwargs)
    if run is None:
        return None
    try:
        import wandb

        run.summary.update(evaluation_summary(report))
        for name, result in report["results"].items():  # sample answers of the first seed, one Table per set
            answers = output_dir / name / f"seed{(result.get('seeds') or [None])[0]}" / "answers.jsonl"
            if "mean" in result and answers.is_file():
                run.summary[f"eval/{name}/samples"] = wandb.Table(
                    columns=["index", "prompt", "reference", "answer"],
                    data=sample_rows(answers, cfg.get("wandb_samples", 50)))
        if saved is None and run_dir is not None:
            write_run_id(run_dir, run, kwargs["mode"])
    except Exception as error:  # noqa: BLE001
        warn_once(f"W&B could not record the evaluation ({type(error).__name__}: {error})")
    run_id = run.id
    finish(run)
    return run_id

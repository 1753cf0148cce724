"""Run logging: a progress bar with ETA, optional W&B, and the run's files (config.yaml, metrics.json)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf


class RunLogger:
    def __init__(self, cfg: DictConfig, output_dir: Path, total_steps: int, initial_step: int, is_main: bool):
        from tqdm.auto import tqdm

        self.is_main = is_main
        self.output_dir = output_dir
        self.wandb_run = None
        if is_main:
            (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            if cfg.logger.name == "wandb":
                self.wandb_run = _start_wandb(cfg, output_dir)
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
            self.wandb_run.log(metrics, step=step)

    def write_metrics(self, summary: dict) -> None:
        if self.is_main:
            (self.output_dir / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")

    def close(self) -> None:
        self.progress.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def _start_wandb(cfg: DictConfig, output_dir: Path):
    try:
        import wandb
    except ImportError as error:
        raise ImportError("logger=wandb needs W&B: pip install -e '.[wandb]' (or choose logger=none)") from error
    mode = os.environ.get("WANDB_MODE", cfg.logger.mode)
    return wandb.init(project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group,
                      tags=list(cfg.logger.tags), name=f"{cfg.experiment_name}/{cfg.run_name}", mode=mode,
                      dir=str(output_dir), config=OmegaConf.to_container(cfg, resolve=True))


def read_metrics(output_dir: Path) -> Optional[dict]:
    path = Path(output_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None

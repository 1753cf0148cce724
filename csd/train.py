"""Distil a teacher into a student (or fine-tune with loss=sft): ``python -m csd.train experiment=<preset> ...``.

The same command runs on one CPU and under ``accelerate launch -m csd.train`` on many processes (DDP or DeepSpeed,
configs/accelerate/). This file is the entry point only; the recipe is csd/distiller.py, one optimizer step's
arithmetic csd/step.py, processes and DeepSpeed csd/distributed.py, the config checks csd/config.py.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import hydra
from omegaconf import DictConfig

from csd.distiller import Distiller
from csd.models import Models


def run(cfg: DictConfig, models: Optional[Models] = None) -> dict:
    """Train as ``cfg`` says (``models``: already loaded ones, e.g. one teacher shared by several runs); returns the
    summary also written to ``<output_dir>/metrics.json`` ({"stopped_at": step} after train.stop_after_steps)."""
    return Distiller(cfg, models).setup().train()


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

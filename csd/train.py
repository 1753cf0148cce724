"""Distil a teacher into a student (or fine-tune with loss=sft): ``python -m csd.train experiment=<preset> ...``.

The same command runs on one CPU and under ``accelerate launch -m csd.train`` on many processes (DDP or DeepSpeed,
configs/accelerate/). This file is the entry point only; the recipe is csd/distiller.py, one optimizer step's
arithmetic csd/step.py, processes and DeepSpeed csd/distributed.py, the config checks csd/config.py.
"""
from __future__ import annotations

import math
from typing import Optional

import hydra
from omegaconf import DictConfig

from csd.distiller import Distiller
from csd.distributed import process_group_left_at_exit
from csd.inputs import check_overrides, check_training_inputs, one_line_errors
from csd.models import Models


def run(cfg: DictConfig, models: Optional[Models] = None) -> dict:
    """Train as ``cfg`` says (``models``: already loaded ones, e.g. one teacher shared by several runs); returns the
    summary also written to ``<output_dir>/metrics.json`` ({"stopped_at": step} after train.stop_after_steps)."""
    distiller = Distiller(cfg, models)  # checks the config
    check_training_inputs(cfg, check_models=models is None)  # data files and model paths, before any model loads
    return distiller.setup().train()


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> Optional[float]:
    # on every path the process group is left (one still alive at exit can abort the process); bad config or input:
    # one line, no traceback
    with process_group_left_at_exit(), one_line_errors("csd.train"):
        summary = run(cfg)
    value = summary.get("val", {}).get(cfg.train.best_metric)
    return None if value is None or math.isnan(value) else value


if __name__ == "__main__":
    check_overrides("csd.train", "config")  # a bad override in one line (Hydra's report takes several)
    main()

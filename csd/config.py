"""Hydra/OmegaConf plumbing shared by the entry points: resolvers, composing, validation with clear errors."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PATH_KEYS = ("name_or_path", "tokenizer", "peft_path", "gguf_file", "path")


def _is_path(key: str, value: str) -> bool:
    """A model/data location: its own bytes say nothing about the run, and they can be long and host-specific."""
    last = key.rsplit(".", 1)[-1]
    return last in PATH_KEYS or last.endswith(("_path", "_dir", "_file")) or "/" in value or "\\" in value


def run_name_from_overrides(objective: str, overrides: Iterable[str], exclude: Iterable[str] = ()) -> str:
    """``<objective>[,<key>=<value>...][,paths-<hash>]``: the same string names the directory and the W&B run.

    Kept: the command-line overrides that change the result, sorted, ``loss.`` dropped from the objective's own
    options (``csd,optim.lr=5e-4,temperature=1.5``). Left out: keys in ``exclude`` and everything under them
    (bookkeeping such as logger.*, output_root, train.resume; configs/config.yaml) and ``loss=`` (the objective
    leads the name). Path-valued overrides (model and data locations, hub ids) become one short hash of all of
    them, so runs that differ only in a path still get their own directory. Past 120 characters the name keeps its
    leading items and ends in ``more-<hash of the full name>``."""
    exclude = list(exclude)
    kept, paths = [], []
    for line in overrides:
        deleted = line.startswith("~")
        key, _, value = line.lstrip("+~").partition("=")
        if key in ("loss", "loss.name") or any(key == k or key.startswith(k + ".") for k in exclude):
            continue
        if _is_path(key, value):
            paths.append(f"{key}={value}")
        else:
            short = key.removeprefix("loss.")
            kept.append(f"~{short}" if deleted else f"{short}={value}")
    kept.sort()
    if paths:
        kept.append("paths-" + hashlib.sha1("\n".join(sorted(paths)).encode()).hexdigest()[:6])
    name = ",".join([objective, *kept]).replace("/", "-")
    if len(name) > 120:  # whole items up to 100 characters, then a hash of the full name: short and still unique
        name = f"{name[:100].rsplit(',', 1)[0]},more-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def _run_name(objective: str) -> str:
    """The run name of this Hydra job (see run_name_from_overrides); the objective alone outside a Hydra job."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return objective
    return run_name_from_overrides(objective, hydra_cfg.overrides.task, hydra_cfg.job.config.override_dirname.exclude_keys)


if not OmegaConf.has_resolver("csd.run_name"):
    OmegaConf.register_new_resolver("csd.run_name", _run_name)


def compose(overrides: Iterable[str] = (), config_name: str = "config") -> DictConfig:
    """The config ``python -m csd.train <overrides>`` would run with (for scripts and tests)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _choice(cfg: DictConfig, key: str, allowed: Iterable, optional: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    allowed = list(allowed)
    if value is None and optional:
        return
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def _positive(cfg: DictConfig, key: str, optional: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None and optional:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{key}={value!r} must be a positive number")


def _every(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in (None, "epoch") and not (isinstance(value, int) and value > 0):
        raise ValueError(f"{key}={value!r} must be 'epoch', a positive number of optimizer steps, or null")


# train.best_metric: what validation reports (csd/step.py validation_loss; with train.eval_generate also the scores
# of generated responses, csd.metrics.compute_metric of the data set's metric), and which way each one improves.
LOWER_IS_BETTER = ("val/loss", "val/ce", "val/kd")
HIGHER_IS_BETTER = ("val/rougeL", "val/rouge1", "val/rouge2", "val/rougeLsum", "val/exact_match", "val/bleu",
                    "val/accuracy", "val/accuracy_strict")
BEST_METRICS = LOWER_IS_BETTER + HIGHER_IS_BETTER


def higher_is_better(metric: str) -> bool:
    """Which way ``metric`` improves when best/ is chosen: validation losses down, scores of responses up."""
    if metric in LOWER_IS_BETTER:
        return False
    if metric in HIGHER_IS_BETTER:
        return True
    raise ValueError(f"train.best_metric={metric!r} is not allowed; choose one of: {', '.join(BEST_METRICS)}")


def validate(cfg: DictConfig) -> None:
    """Every check of a training config, before any model loads: a bad key or value, or keys that cannot go together
    (objective options, lengths, schedule, batch source and data, the launch), fails naming the key."""
    from csd.losses import LOSSES, loss_options

    _choice(cfg, "loss.name", sorted(LOSSES) + ["sft"])
    if cfg.loss.name != "sft":
        allowed = set(loss_options(cfg.loss.name)) | {"name", "reduction"}
        unknown = sorted(set(cfg.loss) - allowed)
        if unknown:
            raise ValueError(f"loss.{unknown[0]} is not an option of loss {cfg.loss.name!r}; allowed: {', '.join(sorted(allowed))}")
        from csd.losses import get_loss

        get_loss(cfg.loss.name, **loss_kwargs(cfg.loss))  # checks the option values (e.g. loss.weighting)
    for key in ("optim.lr", "train.batch_size", "train.grad_accum", "train.epochs", "train.max_length", "train.max_prompt_length"):
        _positive(cfg, key)
    _positive(cfg, "train.max_steps", optional=True)
    _choice(cfg, "loss.reduction", ["token", "sequence"], optional=True)
    _choice(cfg, "train.head", ["logits", "fused"])
    _choice(cfg, "optim.scheduler", ["constant", "linear", "cosine"])
    _choice(cfg, "train.mixed_precision", ["no", "bf16", "fp16"], optional=True)
    _choice(cfg, "logger.name", ["none", "wandb"])
    _every(cfg, "train.eval_every")
    _every(cfg, "train.save_every")
    if cfg.train.keep_checkpoints < 1:
        raise ValueError(f"train.keep_checkpoints={cfg.train.keep_checkpoints} must be at least 1")
    _choice(cfg, "train.best_metric", BEST_METRICS)
    if higher_is_better(cfg.train.best_metric) and not cfg.train.eval_generate:
        raise ValueError(f"train.best_metric={cfg.train.best_metric} comes from generated responses: set train.eval_generate "
                         "to the number of validation prompts to generate, or use train.best_metric=val/loss")
    if not 0.0 <= cfg.train.kd_ratio <= 1.0:
        raise ValueError(f"train.kd_ratio={cfg.train.kd_ratio} must lie in [0, 1]")
    if cfg.train.max_prompt_length >= cfg.train.max_length:
        raise ValueError(f"train.max_prompt_length={cfg.train.max_prompt_length} must be below train.max_length={cfg.train.max_length}")
    resume = cfg.train.resume
    if resume not in (None, "auto") and not Path(str(resume)).is_dir():
        raise ValueError(f"train.resume={resume!r} must be null, 'auto' or an existing checkpoint directory")
    _validate_batch_source(cfg)
    _validate_launch(cfg)


def _probability(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{key}={value!r} must be a probability in [0, 1]")


def _validate_batch_source(cfg: DictConfig) -> None:
    """batches (csd/batches): where micro-batches come from; the pretraining corpus (csd/data/pretraining.py)."""
    from csd.batches import BATCH_SOURCES

    name = cfg.batches.name
    _choice(cfg, "batches.name", BATCH_SOURCES)
    if name == "imitkd":
        _probability(cfg, "batches.mixed_alpha")
        if int(cfg.batches.buffer_capacity) < cfg.train.batch_size:
            raise ValueError(f"batches.buffer_capacity={cfg.batches.buffer_capacity} must hold at least one micro-batch "
                             f"(train.batch_size={cfg.train.batch_size})")
    if name == "gkd":
        _probability(cfg, "batches.student_ratio")
    if cfg.train.get("teacher_cache") is not None and name in ("imitkd", "gkd") and distillation_enabled(cfg):
        raise ValueError(f"train.teacher_cache holds the teacher on fixed sequences, but batches={name} generates new "
                         "ones every step; set train.teacher_cache=null")
    if name == "chat_pairs" and cfg.data.get("format") != "chat_pairs":
        raise ValueError(f"batches=chat_pairs needs teacher/student response pairs (data=chat_pairs), "
                         f"not data={cfg.data.get('name')!r} (format {cfg.data.get('format')!r})")
    if cfg.train.get("lm_data"):
        from csd.data import load_data_config

        load_data_config(cfg.train.lm_data)  # raises FileNotFoundError naming the missing config


def _validate_launch(cfg: DictConfig) -> None:
    """Settings the launch (accelerate's environment) cannot honour."""
    from csd.distributed import requested_zero_stage

    if requested_zero_stage() == 3 and cfg.model.student.get("keep_layers"):
        raise ValueError("model.student.keep_layers cuts a loaded model, but ZeRO-3 partitions models as they load; "
                         "cut it once in a single process (csd.models.load_model(student node).save_pretrained(dir)) "
                         "and point model.student.name_or_path at that directory")


def distillation_enabled(cfg: DictConfig) -> bool:
    return cfg.loss.name != "sft" and cfg.train.kd_ratio > 0


def loss_kwargs(loss_cfg: DictConfig) -> dict:
    return {k: v for k, v in OmegaConf.to_container(loss_cfg, resolve=True).items() if k not in ("name", "reduction")}


def resolved_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def maybe(value, default=None):
    return default if value is None else value


__all__ = ["CONFIG_DIR", "BEST_METRICS", "compose", "run_name_from_overrides", "group_options", "validate",
           "higher_is_better", "distillation_enabled", "loss_kwargs", "resolved_yaml", "maybe"]

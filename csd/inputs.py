"""Bad input answered in one line, before any model loads: the checks every entry point shares.

    check_overrides(prog, config_name)   a bad Hydra override (unknown key or option, syntax), composed up front
    check_training_inputs(cfg)           csd.train: data files (train, validation, train.lm_data), model paths
    check_evaluation_inputs(cfg)         csd.evaluate: eval set names and files, model paths
    one_line_errors(prog)                bad config or input -> "<prog>: error: <message>", exit status 1

A model location is checked only when it is a filesystem path (``looks_local``); anything else may be a hub id that
the HF cache or the hub serves when it loads. HYDRA_FULL_ERROR=1 (Hydra's switch) shows the traceback instead.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

MODEL_PATH_KEYS = ("name_or_path", "tokenizer", "peft_path", "lora_path")


class Busy(Exception):
    """Another process holds the lock on this run's folder (csd.sweep.point_lock): it is training that run now."""


# What bad config or input raises: our checks, a missing optional package, Hydra/OmegaConf composition, interpolation;
# and a sweep started twice on the same runs (Busy).
INPUT_ERRORS = (ValueError, FileNotFoundError, ImportError, HydraException, OmegaConfBaseException, Busy)


def one_line(error: BaseException) -> str:
    """The error's message on one line (Hydra's: the override it could not parse, no config search path)."""
    message = str(error).split("Config search path:")[0]  # after an unknown group option's list of options
    message = message.split("\n    full_key:")[0]  # OmegaConf's trailer: the key is named before it
    if isinstance(error, OverrideParseException):  # its message leaves out the override
        message = f"cannot parse the override {error.override!r}: {error.message}"
    return " ".join(message.split())


@contextlib.contextmanager
def one_line_errors(prog: str) -> Iterator[None]:
    """Bad config or input (INPUT_ERRORS) -> ``<prog>: error: <message>`` on one line of stderr and exit status 1, no
    traceback."""
    try:
        yield
    except INPUT_ERRORS as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise SystemExit(f"{prog}: error: {one_line(error)}") from None


def check_overrides(prog: str, config_name: str, argv: Optional[Sequence[str]] = None) -> None:
    """Compose the config of this command line as Hydra is about to: Hydra reports a bad override in several lines
    that end in a hint about HYDRA_FULL_ERROR; this answers in one line naming the key. Hydra's own flags (--help,
    --multirun sweeps, another config) and unknown ones are left to Hydra."""
    from hydra._internal.utils import get_args_parser

    from csd.config import compose

    args, unknown = get_args_parser().parse_known_args(sys.argv[1:] if argv is None else list(argv))
    hydra_flags = (args.multirun, args.help, args.hydra_help, args.info, args.shell_completion, args.config_path,
                   args.config_dir, args.config_name, args.experimental_rerun)
    if unknown or any(hydra_flags) or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    with one_line_errors(prog):
        compose(args.overrides, config_name)


def looks_local(location: str) -> bool:
    """A filesystem path rather than a hub id (``gpt2``, ``org/name``): absolute, ``./``, ``../``, ``~``, more than
    one ``/``, or ``dir/name`` where ``dir`` is a directory here."""
    if location.startswith(("./", "../", "~", ".\\", "..\\")) or location in (".", "..") or "\\" in location:
        return True
    head, slash, _ = location.partition("/")
    return Path(location).is_absolute() or location.count("/") > 1 or (bool(slash) and Path(head).is_dir())


def _required(node: Any, key: str, name: str) -> Any:
    if OmegaConf.is_missing(node, key):
        raise ValueError(f"{name} is required: set it on the command line ({name}=PATH_OR_HUB_ID)")
    return node.get(key)


def check_model_paths(node: DictConfig, prefix: str) -> None:
    """The local paths of a model node (csd/models.py keys) exist; ``prefix`` is its key (model.student)."""
    for key in MODEL_PATH_KEYS:
        if key not in node.keys():  # `in node` is also False for a missing (???) value
            continue
        value = _required(node, key, f"{prefix}.{key}")
        if isinstance(value, str) and looks_local(value) and not Path(value).expanduser().exists():
            raise FileNotFoundError(f"{prefix}.{key}={value}: no such file or directory")
    name, gguf = node.get("name_or_path"), node.get("gguf_file")
    if gguf and isinstance(name, str) and Path(name).expanduser().is_dir() and \
            not (Path(name).expanduser() / str(gguf)).exists():
        raise FileNotFoundError(f"{prefix}.gguf_file={gguf}: no such file in {prefix}.name_or_path={name}")


def check_data_files(data_cfg: Any, splits: Iterable[str], where: str) -> None:
    """Every split of a data config has its local file (or the hub serves it); ``where`` names the config."""
    from csd.data.sources import as_plain_dict, check_split

    cfg = as_plain_dict(data_cfg)
    for split in splits:
        try:
            check_split(cfg, split)
        except KeyError as error:  # no such split: a config error, not a missing file
            raise ValueError(f"{where}: {error.args[0]}") from None
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{where}: {one_line(error)}") from None


def check_training_inputs(cfg: DictConfig, check_models: bool = True) -> None:
    """csd.train's data files and (``check_models``: unless models were handed over) model paths, before loading."""
    from csd.config import distillation_enabled
    from csd.data import load_data_config

    check_data_files(cfg.data, ("train", "validation"), f"data.path={cfg.data.path}")
    if cfg.train.get("lm_data"):
        check_data_files(load_data_config(cfg.train.lm_data), ("train",), f"train.lm_data={cfg.train.lm_data}")
    if check_models:
        check_model_paths(cfg.model.student, "model.student")
        if distillation_enabled(cfg):
            check_model_paths(cfg.model.teacher, "model.teacher")


def check_evaluation_inputs(cfg: DictConfig) -> None:
    """csd.evaluate's eval sets (known names, their ``split`` files) and model paths, before loading."""
    from csd.data import load_data_config

    for name in cfg.eval_sets:
        check_data_files(load_data_config(name), (cfg.split,), f"eval set {name}")
    check_model_paths(cfg.model, "model")


__all__ = ["one_line_errors", "check_overrides", "looks_local", "check_model_paths", "check_data_files",
           "check_training_inputs", "check_evaluation_inputs"]

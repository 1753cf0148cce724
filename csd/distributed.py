"""Processes, devices and DeepSpeed: the accelerator, its DeepSpeed batch settings, ZeRO-3 gathering, the teacher's engine.

One trainer runs on one CPU, under DDP, and under DeepSpeed ZeRO-1/2/3 (optionally offloaded) — the launch file in
configs/accelerate/ decides which. What this module makes sure of:

- **No silent single process.** On a machine without GPUs `accelerate launch` starts N processes, but accelerate
  would make each of them believe it is alone (no GPU backend): we pick gloo (DeepSpeed) or CPU DDP instead, so the
  same launch files run N real processes on CPU. A DeepSpeed launch file run with ``ACCELERATE_USE_CPU=1`` (which
  would quietly turn it into plain DDP) is refused.
- **DeepSpeed's batch arithmetic set once, before ``prepare``**: micro-batch rows per process, accumulation steps and
  ``train_batch_size = rows × grad_accum × world`` (no dataloader is prepared, so nothing else could derive them).
- **ZeRO-3**: parameters are partitioned at load (transformers' ``zero.Init``), so sizes are read from
  ``ds_shape``; the frozen teacher gets its own inference engine; heads are gathered for the fused loss; every rank
  takes part in generation (``synced_gpus``).
"""
from __future__ import annotations

import contextlib
import os

import torch
from omegaconf import DictConfig


def deepspeed_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def launched_processes() -> int:
    """How many processes the launcher started (1 when not launched by torchrun/accelerate)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def has_gpu() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def rows_per_example(cfg: DictConfig) -> int:
    """Training rows one example becomes: a chat pair gives a teacher-response and a student-response row."""
    return 2 if cfg.batches.name == "chat_pairs" else 1


def micro_batch_rows(cfg: DictConfig) -> int:
    """Rows in one micro-batch of one process."""
    return cfg.train.batch_size * rows_per_example(cfg)


def deepspeed_batch_settings(rows_per_process: int, grad_accum: int, world_size: int) -> dict:
    """The three DeepSpeed batch keys; DeepSpeed asserts train_batch_size = micro × accumulation × world."""
    return {"train_micro_batch_size_per_gpu": int(rows_per_process), "gradient_accumulation_steps": int(grad_accum),
            "train_batch_size": int(rows_per_process) * int(grad_accum) * int(world_size)}


def offload_requested() -> bool:
    """Whether the launch file offloads the optimizer (DeepSpeed then loads its CPU Adam op)."""
    return os.environ.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none").lower() not in ("", "none")


def make_accelerator(cfg: DictConfig):
    """The Accelerator for this launch, with DeepSpeed's batch size, accumulation and clipping from ``cfg``."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    if deepspeed_requested():  # its compiled ops, loaded before DeepSpeed asks: never a silent wait on a dead build
        from csd.ops import load_needed_ops

        load_needed_ops(offload=offload_requested())
    kwargs = {"gradient_accumulation_steps": cfg.train.grad_accum}
    if cfg.train.mixed_precision is not None:
        kwargs["mixed_precision"] = cfg.train.mixed_precision
    several = launched_processes() > 1 and "LOCAL_RANK" in os.environ
    if several and deepspeed_requested() and os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true"):
        raise ValueError("this launch file asks for DeepSpeed, but ACCELERATE_USE_CPU=1 turns it into plain DDP; "
                         "unset ACCELERATE_USE_CPU (DeepSpeed runs on CPU processes through gloo by itself)")
    if several and not has_gpu():
        if deepspeed_requested():  # accelerate finds no GPU backend and would report one process per process
            kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
        else:  # DDP launch file on a CPU machine: gloo DDP, not N independent copies of one run
            kwargs["cpu"] = True
    if not several:
        # One process may train several runs (the quickstart, --tiny tables, tests): each gets a fresh accelerate
        # state, or a second run with another mixed precision would be refused.
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    accelerator = Accelerator(**kwargs)
    if several and accelerator.num_processes != launched_processes():
        raise RuntimeError(f"the launcher started {launched_processes()} processes but accelerate sees "
                           f"{accelerator.num_processes}: each would train alone")
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        # DeepSpeed clips inside its engine: the value comes from our config (0 = off).
        plugin.deepspeed_config["gradient_clipping"] = cfg.optim.clip_grad or 0.0
        plugin.deepspeed_config.update(deepspeed_batch_settings(micro_batch_rows(cfg), cfg.train.grad_accum,
                                                                accelerator.num_processes))
    return accelerator


def end_process_group(finished: bool) -> None:
    """Leave the process group, so none of its threads outlives the interpreter (which aborts the process at exit:
    "terminate called without an active exception", a finished job reported failed). After a finished run every
    rank waits for the others first; after an error it leaves at once (a barrier could wait on a rank that died)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()


@contextlib.contextmanager
def process_group_left_at_exit():
    """Around an entry point's work: end_process_group on every path, with the barrier only when the work finished."""
    finished = False
    try:
        yield
        finished = True
    finally:
        end_process_group(finished)


def requested_zero_stage() -> int:
    """The ZeRO stage the launch file asks for (0 without DeepSpeed), readable before the accelerator exists."""
    if not deepspeed_requested():
        return 0
    return int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0") or 0)


def zero_stage(accelerator) -> int:
    """0 without DeepSpeed, else the ZeRO stage (an object without accelerate state counts as no DeepSpeed)."""
    plugin = getattr(getattr(accelerator, "state", None), "deepspeed_plugin", None)
    return 0 if plugin is None else int(plugin.zero_stage)


def synced_generation(accelerator) -> bool:
    """ZeRO-3 gathers parameters in every forward as a collective: all ranks must keep generating until the
    last one is done (transformers' ``synced_gpus``)."""
    return zero_stage(accelerator) == 3 and accelerator.num_processes > 1


def full_shape(parameter: torch.Tensor) -> torch.Size:
    """The unpartitioned shape of a parameter (ZeRO-3 keeps a 0-element shard in ``.shape``)."""
    return getattr(parameter, "ds_shape", parameter.shape)


def gathered_under_zero3(accelerator, *parameters):
    """A context in which ZeRO-3-partitioned ``parameters`` are whole on every rank (no-op otherwise)."""
    if zero_stage(accelerator) != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(parameters), modifier_rank=None)


class _GatherInBackward(torch.autograd.Function):
    """Identity on ``value``; when its gradient arrives, gathers the ZeRO-3 ``parameters`` whole (their
    gradients are full-size) and partitions them again once the backward pass has finished."""

    @staticmethod
    def forward(ctx, value, parameters):
        ctx.parameters = parameters
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad):
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(list(ctx.parameters), modifier_rank=None)
        gathered.__enter__()
        torch.autograd.Variable._execution_engine.queue_callback(lambda: gathered.__exit__(None, None, None))
        return grad, None


def gathered_in_backward(accelerator, value: torch.Tensor, *parameters) -> torch.Tensor:
    """``value``, whose backward reaches ``parameters`` outside their modules (the fused loss uses the head
    weight directly): under ZeRO-3 they are gathered for that backward, as DeepSpeed's module hooks would."""
    if zero_stage(accelerator) != 3 or not value.requires_grad:
        return value
    return _GatherInBackward.apply(value, tuple(parameters))


def prepare_teacher(accelerator, teacher):
    """The frozen teacher on the device; under ZeRO-3 sharded by its own inference-only DeepSpeed engine."""
    if teacher is None:
        return None
    if zero_stage(accelerator) != 3:
        return teacher.to(accelerator.device)
    import deepspeed

    plugin = accelerator.state.deepspeed_plugin
    precision = accelerator.mixed_precision
    zero = {"stage": 3, "stage3_param_persistence_threshold": 0}
    offload = plugin.deepspeed_config.get("zero_optimization", {}).get("offload_param", {})
    if offload.get("device", "none") not in (None, "none"):
        zero["offload_param"] = {"device": offload["device"]}
    config = {"train_micro_batch_size_per_gpu": micro_batch_rows_of(plugin), "zero_optimization": zero,
              "bf16": {"enabled": precision == "bf16"}, "fp16": {"enabled": precision == "fp16"},
              "steps_per_print": 2**31}
    engine, *_ = deepspeed.initialize(model=teacher, config=config)
    engine.eval()
    return engine


def micro_batch_rows_of(plugin) -> int:
    return int(plugin.deepspeed_config.get("train_micro_batch_size_per_gpu", 1))


def unwrap_teacher(teacher):
    """The transformers module of the teacher (inside its DeepSpeed engine under ZeRO-3)."""
    return getattr(teacher, "module", teacher)

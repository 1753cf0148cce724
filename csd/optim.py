"""AdamW with decoupled decay on weight matrices only, and the three schedules of the paper's settings."""
from __future__ import annotations

import math

import torch
from torch import nn

from csd.distributed import full_shape


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Biases and norm weights (every parameter with fewer than 2 dimensions) get no weight decay.

    Dimensions are those of the full parameter: ZeRO-3 partitions at load and leaves a 1-D shard behind."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if len(full_shape(parameter)) >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def fused_available(parameters) -> bool:
    """torch's fused (single-kernel) AdamW runs on these parameters: floating point, on a device torch has the kernel
    for (CUDA, CPU, ...), and not under DeepSpeed, whose ZeRO optimizer wraps the step itself."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    from csd.distributed import deepspeed_requested

    devices = set(_get_fused_kernels_supported_devices())
    return not deepspeed_requested() and all(p.device.type in devices and p.is_floating_point() for p in parameters)


def build_optimizer(model: nn.Module, optim_cfg) -> torch.optim.Optimizer:
    """AdamW; fused where torch has the kernel (the same update as the per-tensor loop, tests/test_optim.py)."""
    groups = param_groups(model, optim_cfg.weight_decay)
    fused = fused_available([p for group in groups for p in group["params"]])
    return torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas), eps=optim_cfg.eps,
                             fused=fused or None)


def lr_factor(step: int, total_steps: int, warmup_steps: int, scheduler: str, min_ratio: float) -> float:
    """Multiplier of the peak learning rate after ``step`` optimizer steps.

    Linear warm-up over ``warmup_steps``, then constant, linear to 0, or cosine to ``min_ratio``
    (cosine: min + (1 − min)·½(1 + cos(π·progress)), i.e. CosineAnnealingLR with eta_min = min_lr).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if scheduler == "constant":
        return 1.0
    if scheduler == "linear":
        return 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, optim_cfg, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(round(optim_cfg.warmup_ratio * total_steps))
    min_ratio = optim_cfg.min_lr / optim_cfg.lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, optim_cfg.scheduler, min_ratio))

"""The learning rate each optimizer step actually uses (csd/optim.py's LambdaLR, stepped once per optimizer step
as csd/step.py does), against the schedules written out by hand, with the Table 4 presets' warm-up ratio 0.1:

    warm-up (W steps): step k (0-based) uses lr·(k + 1)/W  — the first step lr/W, step W − 1 the peak lr;
    then, with progress p = (k − W)/(T − W):  cosine  min_lr + (lr − min_lr)·½(1 + cos πp),  linear  lr·(1 − p),
    constant lr.  The last trained step (k = T − 1) is at p = (T − W − 1)/(T − W); the rate after it (p = 1) is
    exactly min_lr (cosine) or 0 (linear): CosineAnnealingLR's convention, as the release's MiniLLM/DistiLLM trainers.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

from csd.config import compose
from csd.optim import build_optimizer, build_scheduler, param_groups
from csd.train import run

TOTAL = 20
LR, MIN_LR = 5e-5, 5e-6


def table4_optim(scheduler: str):
    """The Table 4 preset's optim node (warm-up ratio 0.1) with a non-zero min_lr, so "ends at min_lr" is visible."""
    optim = compose(["experiment=table4_qwen", f"optim.scheduler={scheduler}", f"optim.min_lr={MIN_LR}"]).optim
    assert (optim.warmup_ratio, optim.lr) == (0.1, LR)
    return optim


def rates_of_each_step(optim_cfg, total: int) -> tuple[list[float], float]:
    """(the lr of the parameter groups when each of the ``total`` optimizer steps runs, the lr after the last)."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))  # two parameter groups (decay, no decay)
    optimizer = build_optimizer(model, optim_cfg)
    scheduler = build_scheduler(optimizer, optim_cfg, total)
    used = []
    for _ in range(total):
        rates = {group["lr"] for group in optimizer.param_groups}
        assert len(rates) == 1 and len(optimizer.param_groups) == 2
        used.append(rates.pop())
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return used, optimizer.param_groups[0]["lr"]


def by_hand(scheduler: str, k: int, total: int = TOTAL, warmup: int = 2, lr: float = LR, min_lr: float = MIN_LR) -> float:
    if k < warmup:
        return lr * (k + 1) / warmup
    progress = (k - warmup) / (total - warmup)
    if scheduler == "cosine":
        return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    if scheduler == "linear":
        return lr * (1 - progress)
    return lr


@pytest.mark.parametrize("scheduler", ["cosine", "linear", "constant"])
def test_each_step_uses_the_scheduled_rate(scheduler):
    used, after = rates_of_each_step(table4_optim(scheduler), TOTAL)
    assert used == pytest.approx([by_hand(scheduler, k) for k in range(TOTAL)], rel=1e-12, abs=1e-20)
    assert used[0] == pytest.approx(LR / 2, rel=1e-12)  # W = 0.1 · 20 = 2 warm-up steps: the first is lr/W
    assert used[1] == pytest.approx(LR, rel=1e-12) == used[2]  # the peak is reached at the last warm-up step
    last = {"cosine": MIN_LR + (LR - MIN_LR) * 0.5 * (1 + math.cos(math.pi * 17 / 18)), "linear": LR / 18, "constant": LR}
    assert used[-1] == pytest.approx(last[scheduler], rel=1e-12)
    assert after == pytest.approx({"cosine": MIN_LR, "linear": 0.0, "constant": LR}[scheduler], rel=1e-12, abs=1e-20)


def test_cosine_after_warm_up_is_cosine_annealing_over_the_remaining_steps():
    """A second definition: torch's CosineAnnealingLR(T_max = T − W, eta_min = min_lr) from the end of warm-up."""
    used, after = rates_of_each_step(table4_optim("cosine"), TOTAL)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=TOTAL - 2, eta_min=MIN_LR)
    expected = []
    for _ in range(TOTAL - 2 + 1):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        annealing.step()
    assert used[2:] + [after] == pytest.approx(expected, rel=1e-9)


def test_the_trainer_logs_the_scheduled_rate_of_each_step(train_config):
    """10 steps, warm-up ratio 0.2 (W = 2), cosine to min_lr: train/lr of every step is the hand-written rate."""
    summary = run(train_config(
        "train.max_steps=10", f"optim.lr={LR}", f"optim.min_lr={MIN_LR}", "optim.warmup_ratio=0.2", "optim.scheduler=cosine"))
    logged = [row["train/lr"] for row in summary["history"]]
    assert logged == pytest.approx([by_hand("cosine", k, total=10) for k in range(10)], rel=1e-9)


def test_adamw_takes_betas_eps_and_lr_from_the_config():
    """optim.betas / eps / lr reach torch's AdamW (betas left out would silently be torch's (0.9, 0.999))."""
    optim = compose(["optim.betas=[0.8,0.95]", "optim.eps=1e-6", "optim.lr=3e-4"]).optim
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    groups = build_optimizer(model, optim).param_groups
    assert [(g["betas"], g["eps"], g["lr"]) for g in groups] == [((0.8, 0.95), 1e-6, 3e-4)] * 2


def test_the_fused_adamw_makes_the_per_tensor_update():
    """build_optimizer picks torch's fused AdamW on CPU; 5 steps with weight decay on one group give the weights of the
    plain per-tensor loop (foreach=False, fused=False)."""
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
    reference, initial = copy.deepcopy(model), copy.deepcopy(model)
    cfg = OmegaConf.create({"weight_decay": 0.1, "lr": 1e-2, "betas": [0.9, 0.95], "eps": 1e-8})
    fused = build_optimizer(model, cfg)
    assert fused.defaults["fused"]
    plain = torch.optim.AdamW(param_groups(reference, 0.1), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    for step in range(5):
        inputs = torch.randn(4, 6, generator=torch.Generator().manual_seed(step))
        for net, optimizer in ((model, fused), (reference, plain)):
            optimizer.zero_grad()
            net(inputs).square().sum().backward()
            optimizer.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert min(float((a - b).detach().abs().max()) for a, b in zip(model.parameters(), initial.parameters())) > 1e-3

"""Every option of the `loss` config group reaches the objective the trainer uses in its steps.

For each configs/loss/<name>.yaml, every option is set on the command line to a value other than the file's,
one training step runs, and the objective handed to the trainer's micro-batch (csd.step.micro_batch_sums)
must carry each value. An option dropped anywhere between Hydra and the step fails here."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

import csd.step
import csd.train
from csd.config import CONFIG_DIR
from csd.losses import LOSSES, loss_options

# A value other than the shipped one for every option of every loss file (a new option must be added here).
CHANGED = {
    "temperature": 1.7, "weighting": "TM", "mix_alpha": 0.3, "weight": "T", "normalize": "std", "lam": 0.37,
    "alpha": 0.3, "beta": 0.6, "chunk_size": 7, "compile": True,
}
LOSS_FILES = sorted(p.stem for p in (CONFIG_DIR / "loss").glob("*.yaml") if p.stem != "sft")


def shipped(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / "loss" / f"{name}.yaml").read_text())


def test_every_loss_file_lists_exactly_its_objectives_options():
    assert sorted(LOSS_FILES) == sorted(LOSSES)
    for name in LOSS_FILES:
        options = set(shipped(name)) - {"name", "reduction"}
        assert options == set(loss_options(name)), name
        assert shipped(name)["name"] == name


@pytest.fixture(autouse=True)
def no_compilation(monkeypatch):
    """loss.compile=true must reach the objective; compiling it is not what these tests check (and takes seconds)."""
    import torch

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)


@pytest.fixture
def objectives_used(monkeypatch):
    """The objectives csd.train.micro_batch_sums received, in order."""
    seen, original = [], csd.step.micro_batch_sums

    def spy(student, models, objective, *args, **kwargs):
        seen.append(objective)
        return original(student, models, objective, *args, **kwargs)

    monkeypatch.setattr(csd.step, "micro_batch_sums", spy)
    return seen


@pytest.mark.parametrize("name", LOSS_FILES)
def test_every_option_reaches_the_objective(train_config, objectives_used, name):
    options = {k: v for k, v in shipped(name).items() if k not in ("name", "reduction")}
    overrides = []
    for key, value in options.items():
        assert CHANGED[key] != value, f"pick another test value for loss.{key}"
        overrides.append(f"loss.{key}={CHANGED[key]}")
    csd.train.run(train_config(f"loss={name}", *overrides, "train.max_steps=1"))
    objective = objectives_used[0]
    assert type(objective) is LOSSES[name]
    used = dataclasses.asdict(objective)
    assert {key: used[key] for key in options} == {key: CHANGED[key] for key in options}


@pytest.mark.parametrize("name", ["csd", "dld"])
def test_shipped_values_reach_the_objective(train_config, objectives_used, name):
    """Without overrides the file's values (not the dataclass defaults, e.g. DLD's normalize) are used."""
    csd.train.run(train_config(f"loss={name}", "train.max_steps=1"))
    used = dataclasses.asdict(objectives_used[0])
    assert {k: used[k] for k in used} == {k: v for k, v in shipped(name).items() if k not in ("name", "reduction")}


def test_fused_option_selects_the_fused_head(train_config, monkeypatch):
    calls = []
    original = csd.step.fused_linear_loss_with

    def spy(objective, *args, **kwargs):
        calls.append(objective)
        return original(objective, *args, **kwargs)

    monkeypatch.setattr(csd.step, "fused_linear_loss_with", spy)
    csd.train.run(train_config("loss=csd", "loss.weighting=US", "train.max_steps=1"))
    assert calls == []
    csd.train.run(train_config("loss=csd", "loss.weighting=US", "train.head=fused", "train.max_steps=1"))
    assert len(calls) == 1 and calls[0].weighting == "US"

"""Batch sources: the references, student samples (ImitKD with a replay buffer, GKD-style mixing), chat response pairs.

A batch source is called once per micro-batch as ``source(indices, student)`` with this process's example
indices and returns a right-padded ``{input_ids, attention_mask, labels}`` (labels −100 on prompt, padding
and anything after a sampled EOS). ``references`` is the trainer's `ReferenceBatches` (the data set's
responses); its ``train_set`` and ``collate`` are reused here.

Coins (ImitKD's "sample a new batch?", GKD's "student or reference?") come from a `random.Random(train.seed)`
per source, the same on every process, so all processes take the same branch at the same micro-batch.
"""
from __future__ import annotations

import random

import torch

from csd.batches.buffer import ReplayBuffer
from csd.batches.sampling import StudentSampler


def gather_per_process(local_state) -> list:
    """[state of process 0, 1, ...] on every process.

    accelerate writes registered custom states from the main process only; each process's buffer holds
    its own samples, so all of them are gathered into the one file."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        states = [None] * dist.get_world_size()
        dist.all_gather_object(states, local_state)
        return states
    return [local_state]


def pick_own_state(states: list, process: int):
    if len(states) <= process:
        raise ValueError(f"the checkpoint holds on-policy state for {len(states)} process(es); resume with the same number")
    return states[process]


class ReferenceBatches:
    """Off-policy distillation: micro-batches of the data set's reference responses.

    A batch source maps this process's example indices of one micro-batch to a right-padded training batch
    ``{input_ids, attention_mask, labels}``; on-policy sources (student samples, replay buffer) plug in here."""

    def __init__(self, train_set, collate):
        self.train_set, self.collate = train_set, collate

    def __call__(self, indices: torch.Tensor, student) -> dict:
        return self.collate([self.train_set[int(i)] for i in indices])


class StudentBatches:
    """Micro-batches of the student's own responses with probability ``probability``, else the references; the
    coin is the same on every process. Two settings of one idea:

    - ImitKD (``batches=imitkd``; DistiLLM's finetune loop, Table 2: ``--student-gen --mixed-alpha 1.0``): with a
      replay ``buffer``, new samples are added to it and the trained rows are ``len(indices)`` rows drawn from it
      (the new ones included).
    - GKD-style mixing (``batches=gkd``, Agarwal et al. 2024): no buffer, the samples themselves are trained on;
      λ = 0 is off-policy distillation, λ = 1 purely on-policy."""

    def __init__(self, references, sampler: StudentSampler, probability: float, seed: int,
                 buffer: ReplayBuffer | None = None, process: int = 0):
        self.references, self.sampler, self.buffer = references, sampler, buffer
        self.probability, self.process = float(probability), process
        self.coin = random.Random(seed)

    def __call__(self, indices: torch.Tensor, student) -> dict:
        if self.coin.random() >= self.probability:
            return self.references(indices, student)
        rows = self.sampler(indices, student)
        if self.buffer is None:
            return self.references.collate(rows)
        self.buffer.add(rows)
        return self.references.collate(self.buffer.sample(len(indices)))

    def state_dict(self) -> dict:
        state = {"coin": self.coin.getstate(), "sampler_calls": self.sampler.calls}
        if self.buffer is not None:
            state["buffers"] = gather_per_process(self.buffer.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        self.coin.setstate(state["coin"])
        self.sampler.calls = state["sampler_calls"]
        if self.buffer is not None:
            self.buffer.load_state_dict(pick_own_state(state["buffers"], self.process))


class ChatPairBatches:
    """General-chat distillation (Table 4): each prompt contributes two rows, [prompt; teacher response] and
    [prompt; student response] (both pre-generated, scripts/generate_responses.py), so a micro-batch of B
    prompts has 2B rows and the objective is applied to both responses 1:1.

    Weighting: with ``loss.reduction=sequence`` (the Table 4 presets) the step loss is the authors' CSDTrainer's,
        L = mean_prompts [ mean_t∈teacher response ℓ + mean_t∈student response ℓ ],
    each response's token mean with the two halves summed (one example = one pair); with ``token`` it is one token
    mean over all rows of the step."""

    def __init__(self, references, student_set):
        teacher_set = references.train_set
        if len(student_set) != len(teacher_set) or any(
                t["prompt"] != s["prompt"] for t, s in zip(teacher_set.examples, student_set.examples)):
            raise ValueError("teacher and student responses of the chat pairs do not line up prompt by prompt")
        self.references, self.student_set = references, student_set

    def __call__(self, indices: torch.Tensor, student) -> dict:
        teacher_rows = [self.references.train_set[int(i)] for i in indices]
        student_rows = [self.student_set[int(i)] for i in indices]
        return self.references.collate(teacher_rows + student_rows)

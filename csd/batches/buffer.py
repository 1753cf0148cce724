"""The replay buffer of ImitKD (DistiLLM's `ReplayBuffer`): the last `capacity` student samples, drawn at random.

    buffer = ReplayBuffer(capacity=1000, seed=10)
    buffer.add(rows)                 # rows: [{"input_ids": [...], "labels": [...]}, ...] (CPU, unpadded)
    batch_rows = buffer.sample(8)    # 8 distinct stored rows, uniformly without replacement

Rows are kept per sample as plain int lists (no padding, no device memory); the oldest rows fall out first
once the buffer is full (a deque with maxlen). Sampling uses the buffer's own `random.Random`, so it neither
reads nor shifts the training RNG, and `state_dict`/`load_state_dict` restore contents and RNG exactly.
"""
from __future__ import annotations

import random
from collections import deque
from typing import Iterable


class ReplayBuffer:
    def __init__(self, capacity: int, seed: int):
        if capacity < 1:
            raise ValueError(f"replay buffer capacity must be at least 1, got {capacity}")
        self.capacity = int(capacity)
        self.rows: deque = deque(maxlen=self.capacity)
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.rows.append({"input_ids": list(row["input_ids"]), "labels": list(row["labels"])})

    def sample(self, count: int) -> list[dict]:
        """`count` distinct rows (all of them, in random order, when fewer are stored)."""
        if not self.rows:
            raise RuntimeError("sampling from an empty replay buffer")
        picked = self.rng.sample(range(len(self.rows)), min(count, len(self.rows)))
        return [self.rows[i] for i in picked]

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "rows": list(self.rows), "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"checkpointed replay buffer has capacity {state['capacity']}, this run {self.capacity}")
        self.rows = deque(state["rows"], maxlen=self.capacity)
        self.rng.setstate(state["rng"])

"""Many short distillation runs of one teacher-student pair in one process: the CPU mini Table 1 and frontier.

A point is one training run: a row (an objective, or a variant of one), its Hydra overrides, a learning rate and a
seed. A Sweep loads the teacher once and cuts the student from it once (experiment=quickstart: SmolLM2-135M-Instruct
and its 8-layer cut); for a point it trains a copy of the student with csd.train's recipe (the sweep's overrides, then
the point's, ``optim.lr``, ``train.seed`` = the seed, so every row sees the same batches for a seed), then scores it on
each split (validation, test): one response per prompt sampled with the point's seed, ROUGE-L against the teacher's
references, diversity (csd.metrics.diversity: distinct-1/2, self-BLEU, mean words) and the student's per-token NLL of
the references (``nll``). The teacher and the untrained student are scored the same way (rows ``teacher``,
``student_init``).

Each finished point is written to <output_root>/<experiment>/<name>/point.json with a fingerprint of the settings that
decide its numbers (the resolved training config without the logger; for the untrained rows the pair, the data config,
the lengths and the precision; the decoding; the split names). The data files' contents, the torch thread count and the
code are not in it.
Running the same command again reads finished points back and trains only the missing ones, so an interrupted sweep
resumes where it stopped; a point whose settings changed has a new fingerprint and is run again. The fingerprint
covers settings, not code: after changing the code, run with ``resume=False`` (scripts: --no-resume) or delete the
folder.

The teacher is run once, not once per point: off-policy points train from the teacher cache (train.teacher_cache=auto,
compose_reading_cache's default; csd/teacher_cache.py), built by the first point from the teacher in memory and read
by the others (same teacher, data, lengths, precision and head); each trainer then holds the teacher's head only. An
override train.teacher_cache=null runs the live teacher; the point fingerprint leaves the setting out (the same numbers).

Learning rates are chosen on the validation split only (``select_lr``): each candidate is trained with the first seed
and the one with the highest validation ROUGE-L wins; the test split never enters the choice. A choice at an edge of
the grid is not trusted (the best rate may lie beyond it): the grid grows one step past that edge and the choice is
made again, at most EDGE_EXTENSIONS times (``choose_lr``; the record says where the choice ended and why).
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch
from omegaconf import OmegaConf

from csd.config import compose, validate
from csd.data import load_examples
from csd.data.encoding import TrainCollator, build_dataset, pad_token_id_of
from csd.evaluate import Generator, score, write_answers
from csd.generation import autocast, eval_mode
from csd.inputs import Busy, check_data_files, check_training_inputs
from csd.metrics import diversity
from csd.models import Models
from csd.step import lm_cross_entropy_sum, target_mask
from csd.teacher_cache import compose_reading_cache

SPLITS = ("validation", "test")
REFERENCE_ROWS = ("teacher", "student_init")
METRICS = ("rougeL", "distinct_1", "distinct_2", "self_bleu", "mean_words", "nll")
# A learning rate chosen at an edge of its grid is tried one grid step further out, at most this many times per edge.
EDGE_EXTENSIONS = 2


@dataclass(frozen=True)
class Point:
    """One training run (``lr`` None: a reference model, ``teacher`` or ``student_init``, scored untrained)."""

    row: str
    seed: int
    overrides: tuple[str, ...] = ()
    lr: Optional[float] = None

    @property
    def name(self) -> str:
        return f"{self.row}_seed{self.seed}" if self.lr is None else f"{self.row}_lr{self.lr:g}_seed{self.seed}"


@dataclass
class PairModels:
    """The teacher, the untrained student every point copies, and their tokenizer."""

    teacher: torch.nn.Module
    student_init: torch.nn.Module
    tokenizer: object


def load_pair(base) -> PairModels:
    """The sweep's teacher and the student cut from it (model.student.keep_layers of model.teacher), as training
    loads them."""
    from csd.models import load_teacher_and_student, load_tokenizer

    teacher, student = load_teacher_and_student(base.model.teacher, base.model.student)
    return PairModels(teacher, student, load_tokenizer(base.model.teacher))


def reference_nll(model, tokenizer, dataset, precision: Optional[str], batch_size: int = 16) -> float:
    """Mean per-token negative log-likelihood (nats) the model gives the dataset's response tokens."""
    collate = TrainCollator(pad_token_id_of(tokenizer))
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad(), eval_mode(model), autocast(precision, device):
        for start in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            batch = {key: value.to(device) for key, value in batch.items()}
            total += lm_cross_entropy_sum(model, batch).item()
            count += int(target_mask(batch).sum())
    return total / max(count, 1)


def summarise(values: Sequence[float]) -> dict:
    """mean, sample std (ddof 1; 0 for one value) and n."""
    values = list(values)
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


class Sweep:
    """Runs and caches points; see the module docstring.

    ``overrides``: Hydra overrides on top of experiment=quickstart for every point (e.g. train.max_steps=48);
    ``no_repeat_ngram_size``: None = the data config's (6, the release's evaluation), 0 for plain sampling;
    ``models``: a PairModels to use instead of loading the quickstart pair (tests);
    ``resume``: False trains and scores every point again (and overwrites its record)."""

    def __init__(self, overrides: Sequence[str] = (), *, experiment: str = "cpu_sweep", splits=SPLITS,
                 no_repeat_ngram_size: Optional[int] = None, models: Optional[PairModels] = None,
                 resume: bool = True, log: Callable[[str], None] = print):
        self.common = ["experiment=quickstart", f"experiment_name={experiment}", *overrides]
        self.base = self.compose(self.common)
        validate(self.base)  # the config, its data files and model paths, before the teacher loads
        check_training_inputs(self.base, check_models=models is None)
        check_data_files(self.base.data, splits, f"data.path={self.base.data.path}")
        self.root = Path(self.base.output_root) / experiment
        self.splits = tuple(splits)
        data = self.base.data
        ngram = data.no_repeat_ngram_size if no_repeat_ngram_size is None else no_repeat_ngram_size
        self.decoding = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                         "no_repeat_ngram_size": int(ngram), "max_new_tokens": int(data.max_new_tokens),
                         "max_prompt_length": int(self.base.train.max_prompt_length)}
        self.precision = self.base.train.mixed_precision
        self._models, self._data, self.log, self.resume = models, None, log, resume
        self.started, self.trained = time.time(), 0

    # ------------------------------------------------------------------ models and data, loaded on first need
    @property
    def models(self) -> PairModels:
        if self._models is None:
            self._models = load_pair(self.base)
        return self._models

    @property
    def tokenizer(self):
        """The pair's tokenizer, alone while the models are not loaded (a plan, a dry run)."""
        if self._models is not None:
            return self._models.tokenizer
        from csd.models import load_tokenizer

        return load_tokenizer(self.base.model.teacher)

    @property
    def data(self) -> dict:
        """{split: (examples, encoded dataset)}."""
        if self._data is None:
            tokenizer, train = self.models.tokenizer, self.base.train
            self._data = {split: (load_examples(self.base.data, split, tokenizer),
                                  build_dataset(self.base.data, split, tokenizer, train.max_length,
                                                train.max_prompt_length)) for split in self.splits}
        return self._data

    # ------------------------------------------------------------------ points
    def config(self, point: Point):
        extra = [] if point.lr is None else [f"optim.lr={point.lr}"]
        return self.compose([*self.common, *point.overrides, *extra, f"train.seed={point.seed}",
                              f"run_name={point.name}"])

    @staticmethod
    def compose(overrides: Sequence[str]):
        """The overrides' config, reading the teacher from its cache (train.teacher_cache=auto) unless they say
        otherwise."""
        return compose_reading_cache(list(overrides))[1]

    def fingerprint(self, point: Point) -> str:
        cfg = OmegaConf.to_container(self.config(point), resolve=True)
        if point.lr is None:  # an untrained model: only the pair, the data, the lengths (NLL) and the decoding matter
            train = cfg["train"]
            cfg = {"model": cfg["model"], "data": cfg["data"], "precision": train["mixed_precision"],
                   "lengths": [train["max_length"], train["max_prompt_length"]]}
        for key in ("logger", "run_name", "output_dir", "experiment_name"):
            cfg.pop(key, None)
        cfg.get("train", {}).pop("teacher_cache", None)  # the same numbers with the live teacher or its cache
        if cfg.get("train", {}).get("stop_after_steps") is not None:  # an interruption, not a setting: resume ends it
            cfg["train"]["stop_after_steps"] = None
        payload = {"config": cfg, "decoding": self.decoding, "splits": self.splits, "row": point.row,
                   "seed": point.seed, "lr": point.lr}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def path(self, point: Point) -> Path:
        return self.root / point.name / "point.json"

    def cached(self, point: Point) -> Optional[dict]:
        path = self.path(point)
        if not self.resume or not path.exists():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # unreadable (a disk that filled up): run the point again
            return None
        return record if record.get("fingerprint") == self.fingerprint(point) else None

    def run(self, point: Point) -> Optional[dict]:
        """The point's record (read back when finished before with the same settings, else trained and scored). Two
        processes of the same sweep share its points: the one that takes a point's lock trains it, the other gets
        ``Busy`` and can go on to another point."""
        if (record := self.cached(point)) is not None:
            self.log(f"read back {point.name} ({self.path(point)})")
            return record
        with point_lock(self.root / point.name):
            if (record := self.cached(point)) is not None:  # finished by another process since the first look
                return record
            return self.train_and_score(point)

    def train_and_score(self, point: Point) -> Optional[dict]:
        """Train ``point`` and score it (the caller holds its lock)."""
        from csd.train import run

        tick = time.time()
        record = {"row": point.row, "seed": point.seed, "lr": point.lr, "overrides": list(point.overrides)}
        if point.row == "teacher":
            model = self.models.teacher
        elif point.row == "student_init":
            model = self.models.student_init
        else:
            model = copy.deepcopy(self.models.student_init)
            summary = run(self.config(point), Models(student=model, tokenizer=self.models.tokenizer,
                                                     teacher=self.models.teacher, vocab=len(self.models.tokenizer)))
            record.update(steps=summary["steps"], train_s=round(summary["wall_s"], 1))
            model.eval()
        record.update(splits={}, examples={}, n={})
        for split in self.splits:
            record["splits"][split], predictions = self.evaluate(model, split, point.seed)
            record["examples"][split], record["n"][split] = predictions[0], len(predictions)
            write_answers(self.root / point.name / split / "answers.jsonl", self.data[split][0], predictions)
        record.update(wall_s=round(time.time() - tick, 1), fingerprint=self.fingerprint(point))
        self.write(point, record)
        test = record["splits"].get("test") or next(iter(record["splits"].values()))
        self.log(f"[{time.time() - self.started:6.0f} s] {point.name:24s} ROUGE-L {test['rougeL']:6.2f}  "
                 f"distinct-2 {100 * test['distinct_2']:5.1f}  self-BLEU {test['self_bleu']:5.1f}  "
                 f"NLL {test['nll']:.3f}  ({record['wall_s']:.0f} s)")
        return record

    def write(self, point: Point, record: dict) -> None:
        path = self.path(point)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        os.replace(partial, path)  # a point.json is whole or absent
        self.trained += 1

    def evaluate(self, model, split: str, seed: int) -> tuple[dict, list[str]]:
        """Scores of one sampled response per prompt of ``split`` (seed ``seed``) + the responses."""
        examples, dataset = self.data[split]
        generator = Generator(model, self.models.tokenizer, batch_size=16, precision=self.precision)
        result = score(generator, examples, OmegaConf.to_container(self.base.data, resolve=True), [seed],
                       self.decoding, extra_metrics=diversity)
        scores = dict(result["per_seed"][str(seed)])
        scores["nll"] = reference_nll(model, self.models.tokenizer, dataset, self.precision)
        return scores, result["predictions"][str(seed)]

    # ------------------------------------------------------------------ learning rate on the validation split
    def select_lr(self, row: str, overrides: Sequence[str], grid: Sequence[float], seed: int,
                  metric: str = "rougeL", extensions: int = EDGE_EXTENSIONS) -> dict:
        """Train ``row`` at every lr of ``grid`` with ``seed`` (and beyond an edge where the choice lands there,
        ``choose_lr``); the lr with the best validation ``metric`` wins. Returns choose_lr's record plus "metric",
        "seed" and "records" (every run tried)."""
        if "validation" not in self.splits:
            raise ValueError("select_lr needs the validation split among the sweep's splits")
        records = []

        def validation_score(lr: float) -> float:
            records.append(self.run(Point(row, seed, tuple(overrides), lr)))
            return records[-1]["splits"]["validation"][metric]
        return {**choose_lr(grid, validation_score, extensions), "metric": metric, "seed": seed, "records": records}

    def settings(self) -> dict:
        train = self.base.train
        return {"steps": int(train.max_steps), "batch_size": int(train.batch_size), "precision": self.precision,
                "decoding": self.decoding, "splits": list(self.splits), "overrides": self.common,
                "teacher_cache": self.base.train.teacher_cache,
                "threads": torch.get_num_threads()}


@contextlib.contextmanager
def point_lock(folder: Path) -> Iterator[None]:
    """Held while this process trains the point in ``folder``: an exclusive flock on ``folder/lock``. The kernel
    releases it when the process ends, however it ends, so a killed run leaves no stale lock. Raises ``Busy`` at once
    (no waiting) when another process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"{folder} is being trained by another process; wait for it to finish or stop it (its lock "
                       "frees when it ends)") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def beyond_edge(grid: Sequence[float], edge: str, k: int) -> float:
    """The k-th value past the ``edge`` ("lower" or "upper") of a sorted ``grid`` of two or more rates: the grid's
    geometric step r = (max/min)^(1/(n-1)) taken k times from the edge, rounded to one significant figure (so
    {1e-4, 3e-4, 1e-3} goes on to 3e-5, 1e-5 below and 3e-3, 1e-2 above); unrounded where rounding would not pass
    the edge."""
    low, high = grid[0], grid[-1]
    step = (high / low) ** (1 / (len(grid) - 1))
    exact = low / step ** k if edge == "lower" else high * step ** k
    rounded = float(f"{exact:.0e}")
    return rounded if (rounded < low if edge == "lower" else rounded > high) else exact


def choose_lr(grid: Sequence[float], validation_score: Callable[[float], float],
              extensions: int = EDGE_EXTENSIONS) -> dict:
    """The rate with the highest ``validation_score`` (ties: the smaller rate). While it is the lowest (highest) rate
    tried, the next value below (above) the grid (``beyond_edge``) is scored and the choice made again, up to
    ``extensions`` values past that edge. Each rate is scored once.

    Returns {"chosen", "grid" (sorted), "tried" (sorted), "validation" {"<lr>": score}, "extended" (values added, in
    order), "edge" (None: inside the rates tried; "lower" / "upper": still at that edge; "only": a one-value grid),
    "reason"}."""
    grid = sorted({float(lr) for lr in grid})
    if not grid:
        raise ValueError("choose_lr needs at least one learning rate")
    scores = {lr: validation_score(lr) for lr in grid}
    extended: list[float] = []
    while True:
        tried = sorted(scores)
        chosen = max(tried, key=lambda lr: scores[lr])  # max keeps the first of equals: the smaller rate
        if len(tried) == 1:
            edge, reason = "only", "a one-value grid has no step to extend by"
            break
        edge = "lower" if chosen == tried[0] else "upper" if chosen == tried[-1] else None
        if edge is None:
            reason = "inside the grid" + (f" extended by {', '.join(f'{lr:g}' for lr in extended)}" if extended else "")
            break
        past_edge = sum(lr < grid[0] if edge == "lower" else lr > grid[-1] for lr in extended)
        if past_edge >= extensions:
            reason = (f"at the {edge} edge after {past_edge} extension(s) past it (the limit): the best rate may lie "
                      f"{'below' if edge == 'lower' else 'above'} {chosen:g}")
            break
        extended.append(beyond_edge(grid, edge, past_edge + 1))
        scores[extended[-1]] = validation_score(extended[-1])
    return {"chosen": chosen, "grid": grid, "tried": sorted(scores), "validation": {f"{lr:g}": scores[lr] for lr in
            sorted(scores)}, "extended": extended, "edge": edge, "reason": reason}


def aggregate(records: Sequence[dict], split: str = "test", metrics: Sequence[str] = METRICS) -> dict[str, dict]:
    """{row: {metric: {mean, std, n}, "seeds": [...], "lr": ...}} over the records' seeds, rows in first-seen order."""
    rows: dict[str, list[dict]] = {}
    for record in records:
        rows.setdefault(record["row"], []).append(record)
    return {row: {**{m: summarise([r["splits"][split][m] for r in rs]) for m in metrics},
                  "seeds": [r["seed"] for r in rs], "lr": rs[0].get("lr")} for row, rs in rows.items()}


def pareto_set(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points no other point dominates (both coordinates higher is better; dominating = at least as
    good in both and better in one)."""
    def dominated(a: tuple[float, float]) -> bool:
        return any(b[0] >= a[0] and b[1] >= a[1] and b != a for b in points.values())
    return [name for name, xy in points.items() if not dominated(xy)]

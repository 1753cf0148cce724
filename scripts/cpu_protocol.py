"""The paper's training protocol at CPU scale: 20 epochs, validation ROUGE-L after every epoch, the best checkpoint.

    HF_HUB_OFFLINE=1 python scripts/cpu_protocol.py [--seeds 10 20] [--objectives sft fkl srkl csd csd_mix csd_TS]
        [--epochs 20] [--threads N] [--out docs/results] [--dry-run [--s-per-step S --s-per-eval S]] [--report-only]
        [--no-probes] [--tiny] [hydra overrides]

The quickstart pair (experiment=quickstart: SmolLM2-135M-Instruct -> its 8-layer cut, bf16) trained as the release
trains (`--epochs 20 --do-valid --eval-gen`): 20 epochs of the 400 training instructions (50 steps of 8 per epoch, 1,000
steps, the cosine schedule over all of them); after every epoch, ROUGE-L of responses generated for the 48 validation
prompts (train.eval_every=epoch, train.eval_generate=48: the release's training-time sampling, no n-gram blocking)
and best/ kept at the best one (train.best_metric=val/rougeL). Then the 64 test prompts are scored at the best and at
the last checkpoint as the sweep scores them (csd/sweep.py: one response per prompt sampled with the run's seed at
temperature 1, no_repeat_ngram_size 6; ROUGE-L, distinct-n, self-BLEU, words, the NLL of the teacher's references).

Objectives: SFT, FKL, SRKL, CSD (S,S) and CSD's weightings mix and (T,S) (scripts/cpu_frontier.py), seeds 10 and 20.
Learning rates come from the short-budget search of scripts/mini_table1.py (96 steps x 8, seed 10, validation
ROUGE-L over {1e-4, 3e-4, 1e-3}, extended past an edge by csd.sweep.choose_lr): validation scores already in
docs/results/cpu_frontier.json or mini_table1.json are used where that file's settings equal the search's; values it
lacks are trained into outputs/cpu_sweep/ (shared with those scripts). A row whose search still ends at an edge after
the extensions is decided at the protocol's own budget (check_edges): its seed-10 run is trained at that edge rate and
at the rate the unextended grid chose, then at the next rate the search tried while the better one is the highest (or
lowest) compared; the highest best validation ROUGE-L over the epochs wins. csd_mix and csd_TS take CSD's rate, as in
the frontier. A row at its own rate whose runs are all in and all peak at their last epoch (still rising) gets a
probe (rising_probes): one seed-10 run at the next rate up its search tried, reported beside the chosen rate's run; it
changes no choice (--no-probes: none).

Two processes: run the same command in a second shell, each with --threads 1 (on the 2-core machine of 2026-12-06,
two such SFT runs side by side made 1.38 steps/s together, one 2-thread run 1.15: tqdm's rates, not a benchmark).
A run is trained by the process that takes its lock (csd.sweep.point_lock, freed when that process ends however it
ends); the other goes on to a free run, and waits for the rest before its last report.

Resumable: a finished run is read back from outputs/cpu_protocol/<run>/point.json; an interrupted one continues from
its last complete epoch (train.save_every=epoch, train.resume=auto; the checkpoints go once the run is recorded, best/
stays). Every run reads the one teacher cache (train.teacher_cache=auto). The report is rewritten after every
finished run and names the runs still missing (scripts/cpu_protocol_report.py; --report-only writes it from the
finished runs without training). --dry-run prints the plan and, given a measured --s-per-step and --s-per-eval, its
time; --tiny runs everything on a tiny random pair (smoke test, seconds).
"""
from __future__ import annotations

import argparse
import copy
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_frontier  # noqa: E402
import cpu_protocol_report  # noqa: E402
import mini_table1  # noqa: E402

from csd import step as steps  # noqa: E402
from csd.checkpoint import latest_checkpoint  # noqa: E402
from csd.data import load_examples  # noqa: E402
from csd.distiller import Distiller  # noqa: E402
from csd.evaluate import write_answers  # noqa: E402
from csd.inputs import check_training_inputs, one_line_errors  # noqa: E402
from csd.models import Models  # noqa: E402
from csd.sweep import EDGE_EXTENSIONS, Busy, PairModels, Point, Sweep, choose_lr  # noqa: E402

ROWS = {**{row: mini_table1.OBJECTIVES[row] for row in ("sft", "fkl", "srkl", "csd")},
        "csd_mix": cpu_frontier.WEIGHTINGS["csd_mix"], "csd_TS": cpu_frontier.WEIGHTINGS["csd_TS"]}
LR_FROM = {"csd_mix": "csd", "csd_TS": "csd"}  # CSD's weightings train at CSD's rate, as in the frontier
SEEDS = (10, 20)
EPOCHS = 20
VALIDATION_PROMPTS = 48
EXPERIMENT = "cpu_protocol"
SEARCH_RESULTS = (Path("docs/results/cpu_frontier.json"), Path("docs/results/mini_table1.json"))


def protocol_overrides(epochs: int, prompts: int) -> list[str]:
    """The release's training-time evaluation (validation after every epoch, generated ROUGE-L, best/ kept) and a
    checkpoint after every epoch to resume from."""
    return ["train.max_steps=null", f"train.epochs={epochs}", "train.eval_every=epoch", f"train.eval_generate={prompts}",
            "train.best_metric=val/rougeL", "train.save_every=epoch", "train.keep_checkpoints=1", "train.resume=auto"]


class EpochDistiller(Distiller):
    """The trainer, timing each validation and the training before it (kept in the evaluations, so they survive a
    resume) and printing one line per validation."""

    def __init__(self, cfg, models: Models, log: Callable[[str], None]):
        super().__init__(cfg, models)
        self.log, self.tick = log, time.time()

    def setup(self) -> "EpochDistiller":
        super().setup()
        self.steps_per_epoch = len(steps.optimizer_windows(len(self.train_set), self.cfg,
                                                           self.accelerator.num_processes, 0))
        self.tick = time.time()
        return self

    def validate(self) -> dict:
        train_s, tick = time.time() - self.tick, time.time()
        metrics = super().validate()
        evaluation = self.state.evaluations[-1]
        evaluation.update(train_s=round(train_s, 1), eval_s=round(time.time() - tick, 1))
        best = max(self.state.best_value or -math.inf, metrics["val/rougeL"])
        self.log(f"  {self.cfg.run_name} epoch {self.state.global_step / self.steps_per_epoch:g}/{self.cfg.train.epochs} "
                 f"(step {self.state.global_step}/{self.total_steps}): val ROUGE-L {metrics['val/rougeL']:.2f} "
                 f"(best {best:.2f}), val loss {metrics['val/loss']:.3f}; {evaluation['train_s']:.0f} s training, "
                 f"{evaluation['eval_s']:.0f} s validation")
        self.tick = time.time()
        return metrics


class ProtocolSweep(Sweep):
    """The sweep's points trained for whole epochs with the training-time evaluation, then scored on the test prompts
    at best/ and at the last step. A record: row, seed, lr, overrides, steps, steps_per_epoch, "epochs" (one entry per
    validation: epoch, step, rougeL, loss, ..., train_s, eval_s), best_epoch, "test" {"best": scores, "last": scores},
    "examples", test_s (seconds of each scoring), resumed_from_step (0: one process did it all), wall_s (this
    process), threads (its torch threads), fingerprint."""

    def __init__(self, overrides: Sequence[str] = (), *, epochs: int = EPOCHS, prompts: int = VALIDATION_PROMPTS,
                 experiment: str = EXPERIMENT, **kwargs):
        super().__init__([*protocol_overrides(epochs, prompts), *overrides], experiment=experiment, splits=("test",),
                         **kwargs)

    def train_and_score(self, point: Point) -> Optional[dict]:
        """The point trained (continuing from its last checkpoint) and scored; None when the run stopped early
        (train.stop_after_steps)."""
        folder, fingerprint, tick = self.root / point.name, self.fingerprint(point), time.time()
        self.start_afresh_unless_same(folder, fingerprint)
        resumed = latest_checkpoint(folder)
        cfg = self.config(point)
        check_training_inputs(cfg, check_models=False)
        model = copy.deepcopy(self.models.student_init)
        distiller = EpochDistiller(cfg, Models(student=model, tokenizer=self.models.tokenizer,
                                               teacher=self.models.teacher, vocab=len(self.models.tokenizer)), self.log)
        summary = distiller.setup().train()
        if "stopped_at" in summary:
            self.log(f"{point.name}: stopped at step {summary['stopped_at']} as train.stop_after_steps asks; the same "
                     "command continues it")
            return None
        per_epoch = distiller.steps_per_epoch
        epochs = [{"epoch": round(e["step"] / per_epoch, 3), **{k.removeprefix("val/"): v for k, v in e.items()
                                                                if k != "step"}, "step": e["step"]}
                  for e in summary["evaluations"]]
        best = max(range(len(epochs)), key=lambda i: epochs[i]["rougeL"])  # the first of equals, as best/ keeps it
        record = {"row": point.row, "seed": point.seed, "lr": point.lr, "overrides": list(point.overrides),
                  "steps": summary["steps"], "steps_per_epoch": per_epoch, "epochs": epochs,
                  "best_epoch": epochs[best]["epoch"], "resumed_from_step": int(resumed.name.split("_")[1]) if resumed
                  else 0, "test": {}, "examples": {}}
        model.eval()
        scored = {"last": model} if best == len(epochs) - 1 else {"best": self.load_best(folder / "best"), "last": model}
        for which, scored_model in scored.items():
            started = time.time()
            record["test"][which], predictions = self.evaluate(scored_model, "test", point.seed)
            record.setdefault("test_s", {})[which] = round(time.time() - started, 1)
            record["examples"][which], record["n"] = predictions[0], len(predictions)
            write_answers(folder / f"test_{which}" / "answers.jsonl", self.data["test"][0], predictions)
        record["test"].setdefault("best", record["test"]["last"])  # best/ is the last step: the same weights and seed
        record.update(wall_s=round(time.time() - tick, 1), threads=torch.get_num_threads(), fingerprint=fingerprint)
        self.write(point, record)
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # optimizer states, not needed once recorded
        test = record["test"]
        self.log(f"[{time.time() - self.started:6.0f} s] {point.name:24s} best epoch {record['best_epoch']:g} (val "
                 f"ROUGE-L {epochs[best]['rougeL']:.2f}); test ROUGE-L {test['best']['rougeL']:.2f} at best, "
                 f"{test['last']['rougeL']:.2f} at the last step ({record['wall_s']:.0f} s)")
        return record

    def start_afresh_unless_same(self, folder: Path, fingerprint: str) -> None:
        """Checkpoints in ``folder`` are resumed only when written with the same settings and resume is on."""
        mark = folder / "fingerprint"
        if not self.resume or (mark.exists() and mark.read_text().strip() != fingerprint):
            for name in ("checkpoints", "best"):
                shutil.rmtree(folder / name, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        mark.write_text(fingerprint + "\n")

    def load_best(self, folder: Path):
        from transformers import AutoModelForCausalLM

        dtype = next(self.models.student_init.parameters()).dtype
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).eval()


# ---------------------------------------------------------------------- learning rates: the short-budget search
class Undecided(Exception):
    """A search run the choice needs is not finished (dry run, report only)."""


def known_validation(results: Optional[dict], seed: int) -> dict:
    """{row: {"<lr>": validation ROUGE-L}} of a results JSON's lr search with ``seed`` (cpu_protocol_report.
    matching_results finds one made with the search's settings)."""
    return {row: sel["validation"] for row, sel in (results or {}).get("lr_selection", {}).items()
            if sel.get("seed") == seed and sel.get("metric", "rougeL") == "rougeL"}


def select_lrs(search: Sweep, rows: Sequence[str], grid: Sequence[float], seed: int, extensions: int, known: dict,
               source: Optional[str], train: bool = True) -> dict:
    """{row: choose_lr's record + "sources" {"<lr>": where its score came from}} for ``rows`` and the rows they take
    their rate from (LR_FROM; those get {"from": row, "chosen": lr}); a row
    whose choice needs a search run not yet finished (and ``train`` False) gets {"undecided": why}; "search_s": the
    seconds of the search runs it used."""
    selections = {}
    for row in dict.fromkeys(LR_FROM.get(row, row) for row in rows):
        overrides = ROWS[row]
        sources: dict[str, str] = {}
        spent: list[float] = []

        def validation_score(lr: float) -> float:
            key = f"{lr:g}"
            if key in known.get(row, {}):
                sources[key] = source
                return known[row][key]
            point = Point(row, seed, tuple(overrides), lr)
            if not train and search.cached(point) is None:
                raise Undecided(f"the search run {point.name} ({search.base.train.max_steps} steps) is not trained yet")
            sources[key] = "trained" if search.cached(point) is None else "read back"
            record = search.run(point)
            spent.append(record.get("wall_s", 0.0))
            return record["splits"]["validation"]["rougeL"]
        try:
            selections[row] = {**choose_lr(grid, validation_score, extensions), "metric": "rougeL", "seed": seed,
                               "steps": int(search.base.train.max_steps), "sources": sources, "search_s": sum(spent)}
        except (Undecided, Busy) as missing:
            selections[row] = {"undecided": str(missing), "busy": isinstance(missing, Busy)}
    return selections


def tried_rates(sel: dict) -> list[float]:
    """The rates a row's short search tried (its grid and the extensions), sorted."""
    return sorted({*sel.get("grid", ()), *map(float, sel.get("validation", {}))})


def check_edges(protocol: ProtocolSweep, selections: dict, seed: int, train: bool = True) -> None:
    """A row whose short search still ends at an edge after the extensions (CSD (S,S) at 1e-5 here) is decided at the
    protocol's own budget: its ``seed`` run is trained at that edge rate and at the rate the unextended grid chose;
    while the better of the candidates (higher best validation ROUGE-L over the epochs; ties: the earlier candidate)
    is the highest or the lowest of them, the next rate the search tried beyond it joins them, so the choice ends
    bracketed by the rates each side, or at the edge of what the search tried (said in the reason). That rate is
    the row's for every seed. The short search picks early progress; the protocol keeps the best of 20 epochs. The
    candidates' runs are protocol runs, so the chosen one is also the row's ``seed`` run. Adds "budget_check"
    {"seed", "candidates", "best_validation" {"<lr>": score}, "reason"} and sets "chosen" to the decided rate
    ("search_chosen" keeps the search's); while a candidate's run is missing (not ``train``, another process training
    it, stopped early) the row is "undecided" ("busy" when another process holds it)."""
    for row, sel in selections.items():
        if sel.get("edge") not in ("lower", "upper"):
            continue
        inside = max(sel["grid"], key=lambda lr: sel["validation"][f"{lr:g}"])  # first of equals: the smaller rate
        if inside == sel["chosen"]:  # no extension was allowed: nothing to compare
            continue
        sel["search_chosen"] = short = sel.pop("chosen")
        compare_over_epochs(protocol, row, sel, seed, train, [short, inside])


def compare_over_epochs(protocol: ProtocolSweep, row: str, sel: dict, seed: int, train: bool,
                        candidates: list[float]) -> None:
    """check_edges for one row: score each candidate's ``seed`` run, then add the rate past the best one while there
    is one (next_rate_past), and choose; or leave the row "undecided" at the first run that is missing."""
    tried = tried_rates(sel)
    check = sel["budget_check"] = {"seed": seed, "candidates": candidates, "best_validation": {}}
    scores = check["best_validation"]
    new = list(candidates)
    while new:
        for lr in new:
            point = Point(row, seed, tuple(ROWS[row]), lr)
            try:
                record = protocol.cached(point) or (protocol.run(point) if train else None)
            except Busy:
                sel.update(undecided=f"its check run {point.name} is being trained by another process", busy=True)
                return
            if record is None:
                sel.update(undecided=f"its check run {point.name} ({protocol.base.train.epochs} epochs) is not "
                           "finished", busy=False)
                return
            scores[f"{lr:g}"] = cpu_protocol_report.best_validation(record)
        best = max(candidates, key=lambda lr: scores[f"{lr:g}"])  # first of equals: the earlier candidate
        new = [lr for lr in (next_rate_past(best, candidates, tried),) if lr is not None]
        candidates += new
    sel["chosen"] = best
    others = sorted((lr for lr in candidates if lr != best), key=lambda lr: -scores[f"{lr:g}"])
    side = ("" if min(candidates) < best < max(candidates) else
            f"; it is the {'highest' if best == max(candidates) else 'lowest'} rate the search tried")
    check["reason"] = (f"the search ended at its {sel['edge']} edge; over {protocol.base.train.epochs} epochs (seed "
                       f"{seed}) the best validation ROUGE-L is {scores[f'{best:g}']:.2f} at {best:g} against "
                       + ", ".join(f"{scores[f'{lr:g}']:.2f} at {lr:g}" for lr in others) + side)


def next_rate_past(best: float, candidates: Sequence[float], tried: Sequence[float]) -> Optional[float]:
    """The rate the search tried next beyond ``best`` when ``best`` is the highest (or lowest) of ``candidates``;
    None when it lies between two of them or the search tried nothing beyond it."""
    if best == max(candidates):
        return next((lr for lr in tried if lr > best), None)
    if best == min(candidates):
        return next((lr for lr in reversed(tried) if lr < best), None)
    return None


def borrow(selections: dict, rows: Sequence[str]) -> None:
    """Rows that train at another row's rate (LR_FROM) get {"from", "chosen"}, or "undecided" while that rate is."""
    for row in rows:
        if row in LR_FROM:
            source = selections.get(LR_FROM[row], {})
            selections[row] = ({"from": LR_FROM[row], "chosen": source["chosen"]} if "chosen" in source else
                               {"from": LR_FROM[row], "undecided": f"{LR_FROM[row]}'s rate is undecided",
                                "busy": source.get("busy", False)})


def other_rate_points(selections: dict, runs: Sequence[dict]) -> list[Point]:
    """Runs at the rates a budget check compared, other than the one it chose (all of them while it is undecided),
    for every planned (row, seed) that takes that check's rate: the check's own runs, and runs trained before the
    check moved the rate (not planned runs: kept in the report beside them)."""
    planned = {run["point"].name for run in runs if run["point"]}
    points = {}
    for run in runs:
        sel = selections.get(LR_FROM.get(run["row"], run["row"]), {})
        for lr in sel.get("budget_check", {}).get("candidates", ()):
            point = Point(run["row"], run["seed"], tuple(ROWS.get(run["row"], ())), lr)
            if point.name not in planned and lr != sel.get("chosen"):
                points[point.name] = point
    return list(points.values())


def peaked_last(record: dict) -> bool:
    """The run's best validation is its last epoch's: still rising when training stopped."""
    return record["best_epoch"] == record["epochs"][-1]["epoch"]


def rising_probes(protocol: ProtocolSweep, selections: dict, runs: Sequence[dict], seed: int) -> list[dict]:
    """Rows at their own rate whose every planned run is finished and peaks at its last epoch: one more run (``seed``)
    at the next rate up that the row's search tried. A probe, not a choice: whether the chosen rate held the row back
    at this budget (the selection is left as it is; the report sets the probe beside the chosen rate's run)."""
    probes = []
    for row, sel in selections.items():
        own = [run for run in runs if run["row"] == row and run["point"] is not None]
        records = [protocol.cached(run["point"]) for run in own]
        if "from" in sel or "chosen" not in sel or not own or None in records or not all(map(peaked_last, records)):
            continue
        higher = [lr for lr in tried_rates(sel) if lr > sel["chosen"]]
        if higher and higher[0] not in sel.get("budget_check", {}).get("candidates", ()):  # not compared already
            probes.append({"row": row, "seed": seed, "lr": higher[0], "probe": True,
                           "point": Point(row, seed, own[0]["point"].overrides, higher[0])})
    return probes


def lr_of(row: str, selections: dict) -> Optional[float]:
    return selections.get(LR_FROM.get(row, row), {}).get("chosen")


# ---------------------------------------------------------------------- the plan, the runs
def plan(rows: dict, seeds: Sequence[int], selections: dict) -> list[dict]:
    """Every (row, seed), seed by seed (a stopped protocol has whole seeds): {"row", "seed", "lr", "point"} (point
    None while the row's lr is undecided)."""
    return [{"row": row, "seed": seed, "lr": lr_of(row, selections),
             "point": Point(row, seed, tuple(overrides), lr_of(row, selections)) if lr_of(row, selections) else None}
            for seed in seeds for row, overrides in rows.items()]


def describe_plan(protocol: ProtocolSweep, runs: list[dict], selections: dict, search_steps: int,
                  s_per_step: Optional[float], s_per_eval: Optional[float]) -> str:
    """The runs, which are finished, and (given measured seconds) the time of what is left."""
    train = protocol.base.train
    tokenizer = protocol.tokenizer
    examples = {split: len(load_examples(protocol.base.data, split, tokenizer)) for split in ("train", "validation", "test")}
    per_epoch = examples["train"] // (train.batch_size * train.grad_accum)
    total = protocol.base.train.max_steps or per_epoch * train.epochs
    lines = [f"{len(runs)} runs of {total} steps of {train.batch_size} ({train.epochs} epochs x {per_epoch} steps; "
             f"{examples['train']} training examples); after every epoch validation loss and {train.eval_generate} "
             f"generated validation prompts; the {examples['test']} test prompts scored at best/ and at the last step.",
             f"Learning rates (search: {search_steps}-step runs):",
             *cpu_protocol_report.selection_lines(selections)]
    # rows waiting for a short search run (a row waiting for its check run counts among the runs left)
    search_left = sum("undecided" in sel and "from" not in sel and "budget_check" not in sel
                      for sel in selections.values())
    left, steps_left = 0, 0
    for run in runs:
        point, done = run["point"], None
        if point is None:
            state = "lr undecided"
        elif protocol.cached(point) is not None:
            state = "finished"
        else:
            done = latest_checkpoint(protocol.root / point.name)
            state = f"to run (continues after step {int(done.name.split('_')[1])})" if done else "to run"
        if state != "finished":
            left += 1
            steps_left += total - (int(done.name.split("_")[1]) if done else 0)
        lines.append(f"  {run['row']:8s} seed {run['seed']}: {point.name if point else '-':28s} {state}"
                     + (" (probe: the next rate up; its runs all peak at their last epoch)" if run.get("probe") else ""))
    if s_per_step and s_per_eval:
        # a validation generates train.eval_generate prompts; test scoring (twice) and a search run's scoring
        # (validation + test) are taken to cost in proportion to their prompts
        per_prompt = s_per_eval / max(int(train.eval_generate), 1)
        run_s = train.epochs * s_per_eval + 2 * examples["test"] * per_prompt
        search_s = search_steps * s_per_step + (examples["validation"] + examples["test"]) * per_prompt
        seconds = steps_left * s_per_step + left * run_s
        lines.append(f"Estimate at {s_per_step:g} s/step and {s_per_eval:g} s per validation: {seconds / 3600:.2f} h for "
                     f"the {left} runs left ({steps_left} steps, {left} x {run_s / 60:.1f} min of validation and test)"
                     + (f" + at least {search_left} search run(s) of about {search_s / 60:.1f} min" if search_left else ""))
    return "\n".join(lines)


def run_protocol(protocol: ProtocolSweep, decide: Callable[[], tuple[dict, list[dict]]],
                 after_each: Callable[[dict, list[dict]], None], wait_s: float = 60.0) -> tuple[dict, list[dict]]:
    """Train every planned run, deciding the rates again after each (a finished check run decides a row's rate).
    ``decide()`` gives (selections, runs). Runs that another process is training (the same command in a second
    shell) are left to it: this one trains what is free, then waits for the rest. ``after_each(selections, runs)``
    after every trained run. Returns the last (selections, runs)."""
    stopped: set[str] = set()  # stopped early (train.stop_after_steps): not again in this process
    while True:
        selections, runs = decide()
        busy = [row for row, sel in selections.items() if sel.get("busy")]
        todo = [run["point"] for run in runs if run["point"] is not None and run["point"].name not in stopped
                and protocol.cached(run["point"]) is None]
        for number, point in enumerate(todo, 1):
            try:
                protocol.log(f"run {point.name} ({len(todo) - number + 1} of {len(runs)} runs left)")
                record = protocol.run(point)
            except Busy:
                busy.append(point.name)
                continue
            if record is None:
                stopped.add(point.name)
            else:
                after_each(selections, runs)
            break  # decide again
        else:
            if not busy:
                return selections, runs
            protocol.log(f"waiting {wait_s:.0f} s for another process: {', '.join(busy)}")
            time.sleep(wait_s)


def tiny_overrides(scratch: Path) -> list[str]:
    """A tiny random pair on the committed 64-instruction fixture (12 examples a split, batch 4): seconds per run."""
    from csd.testing import tiny_pair_overrides

    return [*tiny_pair_overrides(scratch), "data.max_examples=12", "data.max_new_tokens=8", "train.batch_size=4",
            "train.mixed_precision=no", f"output_root={scratch / 'outputs'}"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objectives", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--max-steps", type=int, default=None, help="stop every run after this many steps (smoke tests)")
    p.add_argument("--validation-prompts", type=int, default=VALIDATION_PROMPTS)
    p.add_argument("--lr-grid", nargs="+", default=[f"{lr:g}" for lr in mini_table1.LR_GRID])
    p.add_argument("--edge-extensions", type=int, default=EDGE_EXTENSIONS)
    p.add_argument("--search-steps", type=int, default=mini_table1.STEPS, help="steps of the lr search's runs")
    p.add_argument("--search-seed", type=int, default=mini_table1.SEEDS[0])
    p.add_argument("--search-results", type=Path, nargs="*", default=list(SEARCH_RESULTS),
                   help="results JSONs whose lr search (validation scores) and 96-step table are used where their "
                        "settings equal the search's")
    p.add_argument("--no-probes", dest="probes", action="store_false",
                   help="no probe runs (a row whose runs all peak at their last epoch gets one at the next rate up)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    p.add_argument("--experiment", default=EXPERIMENT, help="runs go to <output_root>/<experiment>/<run>/")
    p.add_argument("--no-resume", action="store_true", help="train every run again, from its first step")
    p.add_argument("--dry-run", action="store_true", help="print the plan (and its time) and stop")
    p.add_argument("--s-per-step", type=float, default=None, help="measured seconds per step, for --dry-run's estimate")
    p.add_argument("--s-per-eval", type=float, default=None,
                   help="measured seconds per validation (loss + generated prompts), for --dry-run's estimate")
    p.add_argument("--report-only", action="store_true", help="write the report from the finished runs; train nothing")
    p.add_argument("--tiny", action="store_true", help="a tiny random pair (smoke test); files under --scratch")
    p.add_argument("--scratch", type=Path, default=Path("outputs/cpu_protocol_tiny"))
    return p


def make_sweeps(args, overrides: Sequence[str], models: Optional[PairModels] = None) -> tuple[Sweep, ProtocolSweep]:
    """The search's sweep (the mini table's settings: its runs are shared) and the protocol's."""
    resume = not args.no_resume
    search = Sweep([f"train.max_steps={args.search_steps}", *overrides], experiment=mini_table1.EXPERIMENT,
                   models=models, resume=resume)
    budget = [f"train.max_steps={args.max_steps}"] if args.max_steps else []
    protocol = ProtocolSweep([*overrides, *budget], epochs=args.epochs, prompts=args.validation_prompts,
                             experiment=args.experiment, models=models, resume=resume)
    return search, protocol


def main(argv: list[str], models: Optional[PairModels] = None) -> Optional[dict]:
    args, overrides = parser().parse_known_args(argv)
    started = time.time()
    torch.set_num_threads(args.threads)
    if args.tiny:
        overrides = [*tiny_overrides(args.scratch), *overrides]
    rows = {row: ROWS[row] for row in args.objectives}
    search, protocol = make_sweeps(args, overrides, models)
    train = not (args.dry_run or args.report_only)
    if train and models is None:  # one pair in memory for both sweeps
        search, protocol = make_sweeps(args, overrides, search.models)
    searched, source = cpu_protocol_report.matching_results(search.common, search.decoding, search.splits,
                                                            args.search_results)

    def decide() -> tuple[dict, list[dict]]:
        selections = select_lrs(search, list(rows), mini_table1.parse_grid(args.lr_grid), args.search_seed,
                                args.edge_extensions, known_validation(searched, args.search_seed), source, train)
        check_edges(protocol, selections, args.search_seed, train)
        borrow(selections, list(rows))
        runs = plan(rows, args.seeds, selections)
        return selections, runs + (rising_probes(protocol, selections, runs, args.search_seed) if args.probes else [])
    if args.dry_run:
        selections, runs = decide()
        print(describe_plan(protocol, runs, selections, args.search_steps, args.s_per_step, args.s_per_eval))
        return None
    # the 96-step table beside the 20-epoch one: the frontier's (it has CSD's weightings), made with the mini
    # table's settings
    table, table_source = cpu_protocol_report.matching_results(
        [*search.common[:2], f"train.max_steps={mini_table1.STEPS}", *overrides], search.decoding, search.splits,
        args.search_results)
    command = " ".join(["python scripts/cpu_protocol.py", *argv])
    settings = cpu_protocol_report.settings_of(protocol, args, command, source, table_source, mini_table1.machine())
    args.out.mkdir(parents=True, exist_ok=True)

    def write_report(selections: dict, runs: list[dict]) -> dict:
        planned, probes = [r for r in runs if not r.get("probe")], [r for r in runs if r.get("probe")]
        records = [r for r in (protocol.cached(run["point"]) for run in planned if run["point"]) if r is not None]
        others = [r for r in map(protocol.cached, other_rate_points(selections, planned)) if r is not None]
        probed = [r for r in (protocol.cached(run["point"]) for run in probes) if r is not None]
        results = cpu_protocol_report.results_of(settings, selections, planned, records,
                                                 (table or {}).get("rows", {}), started, others, probes, probed)
        cpu_protocol_report.write(results, args.out)
        return results
    results = write_report(*(decide() if args.report_only else run_protocol(protocol, decide, write_report)))
    print((args.out / "cpu_protocol.md").read_text(encoding="utf-8"))
    return results


if __name__ == "__main__":
    with one_line_errors("cpu_protocol.py"):  # a bad override, model path or data file: one line, no traceback
        main(sys.argv[1:])

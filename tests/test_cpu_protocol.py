"""The sweep's grid-edge rule (csd.sweep.choose_lr) on scripted validation scores and in mini_table1's records;
scripts/cpu_protocol.py on a tiny pair end to end (the best epoch by validation ROUGE-L, the test prompts scored at
best/ and at the last step, an interrupted run continued, a finished one read back); its report and claim checks on
made-up records."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import cpu_protocol  # noqa: E402
import cpu_protocol_report  # noqa: E402
import mini_table1  # noqa: E402

from csd.sweep import PairModels, Point, Sweep, beyond_edge, choose_lr  # noqa: E402
from csd.testing import make_tiny_model, make_tiny_tokenizer  # noqa: E402

QUICKSTART = Path(__file__).resolve().parents[1] / "data" / "quickstart"


# ------------------------------------------------------------------ the grid-edge rule, no training
def scorer(table: dict[str, float]):
    """A validation score per lr (keyed as the records key it) and the lrs in the order they were scored."""
    calls = []

    def score(lr: float) -> float:
        calls.append(lr)
        return table[f"{lr:g}"]
    return score, calls


def test_a_choice_inside_the_grid_is_kept_without_extending():
    score, calls = scorer({"0.0001": 1.0, "0.0003": 2.0, "0.001": 1.5})
    chosen = choose_lr([1e-3, 1e-4, 3e-4], score)
    assert chosen["chosen"] == 3e-4 and chosen["edge"] is None and chosen["extended"] == []
    assert chosen["reason"] == "inside the grid" and calls == [1e-4, 3e-4, 1e-3]


def test_a_choice_at_the_lower_edge_goes_on_below_by_the_grids_step():
    # 1e-4 wins the grid, 3e-5 (one step below) wins again, 1e-5 loses: 3e-5, inside the extended grid
    score, calls = scorer({"1e-05": 3.0, "3e-05": 5.0, "0.0001": 4.0, "0.0003": 2.0, "0.001": 1.0})
    chosen = choose_lr([1e-4, 3e-4, 1e-3], score)
    assert chosen["chosen"] == 3e-5 and chosen["extended"] == [3e-5, 1e-5] and chosen["edge"] is None
    assert calls == [1e-4, 3e-4, 1e-3, 3e-5, 1e-5] and chosen["tried"] == [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]
    assert chosen["validation"] == {"1e-05": 3.0, "3e-05": 5.0, "0.0001": 4.0, "0.0003": 2.0, "0.001": 1.0}
    assert chosen["reason"] == "inside the grid extended by 3e-05, 1e-05"
    # the old edge beats the value below it: one extension, the old edge chosen, now inside
    score, calls = scorer({"3e-05": 3.9, "0.0001": 4.0, "0.0003": 2.0, "0.001": 1.0})
    chosen = choose_lr([1e-4, 3e-4, 1e-3], score)
    assert (chosen["chosen"], chosen["extended"], chosen["edge"]) == (1e-4, [3e-5], None) and len(calls) == 4


def test_the_extensions_stop_at_the_limit_and_the_record_says_so():
    lower = choose_lr([1e-4, 3e-4, 1e-3], lambda lr: -lr)
    assert (lower["chosen"], lower["extended"], lower["edge"]) == (1e-5, [3e-5, 1e-5], "lower")
    assert "after 2 extension(s)" in lower["reason"] and "below 1e-05" in lower["reason"]
    upper = choose_lr([1e-4, 3e-4, 1e-3], lambda lr: lr)
    assert (upper["chosen"], upper["extended"], upper["edge"]) == (1e-2, [3e-3, 1e-2], "upper")
    assert "above 0.01" in upper["reason"]
    assert choose_lr([1e-4, 3e-4, 1e-3], lambda lr: lr, extensions=0)["extended"] == []
    assert choose_lr([1e-4, 3e-4, 1e-3], lambda lr: -lr, extensions=3)["chosen"] == 3e-6


def test_grid_steps_ties_and_one_value_grids():
    assert [beyond_edge([1e-4, 3e-4, 1e-3], "lower", k) for k in (1, 2, 3)] == [3e-5, 1e-5, 3e-6]
    assert [beyond_edge([1e-4, 3e-4, 1e-3], "upper", k) for k in (1, 2)] == [3e-3, 1e-2]
    assert beyond_edge([1e-3, 1e-2], "upper", 1) == pytest.approx(0.1)
    assert beyond_edge([1e-4, 1.1e-4], "upper", 1) == pytest.approx(1.21e-4)  # rounded it would not pass the edge
    # equal scores: the smaller rate, so a flat grid walks down to the limit
    assert choose_lr([1e-4, 3e-4, 1e-3], lambda lr: 1.0)["chosen"] == 1e-5
    score, calls = scorer({"0.0002": 1.0})
    only = choose_lr([2e-4], score)
    assert (only["chosen"], only["edge"], only["extended"], calls) == (2e-4, "only", [], [2e-4])
    with pytest.raises(ValueError, match="at least one"):
        choose_lr([], lambda lr: 0.0)


# ------------------------------------------------------------------ tiny pair
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("quickstart")
    for split, n in (("train", 4), ("validation", 3), ("test", 3)):
        lines = (QUICKSTART / f"{split}.jsonl").read_text().splitlines()[:n]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def tiny_models() -> PairModels:
    tokenizer = make_tiny_tokenizer()
    return PairModels(make_tiny_model(tokenizer, seed=1).eval().requires_grad_(False), make_tiny_model(tokenizer, seed=2),
                      tokenizer)


def tiny_overrides(root: Path, data: Path) -> list[str]:
    return [f"data.path={data}", "data.max_new_tokens=6", "train.batch_size=2", "train.mixed_precision=no",
            f"output_root={root}"]


def tiny_protocol(root: Path, data: Path, epochs: int = 3, extra=()) -> cpu_protocol.ProtocolSweep:
    return cpu_protocol.ProtocolSweep([*tiny_overrides(root, data), *extra], epochs=epochs, prompts=3,
                                      models=tiny_models(), log=lambda _: None)


def test_mini_table1_records_and_json_carry_the_edge_rule(tmp_path, tiny_data, monkeypatch):
    import csd.train

    trained = []  # no training: the validation score is a function of the lr
    monkeypatch.setattr(csd.train, "run", lambda cfg, models: trained.append(cfg.optim.lr) or {"steps": 0, "wall_s": 0})
    validation = {1e-5: 5.5, 3e-5: 6.0, 1e-4: 5.0, 3e-4: 4.0, 1e-3: 3.0}

    def evaluate(self, model, split, seed):
        scores = {"rougeL": validation[trained[-1]] if split == "validation" else 0.0, "distinct_1": 0.0,
                  "distinct_2": 0.0, "self_bleu": 0.0, "mean_words": 0.0, "nll": 0.0}
        return scores, ["x"] * len(self.data[split][0])
    monkeypatch.setattr(Sweep, "evaluate", evaluate)
    sweep = Sweep(tiny_overrides(tmp_path, tiny_data), experiment="edge_test", models=tiny_models(), log=lambda _: None)
    outcome = mini_table1.run_rows(sweep, {"csd": ("loss=csd",)}, [10], [1e-4, 3e-4, 1e-3], reference_seeds=0)
    selection = outcome["lr_selection"]["csd"]
    assert selection["chosen"] == 3e-5 and selection["extended"] == [3e-5, 1e-5] and selection["edge"] is None
    # the reported seed-10 run is the search's run at 3e-5, read back
    assert trained == [1e-4, 3e-4, 1e-3, 3e-5, 1e-5] and outcome["records"][0]["lr"] == 3e-5
    results = json.loads(json.dumps(mini_table1.results_of(sweep, outcome, [10], [1e-4, 3e-4, 1e-3], "cmd", 0.0)))
    assert results["lr_selection"]["csd"]["tried"] == [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]
    assert results["lr_selection"]["csd"]["reason"] == "inside the grid extended by 3e-05, 1e-05"
    markdown = mini_table1.report(results, tmp_path)
    assert "| lr 1e-05 | lr 3e-05 | lr 0.0001 |" in markdown and "| 5.50 | 6.00 | 5.00 | 4.00 | 3.00 | 3e-05 |" in markdown


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().float().numpy().tobytes())
    return digest.hexdigest()


def test_protocol_keeps_the_best_epoch_scores_best_and_last_and_continues_after_a_stop(tmp_path, tiny_data,
                                                                                      monkeypatch):
    import csd.distiller
    import csd.step

    # validation ROUGE-L after epochs 1, 2, 3 (2 steps each): epoch 2 is the best
    scripted = {2: 5.0, 4: 9.0, 6: 7.0}
    monkeypatch.setattr(csd.distiller.Distiller, "generation_metrics",
                        lambda self: {"val/rougeL": scripted[self.state.global_step]})
    steps, real_step = [], csd.step.train_step
    monkeypatch.setattr(csd.step, "train_step", lambda *a, **k: steps.append(1) or real_step(*a, **k))
    scored, real_evaluate = [], cpu_protocol.ProtocolSweep.evaluate
    monkeypatch.setattr(cpu_protocol.ProtocolSweep, "evaluate", lambda self, model, split, seed: scored.append(
        weights_digest(model)) or real_evaluate(self, model, split, seed))
    point = Point("fkl", 10, ("loss=fkl",), 1e-2)

    stopped = tiny_protocol(tmp_path, tiny_data, extra=["train.stop_after_steps=4"])  # killed after epoch 2
    assert stopped.run(point) is None and not stopped.path(point).exists() and len(steps) == 4
    folder = stopped.root / point.name
    best_after_two = weights_digest(stopped.load_best(folder / "best"))

    steps.clear()
    protocol = tiny_protocol(tmp_path, tiny_data)
    record = protocol.run(point)
    assert len(steps) == 2 and record["resumed_from_step"] == 4  # only epoch 3 was trained again
    assert [(e["epoch"], e["step"], e["rougeL"]) for e in record["epochs"]] == [(1, 2, 5.0), (2, 4, 9.0), (3, 6, 7.0)]
    assert all("loss" in e and "eval_s" in e for e in record["epochs"])
    assert record["best_epoch"] == 2 and record["steps"] == 6 and record["steps_per_epoch"] == 2
    assert record["threads"] == torch.get_num_threads()  # the report says what each run trained with
    # the test prompts scored at best/ (epoch 2's weights) and at the last step (others)
    assert scored[0] == best_after_two and scored[1] != best_after_two and len(scored) == 2
    assert set(record["test"]) == {"best", "last"} and set(record["test"]["best"]) >= {"rougeL", "distinct_2",
                                                                                       "self_bleu", "nll"}
    assert (folder / "test_best" / "answers.jsonl").exists() and not (folder / "checkpoints").exists()

    # a finished run is read back, not trained
    monkeypatch.setattr(csd.distiller.Distiller, "train", lambda self: pytest.fail("a finished run was trained again"))
    assert tiny_protocol(tmp_path, tiny_data).run(point) == record


def test_protocol_checkpoints_of_other_settings_are_not_resumed(tmp_path, tiny_data, monkeypatch):
    import csd.distiller

    monkeypatch.setattr(csd.distiller.Distiller, "generation_metrics", lambda self: {"val/rougeL": 1.0})
    point = Point("fkl", 10, ("loss=fkl",), 1e-3)
    assert tiny_protocol(tmp_path, tiny_data, extra=["train.stop_after_steps=2"]).run(point) is None
    # two epochs instead of three: another fingerprint, so the run starts at step 0
    record = tiny_protocol(tmp_path, tiny_data, epochs=2).run(point)
    assert record["resumed_from_step"] == 0 and [e["epoch"] for e in record["epochs"]] == [1, 2]
    # equal validation scores keep the first epoch's checkpoint (best/ is replaced only by a higher score)
    assert record["best_epoch"] == 1


def test_the_script_end_to_end_on_the_tiny_pair(tmp_path, tiny_data, capsys):
    """Real training and real generated validation ROUGE-L: the lr search, the runs, the report; then the report and
    the plan again from the finished records (nothing trained)."""
    argv = [*tiny_overrides(tmp_path, tiny_data), "--objectives", "csd", "csd_TS", "--seeds", "10", "--epochs", "2",
            "--search-steps", "2", "--lr-grid", "1e-3", "--validation-prompts", "3", "--out", str(tmp_path / "report"),
            "--search-results"]  # none: the search trains
    results = cpu_protocol.main(argv, models=tiny_models())
    selection = results["lr_selection"]
    # the rates are decided again after every run: by the last decision the search run (trained first) is read back
    assert selection["csd"]["chosen"] == 1e-3 and selection["csd"]["sources"] == {"0.001": "read back"}
    assert (tmp_path / "cpu_sweep" / "csd_lr0.001_seed10" / "point.json").exists()
    assert selection["csd_TS"] == {"from": "csd", "chosen": 1e-3}
    assert [(r["row"], r["lr"], len(r["epochs"])) for r in results["runs"]] == [("csd", 1e-3, 2), ("csd_TS", 1e-3, 2)]
    for run in results["runs"]:
        best = max(run["epochs"], key=lambda e: e["rougeL"])
        assert run["best_epoch"] == best["epoch"] and set(run["test"]) == {"best", "last"}
    saved = json.loads((tmp_path / "report" / "cpu_protocol.json").read_text())
    assert saved["runs"] == json.loads(json.dumps(results["runs"])) and saved["missing"] == []
    assert (tmp_path / "report" / "cpu_protocol.png").stat().st_size > 10_000
    again = cpu_protocol.main([*argv, "--report-only"], models=tiny_models())
    assert again["runs"] == results["runs"]
    capsys.readouterr()
    cpu_protocol.main([*argv, "--dry-run", "--objectives", "csd", "fkl", "--s-per-step", "2", "--s-per-eval", "30"],
                      models=tiny_models())
    plan = capsys.readouterr().out
    assert "csd      seed 10: csd_lr0.001_seed10" in plan and "finished" in plan
    assert "| fkl | the search run fkl_lr0.001_seed10 (2 steps) is not trained yet |" in plan
    assert "for the 1 runs left" in plan


def test_the_search_scores_of_a_results_json_are_used_only_with_the_same_settings(tmp_path):
    decoding = {"temperature": 1.0, "no_repeat_ngram_size": 6}
    common = ["experiment=quickstart", "experiment_name=cpu_sweep", "train.max_steps=96"]
    path = tmp_path / "cpu_frontier.json"
    path.write_text(json.dumps({"settings": {"overrides": [*common, "logger=wandb"], "decoding": decoding,
                                             "splits": ["validation", "test"]},
                                "lr_selection": {"csd": {"seed": 10, "metric": "rougeL", "validation": {"0.0001": 11.9}},
                                                 "fkl": {"seed": 20, "validation": {"0.0001": 9.0}}}}))
    results, source = cpu_protocol_report.matching_results(common, decoding, ("validation", "test"), [path])
    assert source == str(path) and cpu_protocol.known_validation(results, 10) == {"csd": {"0.0001": 11.9}}
    for other in ([*common[:2], "train.max_steps=48"], [*common, "model=tiny"]):
        assert cpu_protocol_report.matching_results(other, decoding, ("validation", "test"), [path]) == (None, None)
    assert cpu_protocol_report.matching_results(common, {**decoding, "no_repeat_ngram_size": 0},
                                                ("validation", "test"), [tmp_path / "missing.json", path])[0] is None


# ------------------------------------------------------------------ the report on made-up records
def fake_record(row: str, seed: int, rouge: float, distinct_2: float, self_bleu: float = 10.0,
                curve=(5.0, 8.0, 7.0)) -> dict:
    scores = {"rougeL": rouge, "distinct_1": distinct_2 / 2, "distinct_2": distinct_2, "self_bleu": self_bleu,
              "mean_words": 20.0, "nll": 3.0}
    epochs = [{"epoch": e + 1, "step": 50 * (e + 1), "rougeL": v, "loss": 1.0} for e, v in enumerate(curve)]
    return {"row": row, "seed": seed, "lr": 1e-4, "epochs": epochs,
            "best_epoch": max(epochs, key=lambda e: e["rougeL"])["epoch"], "test": {"best": scores, "last": scores},
            "wall_s": 100.0, **({"threads": 1} if seed == 20 else {})}


def stats(rouge: float, distinct_2: float, self_bleu: float = 10.0) -> dict:
    one = lambda v: {"mean": v, "std": 0.5, "n": 3}  # noqa: E731
    return {"rougeL": one(rouge), "distinct_1": one(distinct_2 / 2), "distinct_2": one(distinct_2),
            "self_bleu": one(self_bleu), "mean_words": one(20.0), "nll": one(3.0), "seeds": [10, 20, 30], "lr": 1e-4}


TABLE_96 = {"sft": stats(27.6, 0.82, 17), "fkl": stats(15.4, 0.91, 9), "srkl": stats(12.5, 0.69, 17),
            "csd": stats(12.0, 0.74, 12), "csd_mix": stats(12.1, 0.89, 9), "csd_TS": stats(10.6, 0.95, 7)}


def fake_results(csd_rouge: float, csd_distinct: float, drop=()) -> dict:
    numbers = {"sft": (30.0, 0.80, 18), "fkl": (20.0, 0.90, 9), "srkl": (14.0, 0.70, 17),
               "csd": (csd_rouge, csd_distinct, 19), "csd_mix": (15.0, 0.88, 9), "csd_TS": (12.0, 0.95, 7)}
    curves = {10: (5.0, 8.0, 7.0), 20: (5.0, 6.0, 9.0)}
    records = [fake_record(row, seed, rouge + (seed - 15) / 10, d2, sb, curves[seed])
               for seed in (10, 20) for row, (rouge, d2, sb) in numbers.items() if (row, seed) not in drop]
    runs = [{"row": row, "seed": seed, "lr": 1e-4} for seed in (10, 20) for row in numbers]
    settings = {"epochs": 3, "max_steps": None, "batch_size": 8, "precision": "bf16", "seeds": [10, 20],
                "objectives": list(numbers), "validation": {"prompts": 48, "decoding": "sampling"},
                "test_decoding": {"temperature": 1.0, "no_repeat_ngram_size": 6, "max_new_tokens": 48},
                "lr_search": {"steps": 96, "seed": 10, "grid": [1e-4, 3e-4, 1e-3], "edge_extensions": 2},
                "table_96": "docs/results/cpu_frontier.json", "threads": 2, "machine": "test", "command": "cmd"}
    selection = {"csd": {"chosen": 1e-4, "validation": {"3e-05": 11.0, "0.0001": 11.9}, "sources": {
        "3e-05": "trained", "0.0001": "docs/results/cpu_frontier.json"}, "reason": "inside the grid extended by 3e-05"},
                 "csd_TS": {"from": "csd", "chosen": 1e-4}}
    return cpu_protocol_report.results_of(settings, selection, runs, records, TABLE_96, 0.0)


def test_report_claims_follow_the_numbers(tmp_path):
    # CSD (S,S) 2nd by ROUGE-L (5th of 6 at 96 steps) and the most diverse but one: its rank changes, it is on the
    # distinct-2 front; sft (30, self-BLEU 18) dominates its self-BLEU of 19
    results = fake_results(csd_rouge=25.0, csd_distinct=0.93)
    claims = results["claims"]
    assert claims["csd_rank_96_steps"] == 5 and claims["csd_rank_protocol"] == 2 and claims["csd_rank_changed"] is True
    assert claims["csd_on_front_distinct_2_protocol"] is True and claims["csd_on_front_self_bleu_protocol"] is False
    assert claims["csd_seeds_on_front_distinct_2"] == 2 and claims["csd_on_front_distinct_2_96_steps"] is False
    assert claims["highest_rougeL_protocol"] == "sft" and claims["csd_highest_rougeL_protocol"] is False
    # the same rank as at 96 steps, and fkl (20, 0.90) dominates it: no change, off the front
    claims = fake_results(csd_rouge=12.6, csd_distinct=0.85)["claims"]
    assert claims["csd_rank_protocol"] == 5 and claims["csd_rank_changed"] is False
    assert claims["csd_on_front_distinct_2_protocol"] is False and claims["csd_seeds_on_front_distinct_2"] == 0
    # curves: mean over seeds, band = the lowest and highest seed; the mean curve peaks at epoch 3 (7.0 vs 8.0)
    curve = results["validation_curves"]["fkl"]
    assert curve["mean"] == [5.0, 7.0, 8.0] and curve["low"] == [5.0, 6.0, 7.0] and curve["high"] == [5.0, 8.0, 9.0]
    assert results["peak_epoch"]["fkl"] == {"mean_curve": 3, "seeds": {"10": 2, "20": 3}}
    assert results["test_best"]["csd"]["rougeL"]["mean"] == pytest.approx(25.0)
    assert results["compute_s"] == 1200.0
    cpu_protocol_report.write(results, tmp_path)
    markdown = (tmp_path / "cpu_protocol.md").read_text()
    assert "the rank **changes** (down)." in cpu_protocol_report.markdown(fake_results(5.0, 0.85))  # 5th -> 6th
    assert "the rank **changes** (up)." in markdown and "CSD (S,S) **is** on it" in markdown and "All 12 runs" in markdown
    assert "| csd | 0.0001 | 25.00 ± 0.71 | 12.00 ± 0.50 |" in markdown
    assert "torch threads per run: not recorded (sft seed 10, fkl seed 10, " in markdown
    assert "; 1 (sft seed 20, fkl seed 20, " in markdown
    assert "3e-05: 11.00 (trained)" in markdown and "| **peak** (mean curve; per seed) | 3 (2, 3) |" in markdown
    assert (tmp_path / "cpu_protocol.png").stat().st_size > 10_000


def test_report_on_partial_records_names_what_is_missing(tmp_path):
    results = fake_results(25.0, 0.93, drop={("csd", 20), ("fkl", 10), ("fkl", 20)})
    assert [(m["row"], m["seed"]) for m in results["missing"]] == [("fkl", 10), ("fkl", 20), ("csd", 20)]
    assert "fkl" not in results["test_best"] and results["test_best"]["csd"]["rougeL"]["n"] == 1
    assert results["claims"]["ranking_protocol"] == ["sft", "csd", "csd_mix", "srkl", "csd_TS"]
    cpu_protocol_report.write(results, tmp_path)
    markdown = (tmp_path / "cpu_protocol.md").read_text()
    assert "**9 of 12 runs finished**; missing: fkl seed 10 (not finished)" in markdown
    undecided = cpu_protocol_report.results_of(results["settings"], {"csd": {"undecided": "its check run X is busy"}},
                                               [{"row": "csd", "seed": 10, "lr": None}], [], TABLE_96, 0.0)
    assert undecided["missing"][0]["why"] == "its learning rate is undecided: its check run X is busy"
    assert "on the per-seed front in 1 of its 1 finished seed(s)" in markdown  # not "of 2": seed 20 has no CSD run
    no_csd = fake_results(25.0, 0.93, drop={("csd", 10), ("csd", 20)})
    assert no_csd["claims"]["rank_check"] == "not computable: no finished CSD (S,S) run"
    assert no_csd["claims"]["front_check"] == "not computable: no finished CSD (S,S) run"
    cpu_protocol_report.write(no_csd, tmp_path)
    assert "not computable" in (tmp_path / "cpu_protocol.md").read_text()
    nothing = fake_results(25.0, 0.93, drop={(r, s) for r in TABLE_96 for s in (10, 20)})
    cpu_protocol_report.write(nothing, tmp_path)
    assert "**0 of 12 runs finished**" in (tmp_path / "cpu_protocol.md").read_text()


def test_a_resumed_run_counts_every_process_and_runs_at_rates_not_chosen_are_kept(tmp_path):
    # a run resumed at epoch 3: wall time is the last process's 100 s; its epochs took 3 x (90 + 10) s, its tests 20 s
    resumed = {**fake_record("csd", 10, 15.0, 0.8), "test_s": {"best": 12.0, "last": 8.0}}
    for epoch in resumed["epochs"]:
        epoch.update(train_s=90.0, eval_s=10.0)
    assert cpu_protocol_report.compute_of(resumed) == 320.0
    one_process = {**resumed, "wall_s": 400.0}  # setup and saving are in the wall time, not in the epochs
    assert cpu_protocol_report.compute_of(one_process) == 400.0
    # the check's losing candidate (1e-5) is not a planned run: kept whole, counted, left out of the tables
    selections = edge_selection()
    selections["csd"].update(chosen=1e-4, search_chosen=1e-5, budget_check={"seed": 10, "candidates": [1e-5, 1e-4]})
    runs = cpu_protocol.plan({"csd": ("loss=csd",)}, [10, 20], selections)
    undecided = {"csd": {k: v for k, v in selections["csd"].items() if k != "chosen"}}
    assert [p.name for p in cpu_protocol.other_rate_points(undecided, [
        {"row": "csd", "seed": 10, "point": None}])] == ["csd_lr1e-05_seed10", "csd_lr0.0001_seed10"]  # all, undecided
    selections["csd"]["budget_check"]["reason"] = "1e-4 wins"
    # the check's loser (seed 10) and, for seed 20, the run at the rate not chosen (trained before a rate moved)
    assert [p.name for p in cpu_protocol.other_rate_points(selections, runs)] == ["csd_lr1e-05_seed10",
                                                                                  "csd_lr1e-05_seed20"]
    borrowers = cpu_protocol.plan({"csd_mix": ("loss=csd",)}, [10], selections)  # csd's check decides csd_mix's rate
    assert [p.name for p in cpu_protocol.other_rate_points(selections, borrowers)] == ["csd_mix_lr1e-05_seed10"]
    loser = {**fake_record("csd", 10, 5.0, 0.5), "lr": 1e-5, "wall_s": 250.0, "threads": 2}
    base = fake_results(15.0, 0.8)
    results = cpu_protocol_report.results_of(base["settings"], base["lr_selection"], [
        {"row": r["row"], "seed": r["seed"], "lr": r["lr"]} for r in base["runs"]], base["runs"], TABLE_96, 0.0,
        [loser])
    assert results["other_rate_runs"] == [loser] and results["compute_s"] == 1200.0 + 250.0
    # core-hours: seed 20's runs record 1 thread, the loser 2; seed 10's record none (left out, and said)
    assert results["run_core_s"] == 6 * 100.0 + 2 * 250.0 and results["runs_without_threads"] == 6
    assert results["test_best"]["csd"]["rougeL"]["n"] == 2 and results["test_best"]["csd"]["rougeL"]["mean"] == 15.0
    cpu_protocol_report.write(results, tmp_path)
    markdown = (tmp_path / "cpu_protocol.md").read_text()
    assert "with the 1 run(s) at rates the check compared, other than its choice" in markdown and "All 12 runs" in markdown
    assert "| csd | 10 | 1e-05 | 8.00 (2) | 5.00 | 5.00 |" in markdown  # its best epoch, test at best and last
    assert "the runs alone: 0.31 core-hours (each one's time x its torch threads; 6 run(s) without a thread count" \
        in markdown
    for key in ("run_core_s", "runs_without_threads", "other_rate_runs"):  # a JSON written before these were kept
        del results[key]
    assert "core-hours" not in cpu_protocol_report.markdown(results)


# ---------------------------------------------------------------------- an edge decided at the protocol's budget
class FakeProtocol:
    """cached / run / log of a ProtocolSweep over records given as {run name: best validation ROUGE-L}; ``busy``
    names raise Busy (another process trains them) the first ``busy_for`` times they are asked to run."""

    def __init__(self, best: dict, trainable=(), busy=(), busy_for: int = 1, epochs: int = 20):
        self.best, self.trainable, self.busy, self.busy_for = dict(best), dict(trainable), set(busy), busy_for
        self.base = type("Base", (), {"train": type("Train", (), {"epochs": epochs})()})()
        self.trained, self.asked, self.logged = [], {}, []

    def record(self, name: str) -> dict:
        return {"epochs": [{"epoch": 1, "rougeL": self.best[name] - 1}, {"epoch": 2, "rougeL": self.best[name]}]}

    def cached(self, point):
        return self.record(point.name) if point.name in self.best else None

    def run(self, point):
        self.asked[point.name] = self.asked.get(point.name, 0) + 1
        if point.name in self.busy and self.asked[point.name] <= self.busy_for:
            raise cpu_protocol.Busy(point.name)
        if (record := self.cached(point)) is not None:  # another process finished it
            return record
        self.trained.append(point.name)
        self.best[point.name] = self.trainable[point.name]
        return self.record(point.name)

    def log(self, line: str) -> None:
        self.logged.append(line)


def edge_selection() -> dict:
    """CSD's search as it ran here: 1e-5 at the lower edge after two extensions; the grid alone chose 1e-4."""
    csd = {"0.001": 11.11, "0.0003": 11.01, "0.0001": 11.90, "3e-05": 11.94, "1e-05": 13.06}
    fkl = {"0.0001": 9.5, "0.0003": 13.9, "0.001": 13.3}
    return {"csd": {**choose_lr([1e-4, 3e-4, 1e-3], scorer(csd)[0], 2), "sources": {"1e-05": "trained"}},
            "fkl": {**choose_lr([1e-4, 3e-4, 1e-3], scorer(fkl)[0], 2), "sources": {}}}


@pytest.mark.parametrize("up, chosen, compared, side", [
    ({"0.0001": 14.0, "0.0003": 13.5}, 1e-4, ["1e-05", "0.0001", "0.0003"], ""),  # 1e-4 wins; 3e-4 above it loses
    ({"0.0001": 12.0}, 1e-5, ["1e-05", "0.0001"], "; it is the lowest rate the search tried"),  # the edge wins
    ({"0.0001": 12.73}, 1e-5, ["1e-05", "0.0001"], "; it is the lowest rate the search tried"),  # tie: the edge
    ({"0.0001": 14.99, "0.0003": 22.49, "0.001": 20.0}, 3e-4, ["1e-05", "0.0001", "0.0003", "0.001"], ""),  # walks up
    ({"0.0001": 14.0, "0.0003": 15.0, "0.001": 16.0}, 1e-3, ["1e-05", "0.0001", "0.0003", "0.001"],
     "; it is the highest rate the search tried")])
def test_an_edge_rate_is_decided_over_the_protocols_epochs(up, chosen, compared, side):
    """The 20-epoch comparison starts with the edge (1e-5) and the grid's choice (1e-4), and takes in the next rate
    the search tried while the better one is the highest (or lowest) compared: bracketed, or at the edge of the rates
    tried, said."""
    protocol = FakeProtocol({"csd_lr1e-05_seed10": 12.73, **{f"csd_lr{lr}_seed10": v for lr, v in up.items()}})
    selections = edge_selection()
    cpu_protocol.check_edges(protocol, selections, seed=10, train=False)
    csd = selections["csd"]
    assert csd["chosen"] == chosen and csd["search_chosen"] == 1e-5 and "undecided" not in csd
    assert list(csd["budget_check"]["best_validation"]) == compared
    assert csd["budget_check"]["candidates"] == [float(lr) for lr in compared]
    assert f"is {max(up.values()) if chosen != 1e-5 else 12.73:.2f} at {chosen:g} against" in csd["budget_check"]["reason"]
    assert csd["budget_check"]["reason"].endswith(side or "")
    assert ("the search tried" in csd["budget_check"]["reason"]) is bool(side)
    assert "budget_check" not in selections["fkl"] and selections["fkl"]["chosen"] == 3e-4  # inside: untouched
    cpu_protocol.borrow(selections, ["csd", "csd_TS"])
    assert selections["csd_TS"] == {"from": "csd", "chosen": chosen}
    lines = cpu_protocol_report.selection_lines(selections)
    assert any(line.startswith("| csd, checked over the protocol's epochs (seed 10") and f"| {chosen:g} |" in line
               for line in lines)


def test_an_upper_edge_walks_down_the_rates_the_search_tried():
    """The mirror of CSD's case: a search that ends at its upper edge (1e-2 after two extensions) walks down from the
    grid's choice (1e-3) while the better rate is the lowest compared, the nearest tried rate first."""
    search = {"0.0001": 1.0, "0.0003": 2.0, "0.001": 3.0, "0.003": 4.0, "0.01": 5.0}
    selections = {"sft": choose_lr([1e-4, 3e-4, 1e-3], scorer(search)[0], 2)}
    assert selections["sft"]["chosen"] == 1e-2 and selections["sft"]["edge"] == "upper"
    protocol = FakeProtocol({"sft_lr0.01_seed10": 10.0, "sft_lr0.001_seed10": 12.0, "sft_lr0.0003_seed10": 14.0,
                             "sft_lr0.0001_seed10": 11.0})
    cpu_protocol.check_edges(protocol, selections, seed=10, train=False)
    sft = selections["sft"]
    assert sft["chosen"] == 3e-4 and sft["budget_check"]["candidates"] == [1e-2, 1e-3, 3e-4, 1e-4]
    assert sft["budget_check"]["reason"].endswith("14.00 at 0.0003 against 12.00 at 0.001, 11.00 at 0.0001, 10.00 at "
                                                  "0.01")


def test_the_walk_waits_for_the_next_rates_run():
    protocol = FakeProtocol({"csd_lr1e-05_seed10": 12.73, "csd_lr0.0001_seed10": 14.0})
    selections = edge_selection()
    cpu_protocol.check_edges(protocol, selections, seed=10, train=False)
    csd = selections["csd"]
    assert "chosen" not in csd and csd["budget_check"]["candidates"] == [1e-5, 1e-4, 3e-4]
    assert "csd_lr0.0003_seed10 (20 epochs) is not finished" in csd["undecided"] and "reason" not in csd["budget_check"]


def test_an_edge_rate_waits_for_its_check_run():
    protocol = FakeProtocol({"csd_lr1e-05_seed10": 12.73, "csd_lr0.0003_seed10": 13.0},
                            trainable={"csd_lr0.0001_seed10": 14.0}, busy={"csd_lr0.0001_seed10"})
    selections = edge_selection()
    cpu_protocol.check_edges(protocol, selections, seed=10, train=False)  # a dry run trains nothing
    assert "chosen" not in selections["csd"] and selections["csd"]["busy"] is False and protocol.asked == {}
    assert "csd_lr0.0001_seed10 (20 epochs) is not finished" in selections["csd"]["undecided"]
    cpu_protocol.borrow(selections, ["csd", "csd_mix"])
    assert selections["csd_mix"] == {"from": "csd", "undecided": "csd's rate is undecided", "busy": False}
    assert cpu_protocol.plan({"csd": ["loss=csd"]}, [10], selections)[0]["point"] is None
    selections = edge_selection()
    cpu_protocol.check_edges(protocol, selections, seed=10, train=True)  # another process holds it
    assert selections["csd"]["busy"] is True and "another process" in selections["csd"]["undecided"]
    selections = edge_selection()
    cpu_protocol.check_edges(protocol, selections, seed=10, train=True)  # free now: trained here
    assert selections["csd"]["chosen"] == 1e-4 and protocol.trained == ["csd_lr0.0001_seed10"]


def test_no_check_when_the_search_could_not_extend():
    selections = {"csd": choose_lr([1e-4, 3e-4], scorer({"0.0001": 2.0, "0.0003": 1.0})[0], 0)}
    assert selections["csd"]["edge"] == "lower"
    cpu_protocol.check_edges(FakeProtocol({}), selections, seed=10, train=True)
    assert selections["csd"]["chosen"] == 1e-4 and "budget_check" not in selections["csd"]


def test_two_processes_share_the_runs_and_the_rates_follow_the_check():
    """This process finds the check run taken by another one: it trains what is free (fkl), waits, then reads the
    check back and trains the CSD rows at the rate it chose."""
    best = {"csd_lr1e-05_seed10": 12.73, "csd_lr0.0003_seed10": 13.0}  # 3e-4: finished by the other process
    trainable = {"csd_lr0.0001_seed10": 14.0, "fkl_lr0.0003_seed10": 20.0, "csd_lr0.0001_seed20": 13.0,
                 "csd_TS_lr0.0001_seed10": 10.0, "csd_TS_lr0.0001_seed20": 10.0, "fkl_lr0.0003_seed20": 19.0}
    protocol = FakeProtocol(best, trainable, busy={"csd_lr0.0001_seed10", "fkl_lr0.0003_seed20"}, busy_for=2)
    rows = {"fkl": ("loss=fkl",), "csd": ("loss=csd",), "csd_TS": ("loss=csd",)}
    reports = []

    def decide():
        selections = edge_selection()
        cpu_protocol.check_edges(protocol, selections, 10, True)
        cpu_protocol.borrow(selections, list(rows))
        return selections, cpu_protocol.plan(rows, [10, 20], selections)
    selections, runs = cpu_protocol.run_protocol(protocol, decide, lambda s, r: reports.append(len(s)), wait_s=0)
    assert selections["csd"]["chosen"] == 1e-4 and all(run["point"] for run in runs)
    assert all(protocol.cached(run["point"]) for run in runs)
    # fkl seed 10 while the check was busy; the check once the other process let it go, then the CSD rows at its
    # rate; fkl seed 20 was busy once more, so csd seed 20 went before it
    assert protocol.trained == ["fkl_lr0.0003_seed10", "csd_lr0.0001_seed10", "csd_TS_lr0.0001_seed10",
                                "csd_lr0.0001_seed20", "fkl_lr0.0003_seed20", "csd_TS_lr0.0001_seed20"]
    assert any(line.startswith("waiting 0 s for another process: csd") for line in protocol.logged)
    assert len(reports) == len(trainable) - 1  # the check run is trained inside decide(): not a planned run's report


def test_a_point_lock_is_held_by_one_process_and_freed_when_it_dies(tmp_path):
    import subprocess
    import time

    from csd.inputs import one_line_errors
    from csd.sweep import Busy, point_lock

    (tmp_path / "point").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, fcntl; h = open(sys.argv[1], 'a'); fcntl.flock(h, fcntl.LOCK_EX); print('held', flush=True); "
        "time.sleep(600)"), str(tmp_path / "point" / "lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match="another process"):
            with point_lock(tmp_path / "point"):
                pytest.fail("the lock was taken twice")
        # mini_table1.py or cpu_frontier.py started while another process trains the same point: one line, no traceback
        with pytest.raises(SystemExit, match=r"^mini_table1.py: error: .*point is being trained by another process; "
                           "wait for it to finish or stop it"):
            with one_line_errors("mini_table1.py"), point_lock(tmp_path / "point"):
                pass
    finally:
        holder.kill()
        holder.wait()
    deadline = time.time() + 30
    while True:  # the kernel drops a killed process's lock
        try:
            with point_lock(tmp_path / "point"):
                break
        except Busy:
            assert time.time() < deadline, "the lock outlived its process"
            time.sleep(0.1)


# ---------------------------------------------------------------------- a row still rising: one probe run
def test_a_row_still_rising_at_its_last_epoch_gets_one_probe_at_the_next_rate_up(tmp_path):
    from types import SimpleNamespace

    selections = edge_selection()
    selections["csd"].update(chosen=1e-4, search_chosen=1e-5, budget_check={"seed": 10, "candidates": [1e-5, 1e-4],
                                                                             "reason": "1e-4 wins"})
    cpu_protocol.borrow(selections, ["csd", "fkl", "csd_TS"])
    rows = {"csd": ("loss=csd",), "fkl": ("loss=fkl",), "csd_TS": ("loss=csd", "loss.weighting=TS")}
    runs = cpu_protocol.plan(rows, [10, 20], selections)
    rising, peaked = (5.0, 6.0, 7.0), (5.0, 8.0, 7.0)
    store = {run["point"].name: {**fake_record(run["row"], run["seed"], 15.0, 0.8, curve=rising), "lr": run["lr"]}
             for run in runs}
    store["fkl_lr0.0003_seed20"] = {**fake_record("fkl", 20, 20.0, 0.9, curve=peaked), "lr": 3e-4}  # fkl peaked once
    protocol = SimpleNamespace(cached=lambda point: store.get(point.name))
    probes = cpu_protocol.rising_probes(protocol, selections, runs, seed=10)
    # csd: both seeds peak at epoch 3 of 3, its search tried 3e-4 next; fkl: seed 20 peaked at 2; csd_TS: a borrowed rate
    assert [(p["row"], p["lr"], p["point"].name, p["probe"]) for p in probes] == [
        ("csd", 3e-4, "csd_lr0.0003_seed10", True)]
    assert probes[0]["point"].overrides == ("loss=csd",)
    selections["csd"]["budget_check"]["candidates"].append(3e-4)  # compared over the epochs already: no probe
    assert cpu_protocol.rising_probes(protocol, selections, runs, seed=10) == []
    selections["csd"]["budget_check"]["candidates"].pop()
    del store["csd_lr0.0001_seed20"]  # a planned run not finished: no probe yet
    assert cpu_protocol.rising_probes(protocol, selections, runs, seed=10) == []
    store["csd_lr0.0001_seed20"] = store["csd_lr0.0001_seed10"]
    selections["csd"]["chosen"] = 1e-3  # nothing above the highest rate tried
    csd_only = cpu_protocol.plan({"csd": ("loss=csd",)}, [10], selections)
    assert cpu_protocol.rising_probes(protocol, selections, csd_only, 10) == []
    # the report: the probe beside the chosen rate's seed-10 run, counted in the compute, out of the tables
    base = fake_results(15.0, 0.8)
    planned = [{"row": r["row"], "seed": r["seed"], "lr": r["lr"]} for r in base["runs"]]
    unfinished = cpu_protocol_report.results_of(base["settings"], base["lr_selection"], planned, base["runs"],
                                                TABLE_96, 0.0, (), probes)
    assert unfinished["probes"][0]["finished"] is False and "| csd | 10 | 0.0003 | not finished |" in \
        cpu_protocol_report.markdown(unfinished)
    for best, verdict in ((16.0, "higher: 0.0001 may hold csd back at this budget"), (7.5, "not higher: 0.0001 stands")):
        probe = {**fake_record("csd", 10, 30.0, 0.8, curve=(5.0, best, 7.0)), "lr": 3e-4, "wall_s": 300.0, "threads": 2}
        results = cpu_protocol_report.results_of(base["settings"], base["lr_selection"], planned, base["runs"],
                                                 TABLE_96, 0.0, (), probes, [probe])
        line = results["probes"][0]
        assert (line["chosen_lr"], line["chosen_best_validation"], line["best_validation"]) == (1e-4, 8.0, best)
        assert line["higher_validation"] is (best > 8.0) and line["test_rougeL"] == 30.0 and line["best_epoch"] == 2
        # csd's mean 15.0 ranks 3rd of 6: only sft (30) and fkl (20) are above it (csd_mix's equal 15.0 is not);
        # 30.0 would tie sft: 1st (only a higher mean ranks above)
        assert (line["rank_chosen"], line["rank_with_probe"], line["of"]) == (3, 1, 6)
        assert results["probe_runs"] == [probe] and results["compute_s"] == 1200.0 + 300.0
        assert results["test_best"]["csd"]["rougeL"]["mean"] == 15.0  # the probe is not in the table
        cpu_protocol_report.write(results, tmp_path)
        markdown = (tmp_path / "cpu_protocol.md").read_text()
        assert "## Probes: a row whose runs all peak at their last epoch" in markdown and verdict in markdown
        assert f"| csd | 10 | 0.0003 | {best:.2f} (2) | 30.00 |" in markdown and "with the 1 probe run(s)" in markdown
        assert "; by test ROUGE-L csd ranks 3 of 6 at 0.0001, and would rank 1 with this one seed's score" in markdown
    assert "## Probes" not in cpu_protocol_report.markdown(base)

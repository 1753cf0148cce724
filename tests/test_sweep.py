"""The CPU sweep behind scripts/mini_table1.py and scripts/cpu_frontier.py (csd/sweep.py): learning rate chosen on
validation only, finished runs read back (resume), changed settings run again, the diversity metrics, the NLL of the
references, the Pareto set and the frontier's claim checks."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import cpu_frontier  # noqa: E402
import mini_table1  # noqa: E402

from csd.metrics import diversity, mean_words, self_bleu  # noqa: E402
from csd.sweep import PairModels, Point, Sweep, aggregate, pareto_set, reference_nll  # noqa: E402
from csd.testing import make_tiny_model, make_tiny_tokenizer  # noqa: E402

QUICKSTART = Path(__file__).resolve().parents[1] / "data" / "quickstart"


# ------------------------------------------------------------------ metrics by hand
def test_self_bleu_identical_and_disjoint_texts():
    assert self_bleu(["the cat sat on the mat today"] * 3) == pytest.approx(100.0)
    assert self_bleu(["alpha beta gamma delta", "one two three four", "red green blue yellow"]) == pytest.approx(0.0)
    assert self_bleu(["only one text here"]) == 0.0
    # one text repeated, one different: the repeated pair scores 100 against each other, the odd one 0 -> mean 2/3
    texts = ["a b c d e f", "a b c d e f", "u v w x y z"]
    assert self_bleu(texts) == pytest.approx(200 / 3)
    # case-insensitive, like distinct-n
    assert self_bleu(["The Cat sat on the mat", "the cat sat on the mat"]) == pytest.approx(100.0)


def test_summaries_use_the_sample_std():
    from csd.sweep import summarise

    assert summarise([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3}  # population std would be 0.816
    assert summarise([5.0]) == {"mean": 5.0, "std": 0.0, "n": 1}


def test_mean_words_and_diversity_keys():
    assert mean_words(["a b", "c d e f", ""]) == pytest.approx(2.0)
    assert mean_words([]) == 0.0
    scores = diversity(["a b a b", "c d"])
    assert scores["distinct_1"] == pytest.approx(4 / 6) and scores["distinct_2"] == pytest.approx(3 / 4)
    assert set(scores) == {"distinct_1", "distinct_2", "self_bleu", "mean_words"} and scores["mean_words"] == 3.0
    # tokens are whitespace words, as distinct-n: "d." and "d ." differ (sacreBLEU's 13a would split the period off)
    assert self_bleu(["a b c d.", "a b c d ."]) < 99.0


def test_reference_nll_equals_a_float64_loop():
    tokenizer = make_tiny_tokenizer()
    model = make_tiny_model(tokenizer, seed=3)
    prompt, response = [5, 6, 7], [8, 9, 10, 11]
    dataset = [{"input_ids": prompt + response, "labels": [-100] * 3 + response},
               {"input_ids": [12, 13, 14], "labels": [-100, 13, 14]}]
    total, count = 0.0, 0
    with torch.no_grad():
        for example in dataset:
            logits = model(torch.tensor([example["input_ids"]])).logits[0].double()
            for position in range(1, len(example["labels"])):
                if example["labels"][position] != -100:
                    total -= torch.log_softmax(logits[position - 1], -1)[example["labels"][position]].item()
                    count += 1
    nll = reference_nll(model, tokenizer, dataset, precision="no", batch_size=2)
    assert nll == pytest.approx(total / count, rel=1e-5)


# ------------------------------------------------------------------ Pareto set and claims
def test_pareto_set_by_hand():
    points = {"a": (10, 50), "b": (12, 40), "c": (9, 45), "d": (12, 40), "e": (5, 90), "f": (12, 39)}
    # c is dominated by a; f by b; b and d are equal: neither dominates the other
    assert pareto_set(points) == ["a", "b", "d", "e"]
    assert pareto_set({}) == []


def synthetic_results() -> dict:
    def row(rouge, d2, sb=10.0, lr=1e-4, n=3):
        stats = lambda v: {"mean": v, "std": 0.5, "n": n}  # noqa: E731
        return {"rougeL": stats(rouge), "distinct_1": stats(d2 / 2), "distinct_2": stats(d2), "self_bleu": stats(sb),
                "mean_words": stats(10.0), "nll": stats(3.0), "seeds": [10, 20, 30][:n], "lr": lr}
    rows = {"teacher": row(30, 0.9, lr=None), "student_init": row(1, 0.99, lr=None), "fkl": row(9, 0.97, 5),
            "rkl": row(10, 0.80, 20), "srkl": row(14, 0.85, 15), "csd": row(12, 0.84, 12),
            "csd_US": row(8, 0.95), "csd_TS": row(11, 0.9), "csd_mix": row(12.5, 0.8),
            "csd_tau0.5": row(10, 0.7), "csd_tau1.5": row(11, 0.9), "csd_tau2": row(13, 0.95)}
    shift = {10: -1.0, 20: 0.0, 30: 3.0}  # csd's ROUGE-L per seed around its mean: above srkl's 14 in seed 30 only
    runs = [{"row": r, "seed": seed, "scores": {k: s[k]["mean"] + (shift[seed] if (r, k) == ("csd", "rougeL") else 0)
                                                for k in ("rougeL", "distinct_2", "self_bleu")}}
            for r, s in rows.items() for seed in (10, 20, 30)]
    settings = {"seeds": [10, 20, 30], "steps": 4, "batch_size": 8, "precision": "bf16", "split": "test",
                "n": {"test": 64}, "decoding": {"temperature": 1.0, "no_repeat_ngram_size": 6, "max_new_tokens": 48},
                "command": "python scripts/cpu_frontier.py", "machine": "test", "threads": 1}
    return {"rows": rows, "runs": runs, "settings": settings, "lr_selection": {}, "wall_s": 1.0, "compute_s": 1.0}


def test_frontier_claims_are_computed_from_the_rows(tmp_path):
    results = synthetic_results()
    results.update(cpu_frontier.analyse(results))
    front = results["pareto"]["distinct_2"]["front"]
    # srkl (14, 0.85) dominates csd (12, 0.84) and rkl; fkl is the most diverse KL row; teacher/student_init excluded
    assert "srkl" in front and "fkl" in front and "csd" not in front and "teacher" not in front
    assert set(front) == {"srkl", "fkl", "csd_tau2"}
    claims = results["claims"]
    assert claims["kl_rows_dominating_csd"] == ["srkl"] and claims["kl_rows_dominated_by_csd"] == ["rkl"]
    assert claims["rougeL_ranking"][0] == "srkl" and claims["csd_highest_rougeL"] is False
    assert claims["best_temperature"] == 2.0 and claims["tau_1.5_best"] is False
    assert claims["weighting_best_rougeL"] == "mix"
    # per-seed fronts: csd is on the front only in the seed where its ROUGE-L (15) passes srkl's (14)
    assert results["pareto"]["distinct_2"]["seeds_on_front"]["csd"] == 1
    assert results["pareto"]["distinct_2"]["seeds_on_front"]["srkl"] == 3
    # self-BLEU plane: lower self-BLEU is better (fkl 5 is the most diverse)
    assert "fkl" in results["pareto"]["self_bleu"]["front"]
    markdown = cpu_frontier.report(results, tmp_path)
    assert "| srkl ★ |" in markdown and "| csd |" in markdown and "does not hold" in markdown
    cpu_frontier.figure(results, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 10_000


# ------------------------------------------------------------------ the sweep on a tiny pair
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("quickstart")
    for split, n in (("train", 8), ("validation", 3), ("test", 3)):
        lines = (QUICKSTART / f"{split}.jsonl").read_text().splitlines()[:n]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def tiny_sweep(root: Path, data: Path, steps: int = 2, log=None) -> Sweep:
    tokenizer = make_tiny_tokenizer()
    teacher = make_tiny_model(tokenizer, seed=1).eval().requires_grad_(False)
    student = make_tiny_model(tokenizer, seed=2)
    overrides = [f"data.path={data}", "data.max_new_tokens=6", "train.batch_size=2", f"train.max_steps={steps}",
                 "train.mixed_precision=no", f"output_root={root}"]
    return Sweep(overrides, experiment="sweep_test", models=PairModels(teacher, student, tokenizer),
                 log=log or (lambda _: None))


def test_lr_is_chosen_on_validation_and_finished_runs_are_read_back(tmp_path, tiny_data, monkeypatch):
    import csd.train

    sweep = tiny_sweep(tmp_path, tiny_data)
    rows = {"csd": ("loss=csd",), "fkl": ("loss=fkl",), "csd_TS": ("loss=csd", "loss.weighting=TS")}
    outcome = mini_table1.run_rows(sweep, rows, [10, 20], [1e-4, 3e-2], lr_from={"csd_TS": "csd"}, edge_extensions=0)
    assert [outcome["lr_selection"][row]["seed"] for row in ("csd", "fkl")] == [10, 10]
    assert len(outcome["grid_records"]) == 4  # 2 objectives x 2 lrs (what was chosen: the scripted test below)
    assert "csd_TS" not in outcome["lr_selection"]
    chosen = {r: outcome["lr_selection"][r]["chosen"] for r in ("csd", "fkl")}
    records = outcome["records"]
    assert [(r["row"], r["seed"]) for r in records] == [
        ("teacher", 10), ("student_init", 10), ("csd", 10), ("fkl", 10), ("csd_TS", 10),
        ("teacher", 20), ("student_init", 20), ("csd", 20), ("fkl", 20), ("csd_TS", 20)]
    assert all(r["lr"] == chosen["csd"] for r in records if r["row"].startswith("csd"))
    assert all(r["lr"] == chosen["fkl"] for r in records if r["row"] == "fkl")
    assert set(records[2]["splits"]) == {"validation", "test"} and math.isfinite(records[2]["splits"]["test"]["nll"])
    # the untrained student's NLL is the same for both seeds (no sampling in it)
    assert records[1]["splits"]["test"]["nll"] == records[6]["splits"]["test"]["nll"]
    stats = aggregate(records)
    assert stats["csd"]["rougeL"]["n"] == 2 and stats["csd"]["lr"] == chosen["csd"]

    # a second run of the same sweep trains nothing and gives the same records
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(csd.train, "run", no_training)
    again = mini_table1.run_rows(tiny_sweep(tmp_path, tiny_data), rows, [10, 20], [1e-4, 3e-2],
                                 lr_from={"csd_TS": "csd"}, edge_extensions=0)
    assert again["records"] == records and again["lr_selection"] == outcome["lr_selection"]
    # a training setting changes the trained points, not the untrained references
    longer = tiny_sweep(tmp_path, tiny_data, steps=3)
    assert longer.cached(Point("teacher", 10)) == records[0]
    assert longer.cached(Point("csd", 10, ("loss=csd",), chosen["csd"])) is None
    # a point.json left unreadable (a full disk) is run again, not a crash
    sweep.path(Point("teacher", 20)).write_text('{"row": "teach')
    assert sweep.cached(Point("teacher", 20)) is None


def test_an_interrupted_sweep_trains_only_the_missing_runs_and_new_settings_rerun(tmp_path, tiny_data, monkeypatch):
    import csd.train

    rows = {"fkl": ("loss=fkl",)}
    first = mini_table1.run_rows(tiny_sweep(tmp_path, tiny_data), rows, [10, 20], [], reference_seeds=0)
    assert [r["lr"] for r in first["records"]] == [pytest.approx(2e-4)] * 2  # no grid: the preset's lr
    sweep = tiny_sweep(tmp_path, tiny_data)
    missing = Point("fkl", 20, ("loss=fkl",), first["records"][1]["lr"])
    sweep.path(missing).unlink()  # as if the process died before writing it
    trained = []
    real_run = csd.train.run
    monkeypatch.setattr(csd.train, "run", lambda cfg, models: trained.append(cfg.run_name) or real_run(cfg, models))
    resumed = mini_table1.run_rows(sweep, rows, [10, 20], [], reference_seeds=0)
    assert trained == [missing.name]
    assert resumed["records"][0] == first["records"][0]
    # the same seed gives the same run: the retrained point equals the lost one up to its timing
    strip = lambda r: {k: v for k, v in r.items() if k not in ("wall_s", "train_s")}  # noqa: E731
    assert strip(resumed["records"][1]) == strip(first["records"][1])
    # a changed setting (one more step) is a different point: both seeds train again
    trained.clear()
    mini_table1.run_rows(tiny_sweep(tmp_path, tiny_data, steps=3), rows, [10, 20], [], reference_seeds=0)
    assert trained == ["fkl_lr0.0002_seed10", "fkl_lr0.0002_seed20"]
    # resume=False (--no-resume, the quickstart) trains finished runs again
    trained.clear()
    fresh = tiny_sweep(tmp_path, tiny_data, steps=3)
    fresh.resume = False
    mini_table1.run_rows(fresh, rows, [10], [], reference_seeds=0)
    assert trained == ["fkl_lr0.0002_seed10"]


def test_mini_table_report_files(tmp_path, tiny_data):
    sweep = tiny_sweep(tmp_path, tiny_data)
    outcome = mini_table1.run_rows(sweep, {"fkl": ("loss=fkl",)}, [10], [1e-4, 1e-3], edge_extensions=0)
    results = mini_table1.results_of(sweep, outcome, [10], [1e-4, 1e-3], "cmd", 0.0)
    markdown = mini_table1.report(results, tmp_path)
    assert "| fkl |" in markdown and "chosen" in markdown and "no_repeat_ngram_size 6" in markdown
    csv = (tmp_path / "mini_table1.csv").read_text().splitlines()
    assert csv[0].startswith("model,rougeL_mean") and len(csv) == 4  # header, teacher, student_init, fkl
    assert json.loads(json.dumps(results))["runs"][2]["scores"]["rougeL"] == results["rows"]["fkl"]["rougeL"]["mean"]


def test_the_lr_choice_reads_the_validation_split_never_the_test_split(tmp_path, tiny_data, monkeypatch):
    import csd.train

    trained_at = {}
    monkeypatch.setattr(csd.train, "run", lambda cfg, models: trained_at.update(lr=cfg.optim.lr) or
                        {"steps": 0, "wall_s": 0.0})

    def scores_by_lr(self, model, split, seed):  # validation prefers the smallest lr, test the largest
        lr = trained_at["lr"]
        rouge = -lr if split == "validation" else lr
        return ({"rougeL": rouge, "distinct_1": 0.0, "distinct_2": 0.0, "self_bleu": 0.0, "mean_words": 0.0,
                 "nll": 0.0}, ["x"] * len(self.data[split][0]))
    monkeypatch.setattr(Sweep, "evaluate", scores_by_lr)
    selection = tiny_sweep(tmp_path, tiny_data).select_lr("fkl", ("loss=fkl",), [1e-3, 1e-4, 1e-2], seed=10,
                                                          extensions=0)
    assert selection["chosen"] == 1e-4 and selection["edge"] == "lower"
    assert selection["validation"] == {"0.0001": -1e-4, "0.001": -1e-3, "0.01": -1e-2}
    # at the lower edge the grid goes on below by its own step (x10 here), twice, on validation scores only
    selection = tiny_sweep(tmp_path, tiny_data).select_lr("fkl", ("loss=fkl",), [1e-3, 1e-4, 1e-2], seed=10)
    assert selection["chosen"] == 1e-6 and selection["extended"] == [1e-5, 1e-6] and selection["edge"] == "lower"
    assert [r["lr"] for r in selection["records"]] == [1e-4, 1e-3, 1e-2, 1e-5, 1e-6]
    with pytest.raises(ValueError, match="validation"):
        Sweep(splits=("test",), models=PairModels(None, None, None)).select_lr("fkl", (), [1e-4], seed=10)


def test_runs_share_one_teacher_cache_and_equal_the_live_teacher(tmp_path, tiny_data, monkeypatch):
    """Two objectives x one seed from the cache (the sweep's default): one build from the teacher in memory, the
    trainer without the teacher's body, the same students (float32) as with the live teacher."""
    import csd.distiller
    import csd.teacher_cache

    builds, teachers = [], []
    real_build, real_train = csd.teacher_cache.build, csd.distiller.Distiller.train
    monkeypatch.setattr(csd.teacher_cache, "build", lambda folder, *a, **k: builds.append(folder) or
                        real_build(folder, *a, **k))

    def train(self):
        teachers.append((self.models.teacher, self.models.teacher_head is not None))
        return real_train(self)
    monkeypatch.setattr(csd.distiller.Distiller, "train", train)
    rows = {"fkl": ("loss=fkl",), "csd": ("loss=csd",)}
    cached = mini_table1.run_rows(tiny_sweep(tmp_path / "cache", tiny_data), rows, [10], [], reference_seeds=0)
    assert len(builds) == 1 and builds[0].parent == tmp_path / "cache" / "teacher_cache"
    assert teachers == [(None, True)] * 2  # each run: the teacher's head only
    teachers.clear()
    live_sweep = tiny_sweep(tmp_path / "live", tiny_data)
    live_sweep.common.append("train.teacher_cache=null")
    live = mini_table1.run_rows(live_sweep, rows, [10], [], reference_seeds=0)
    assert len(builds) == 1 and [held is not None for held, _ in teachers] == [True, True]
    for with_cache, with_teacher in zip(cached["records"], live["records"]):
        assert with_cache["row"] == with_teacher["row"]
        for split in ("validation", "test"):
            assert with_cache["splits"][split]["nll"] == pytest.approx(with_teacher["splits"][split]["nll"], abs=1e-5)
    # the same point whichever way the teacher is read: a finished run is not trained again for the cache
    assert live_sweep.fingerprint(Point("fkl", 10, ("loss=fkl",), 2e-4)) == \
        tiny_sweep(tmp_path / "live", tiny_data).fingerprint(Point("fkl", 10, ("loss=fkl",), 2e-4))


def test_on_policy_points_of_a_cached_sweep_run_the_live_teacher(tmp_path, tiny_data):
    sweep = tiny_sweep(tmp_path, tiny_data)
    assert sweep.config(Point("fkl", 10, ("loss=fkl",), 1e-4)).train.teacher_cache == "auto"
    assert sweep.config(Point("gkd", 10, ("loss=fkl", "batches=gkd"), 1e-4)).train.teacher_cache is None

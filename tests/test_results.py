"""scripts/collect_results.py on hand-made metrics.json files, distinct-n by hand, data/paper_results.yaml."""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from collect_results import collect, distinct_n, main  # noqa: E402


def test_distinct_n_by_hand():
    texts = ["the cat the cat", "The dog", ""]
    # unigrams: the cat the cat the dog -> 6 tokens, {the, cat, dog} 3 unique
    assert distinct_n(texts, 1) == pytest.approx(3 / 6)
    # bigrams: (the cat)(cat the)(the cat) + (the dog) -> 4, unique 3
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_n(["one"], 2) == 0.0 and distinct_n([], 1) == 0.0


def write_eval(run_dir: Path, results: dict) -> None:
    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    (run_dir / "eval" / "metrics.json").write_text(json.dumps({"results": results}))


def rouge_result(mean: float, std: float, seeds=(10, 20)) -> dict:
    return {"metric": "rougeL", "seeds": list(seeds), "mean": {"rougeL": mean, "exact_match": 0.0},
            "std": {"rougeL": std, "exact_match": 0.0}}


@pytest.fixture
def outputs(tmp_path):
    root = tmp_path / "outputs"
    for row, dolly, vicuna in (("fkl", 20.0, 15.0), ("csd", 25.0, 16.5)):
        run = root / "table1" / row
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"experiment": "table1", "run": row, "loss": row,
                                                      "best": {"val/rougeL": 1.0}}))
        write_eval(run, {"dolly": rouge_result(dolly, 0.5), "vicuna": rouge_result(vicuna, 0.25)})
    # answers for distinct-n: two seeds
    for seed, text in ((10, "a b a b"), (20, "a b c d")):
        path = root / "table1" / "csd" / "eval" / "dolly" / f"seed{seed}" / "answers.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"index": 0, "text": text}) + "\n")
    # a training-only run (no evaluation): its best value is shown
    only = root / "table3" / "gsm8k"
    only.mkdir(parents=True)
    (only / "metrics.json").write_text(json.dumps({"loss": "csd", "best": {"val/loss": 0.75}}))
    write_eval(root / "table3" / "mt", {"translation": {"metric": "bleu", "seeds": [10], "mean": {"bleu": 9.0},
                                                        "std": {"bleu": 0.0}}})
    # training seeds of one row, merged: mean and sample std over seeds
    for seed, value in ((10, 10.0), (20, 14.0), (30, 12.0)):
        write_eval(root / "mini_table1" / f"tvd_seed{seed}", {"quickstart": rouge_result(value, 0.0, seeds=[seed])})
    # Table 4: answer files only
    write_eval(root / "table4" / "qwen", {"mt_bench": {"format": "fastchat_model_answer", "answer_file": "x"}})
    reference = tmp_path / "paper.yaml"
    reference.write_text(yaml.safe_dump({"tables": {"table1": {"cells": {"csd": {"dolly": 24.0}, "fkl": {"dolly": None}}},
                                                    "table3": {"cells": {"mt": {"translation": 10.5}}}}}))
    return root, reference


def test_table_shape_reference_and_difference(outputs):
    root, reference = outputs
    collected = collect(root, reference=reference)
    rows, sets, grid = collected.grid("table1")
    assert sorted(rows) == ["csd", "fkl"] and sets == ["dolly", "vicuna", "average"]
    assert grid[("csd", "average")].mean == pytest.approx((25.0 + 16.5) / 2) and grid[("csd", "average")].std is None
    csd = grid[("csd", "dolly")]
    assert (csd.mean, csd.std, csd.n, csd.paper, csd.diff) == (25.0, 0.5, 2, 24.0, pytest.approx(1.0))
    assert grid[("fkl", "dolly")].paper is None and grid[("fkl", "dolly")].diff is None  # blank reference
    assert grid[("csd", "vicuna")].paper is None
    # distinct-2 of the answers: seed 10 "a b a b" -> 2/3, seed 20 "a b c d" -> 3/3; mean over seeds
    assert csd.distinct_2 == pytest.approx((2 / 3 + 1) / 2)
    assert csd.distinct_1 == pytest.approx((2 / 4 + 4 / 4) / 2)
    mt = collected.grid("table3")[2][("mt", "translation (BLEU)")]
    assert (mt.metric, mt.mean, mt.diff) == ("bleu", 9.0, pytest.approx(-1.5))
    assert collected.grid("table3")[2][("gsm8k", "val/loss")].mean == 0.75


def test_training_seeds_are_merged(outputs):
    root, reference = outputs
    cell = collect(root, tables=["mini_table1"], reference=reference).grid("mini_table1")[2][("tvd", "quickstart")]
    assert (cell.mean, cell.n) == (12.0, 3)
    assert cell.std == pytest.approx(2.0)  # sample std of 10, 14, 12


def test_markdown_and_csv(outputs, tmp_path):
    root, reference = outputs
    collected = main(["--root", str(root), "--reference", str(reference), "--out", str(tmp_path / "res")])
    markdown = (tmp_path / "res" / "results.md").read_text()
    assert "| row | dolly | vicuna | average |" in markdown
    assert "| csd | 25.00 ± 0.50 [24.00, +1.00] | 16.50 ± 0.25 | 20.75 |" in markdown
    assert "| fkl | 20.00 ± 0.50 | 15.00 ± 0.25 | 17.50 |" in markdown
    assert "| qwen | answers written |" in markdown
    assert "| tvd | 12.00 ± 2.00 |" in markdown
    rows = list(csv.DictReader(io.StringIO((tmp_path / "res" / "results.csv").read_text())))
    assert len(rows) == len(collected.cells)
    csd = next(r for r in rows if (r["table"], r["row"], r["eval_set"]) == ("table1", "csd", "dolly"))
    assert (float(csd["mean"]), float(csd["paper"]), float(csd["diff"])) == (25.0, 24.0, 1.0)
    fkl = next(r for r in rows if (r["table"], r["row"], r["eval_set"]) == ("table1", "fkl", "dolly"))
    assert fkl["paper"] == "" and fkl["diff"] == ""


# ------------------------------------------------------------------ the shipped data/paper_results.yaml
PAPER_FILE = REPO / "data" / "paper_results.yaml"
TABLE1_SETS = ["dolly", "self_inst", "vicuna", "sinst", "uinst"]


def placed_cells():
    data = yaml.safe_load(PAPER_FILE.read_text())
    return {(t, r, s): c for t, spec in data["tables"].items() for r, cells in (spec.get("cells") or {}).items()
            for s, c in cells.items()}, data


def test_paper_results_every_cell_has_source_and_is_unverified():
    cells, data = placed_cells()
    assert len(cells) == 4 * 6 + 1 + 3 * 3 + 2
    assert all(isinstance(c["value"], float) and c["source"] and c["verified"] is False and c["metric"]
               for c in cells.values())
    # the numbers PAPER.md does not attribute to a row stay out of every cell
    unplaced = sorted(v["value"] for v in data["unplaced"]["values"])
    assert unplaced == [7.85, 21.81] and not {c["value"] for c in cells.values()} & set(unplaced)
    # each Table 1 average is the mean of its five cells (two decimals)
    for row in ("fkl", "rkl", "srkl", "csd"):
        five = [cells[("table1", row, s)]["value"] for s in TABLE1_SETS]
        assert cells[("table1", row, "average")]["value"] == pytest.approx(sum(five) / 5, abs=0.005), row
    assert ("table1", "sft", "dolly") not in cells and ("table4", "gemma2", "mt_bench") not in cells


def test_shipped_paper_values_beside_ours(tmp_path):
    """Known cells appear with their value and the difference; unknown cells stay blank; a value is never put beside
    another metric (Table 3's COMET beside our BLEU); GSM8K's headline is the strict accuracy."""
    root = tmp_path / "outputs"
    for row, base in (("csd", 25.0), ("sft", 20.0)):
        write_eval(root / "table1" / row, {s: rouge_result(base + i, 0.1) for i, s in enumerate(TABLE1_SETS)})
    (root / "table3" / "gsm8k").mkdir(parents=True)
    (root / "table3" / "gsm8k" / "metrics.json").write_text(json.dumps({"loss": "csd"}))
    write_eval(root / "table3" / "gsm8k", {"gsm8k": {  # a file without "primary": the fallback is the strict one
        "metric": "gsm8k_accuracy", "seeds": [10], "mean": {"accuracy": 30.0, "accuracy_strict": 27.0},
        "std": {"accuracy": 0.0, "accuracy_strict": 0.0}}})
    (root / "table3" / "mt").mkdir(parents=True)
    (root / "table3" / "mt" / "metrics.json").write_text(json.dumps({"loss": "csd"}))
    write_eval(root / "table3" / "mt", {"translation": {"metric": "bleu", "seeds": [10], "mean": {"bleu": 9.0},
                                                        "std": {"bleu": 0.0}}})
    write_eval(root / "table4" / "qwen", {"mt_bench": {"format": "fastchat_model_answer", "answer_file": "x"}})
    collected = collect(root, reference=PAPER_FILE)
    rows, sets, grid = collected.grid("table1")
    assert sets == [*TABLE1_SETS, "average"]
    dolly = grid[("csd", "dolly")]
    assert (dolly.paper, dolly.diff, dolly.paper_verified) == (24.94, pytest.approx(25.0 - 24.94), False)
    average = grid[("csd", "average")]
    assert (average.mean, average.paper, average.diff) == (27.0, 20.65, pytest.approx(27.0 - 20.65))
    assert all(grid[("sft", s)].paper is None and grid[("sft", s)].diff is None for s in sets)   # unknown: blank
    _, sets3, grid3 = collected.grid("table3")
    assert sets3 == ["gsm8k", "gsm8k (accuracy)", "translation (BLEU)"]
    strict, loose = grid3[("gsm8k", "gsm8k")], grid3[("gsm8k", "gsm8k (accuracy)")]
    assert (strict.metric, strict.mean, strict.paper, strict.diff) == ("accuracy_strict", 27.0, 25.78,
                                                                       pytest.approx(27.0 - 25.78))
    assert (loose.metric, loose.mean, loose.paper) == ("accuracy", 30.0, None)
    assert grid3[("mt", "translation (BLEU)")].paper is None  # the paper's 74.14 is COMET, ours BLEU
    markdown = collected.markdown
    assert "| csd | 25.00 ± 0.10 [24.94, +0.06] |" in markdown and "| 27.00 [20.65, +6.35] |" in markdown
    assert "| sft | 20.00 ± 0.10 | 21.00 ± 0.10 |" in markdown
    assert "| gsm8k | 27.00 [25.78, +1.22] | 30.00 |" in markdown
    assert "| qwen | answers written [5.95] |" in markdown
    assert "verified: false" in markdown


def test_translation_columns_name_their_metric_and_the_papers_comet_sits_beside_comet_only(tmp_path):
    """Table 3's translation: BLEU always, COMET when the optional extra ran; each column says which, and the paper's
    COMET (74.14 for CSD) goes beside our COMET, never beside BLEU."""
    root = tmp_path / "outputs"
    for row, scores in (("mt", {"bleu": 9.0, "comet": 70.0}), ("mt_no_comet", {"bleu": 8.0})):
        (root / "table3" / row).mkdir(parents=True)
        (root / "table3" / row / "metrics.json").write_text(json.dumps({"loss": "csd"}))
        write_eval(root / "table3" / row, {"translation": {
            "metric": "bleu", "primary": "bleu", "secondary": ["comet"], "seeds": [10], "mean": scores,
            "std": {k: 0.0 for k in scores}}})
    collected = collect(root, reference=PAPER_FILE)
    rows, sets, grid = collected.grid("table3")
    assert sets == ["translation (BLEU)", "translation (COMET)"]
    bleu, comet = grid[("mt", "translation (BLEU)")], grid[("mt", "translation (COMET)")]
    assert (bleu.metric, bleu.mean, bleu.paper) == ("bleu", 9.0, None)
    assert (comet.metric, comet.mean, comet.paper, comet.diff) == ("comet", 70.0, 74.14, pytest.approx(70.0 - 74.14))
    assert ("mt_no_comet", "translation (COMET)") not in grid and grid[("mt_no_comet", "translation (BLEU)")].paper is None
    assert "| row | translation (BLEU) | translation (COMET) |" in collected.markdown
    assert "| mt | 9.00 | 70.00 [74.14, -4.14] |" in collected.markdown
    assert "| mt_no_comet | 8.00 |  |" in collected.markdown
    # an evaluation file from before "secondary" was recorded still gets its COMET column
    write_eval(root / "table3" / "mt", {"translation": {"metric": "bleu", "seeds": [10], "mean": {"bleu": 9.0, "comet": 70.0},
                                                        "std": {"bleu": 0.0, "comet": 0.0}}})
    assert collect(root, reference=PAPER_FILE).grid("table3")[2][("mt", "translation (COMET)")].paper == 74.14
    # a paper value that names no metric is the set's headline (BLEU here), never a secondary column's
    reference = tmp_path / "paper.yaml"
    reference.write_text(yaml.safe_dump({"tables": {"table3": {"rows_by": "loss", "cells": {"csd": {"translation": 10.5}}}}}))
    grid = collect(root, reference=reference).grid("table3")[2]
    assert (grid[("mt", "translation (BLEU)")].paper, grid[("mt", "translation (COMET)")].paper) == (10.5, None)

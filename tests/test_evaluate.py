"""End-to-end evaluation on a tiny saved checkpoint and fixture eval sets (offline).

Per-seed scores are recomputed from the written answers.jsonl with rouge-score directly,
and mean ± std with the statistics module, independently of csd.evaluate's own code.
"""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from rouge_score import rouge_scorer

from csd.data import load_data_config
from csd.evaluate import run_evaluation
from csd.testing import fixture_data_config as fixture_config, save_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-llama", arch="llama")


def compose_eval(overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def test_sampled_and_greedy_sets(tmp_path, checkpoint):
    inst = fixture_config(tmp_path, "uinst", "uinst/11_", max_new_tokens=6)
    gsm = fixture_config(tmp_path, "gsm8k", "gsm8k", max_new_tokens=6)
    out = tmp_path / "eval"
    cfg = compose_eval([f"model.name_or_path={checkpoint}", f"eval_sets=[{inst},{gsm}]", "seeds=[10,20]",
                        f"output_dir={out}", "progress=false", "device=cpu"])
    run_evaluation(cfg)
    report = json.loads((out / "metrics.json").read_text())
    sampled = report["results"]["uinst"]
    assert sampled["seeds"] == [10, 20] and sampled["n_examples"] == 2
    assert sampled["settings"]["do_sample"] is True and sampled["settings"]["top_k"] == 0
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    per_seed = []
    for seed in (10, 20):
        rows = [json.loads(line) for line in (out / "uinst" / f"seed{seed}" / "answers.jsonl").open()]
        assert len(rows) == 2 and all(set(r) >= {"prompt", "text", "references"} for r in rows)
        recomputed = 100 * statistics.fmean(
            max(scorer.score(ref, r["text"])["rougeL"].fmeasure for ref in r["references"]) for r in rows)
        assert sampled["per_seed"][str(seed)]["rougeL"] == pytest.approx(recomputed)
        per_seed.append(recomputed)
    assert sampled["mean"]["rougeL"] == pytest.approx(statistics.fmean(per_seed))
    assert sampled["std"]["rougeL"] == pytest.approx(statistics.stdev(per_seed))
    greedy = report["results"]["gsm8k"]
    assert greedy["seeds"] == [10] and greedy["settings"]["do_sample"] is False
    assert set(greedy["mean"]) == {"accuracy", "accuracy_strict"}
    assert greedy["settings"]["stop_strings"] == ["\n\n"]


def test_no_repeat_ngram_size_reaches_generate_and_is_recorded(tmp_path, checkpoint, monkeypatch):
    """Instruction sets decode with no_repeat_ngram_size 6 (MiniLLM/DistiLLM evaluate_main default), greedy
    Table 3 sets with 0; the value passed to generate is the one written into metrics.json."""
    import csd.evaluate

    passed = []

    def spy(model, tokenizer, prompts, **settings):
        passed.append(settings["no_repeat_ngram_size"])
        return ["" for _ in prompts]

    monkeypatch.setattr(csd.evaluate, "generate", spy)
    inst = fixture_config(tmp_path, "uinst", "uinst/11_")
    gsm = fixture_config(tmp_path, "gsm8k", "gsm8k")
    out = tmp_path / "eval"
    overrides = [f"model.name_or_path={checkpoint}", f"eval_sets=[{inst},{gsm}]", "seeds=[10]",
                 f"output_dir={out}", "progress=false", "device=cpu"]
    run_evaluation(compose_eval(overrides))
    results = json.loads((out / "metrics.json").read_text())["results"]
    assert passed == [6, 0]
    assert results["uinst"]["settings"]["no_repeat_ngram_size"] == 6
    assert results["gsm8k"]["settings"]["no_repeat_ngram_size"] == 0
    passed.clear()
    run_evaluation(compose_eval(overrides + ["generation.no_repeat_ngram_size=3"]))
    results = json.loads((out / "metrics.json").read_text())["results"]
    assert passed == [3, 3] and results["uinst"]["settings"]["no_repeat_ngram_size"] == 3


def test_gsm8k_headline_is_the_strict_accuracy(tmp_path, checkpoint, monkeypatch, capsys):
    """The paper reports the strict '####' answer: it is the set's primary metric in metrics.json and in the summary
    line; the loose extraction is recorded as secondary."""
    import csd.evaluate

    monkeypatch.setattr(csd.evaluate, "generate", lambda model, tokenizer, prompts, **settings: ["18"] * len(prompts))
    gsm = fixture_config(tmp_path, "gsm8k", "gsm8k")
    out = tmp_path / "eval"
    run_evaluation(compose_eval([f"model.name_or_path={checkpoint}", f"eval_sets=[{gsm}]", "seeds=[10]",
                                 f"output_dir={out}", "progress=false", "device=cpu"]))
    result = json.loads((out / "metrics.json").read_text())["results"]["gsm8k"]
    assert (result["primary"], result["secondary"]) == ("accuracy_strict", ["accuracy"])
    # "18" without '####' is wrong under the strict rule (headline 0) though the loose one finds 18
    assert result["mean"]["accuracy_strict"] == 0.0 and result["mean"]["accuracy"] > 0
    assert "gsm8k        accuracy_strict    0.00" in capsys.readouterr().out


def test_shipped_decoding_follows_the_release():
    """n-gram blocking 6 where the release evaluates with MiniLLM/DistiLLM's evaluate_main, 0 elsewhere."""
    expected = {"dolly": 6, "self_inst": 6, "vicuna": 6, "sinst": 6, "uinst": 6, "quickstart": 6, "tiny": 6,
                "gsm8k": 0, "dialogsum": 0, "translation": 0, "mt_bench": 0, "alpaca_eval": 0}
    for name, size in expected.items():
        assert load_data_config(name)["no_repeat_ngram_size"] == size, name


def test_chat_benchmark_answer_files(tmp_path, checkpoint):
    mt_bench = fixture_config(tmp_path, "mt_bench", "mt_bench", max_new_tokens=4)
    alpaca = fixture_config(tmp_path, "alpaca_eval", "alpaca_eval", max_new_tokens=4)
    out = tmp_path / "eval"
    cfg = compose_eval([f"model.name_or_path={checkpoint}", f"eval_sets=[{mt_bench},{alpaca}]",
                        "model.model_id=tiny-csd", f"output_dir={out}", "progress=false", "device=cpu"])
    run_evaluation(cfg)
    lines = [json.loads(line) for line in (out / "mt_bench" / "model_answer" / "tiny-csd.jsonl").open()]
    assert [line["question_id"] for line in lines] == [81, 111]
    assert all(line["model_id"] == "tiny-csd" and len(line["choices"][0]["turns"]) == 2 for line in lines)
    assert all({"answer_id", "tstamp"} <= set(line) for line in lines)
    outputs = json.loads((out / "alpaca_eval" / "tiny-csd.json").read_text())
    assert [set(o) for o in outputs] == [{"instruction", "output", "generator", "dataset"}] * 2
    assert outputs[0]["generator"] == "tiny-csd"


def test_every_shipped_eval_config_has_the_required_keys():
    for path in sorted((REPO / "configs" / "data").glob("*.yaml")):
        cfg = load_data_config(str(path))
        for key in ("name", "format", "path", "hub_id", "splits", "prompt_format", "max_examples"):
            assert key in cfg, f"{path.name} lacks {key}"


def test_command_line_entry_point(tmp_path, checkpoint):
    inst = fixture_config(tmp_path, "vicuna", "vicuna", max_new_tokens=4)
    out = tmp_path / "cli"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(
        [sys.executable, "-m", "csd.evaluate", f"model.name_or_path={checkpoint}", f"eval_sets=[{inst}]",
         "seeds=[10]", f"output_dir={out}", "progress=false", "device=cpu"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rougeL" in result.stdout and (out / "metrics.json").exists()


def test_generate_responses_writes_pairs(tmp_path, checkpoint):
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_responses", REPO / "scripts" / "generate_responses.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    prompts = fixture_config(tmp_path, "ultrachat", "ultrachat")
    out = tmp_path / "pairs"
    script.main([f"data={prompts}", f"teacher.name_or_path={checkpoint}", f"student.name_or_path={checkpoint}",
                 "max_new_tokens=4", f"output_dir={out}", "progress=false", "device=cpu", "test_size=1"])
    train = [json.loads(line) for line in (out / "train.jsonl").open()]
    assert [row["prompt"] for row in train] == ["How does photosynthesis work?", "Write a short poem about the sea."]
    assert all(set(row) == {"prompt", "teacher_response", "student_response"} for row in train)
    # same checkpoint and seed on both sides -> identical samples (seeded sampling)
    assert all(row["teacher_response"] == row["student_response"] for row in train)
    assert len((out / "test.jsonl").read_text().splitlines()) == 1


REFERENCE_1 = ("Each number in the list is exactly twice the previous number, so the sequence grows "
               "exponentially.")  # 16 rouge tokens
REFERENCE_2 = ("Two players take turns marking a three by three grid and the first to line up three marks "
               "wins.")  # 19 rouge tokens


def test_mean_and_sample_std_over_seeds_by_hand(tmp_path, checkpoint, monkeypatch):
    """A scripted generator answers each seed differently, so every per-seed number, the mean and the std
    are known by hand. The std is the sample std (ddof = 1) over seeds, as docs/evaluation.md states."""
    import csd.evaluate

    script = {10: [REFERENCE_1, REFERENCE_2],        # ROUGE-L 100, 100       -> 100
              20: [REFERENCE_1, "zzz"],              # 100, 0                 -> 50
              30: ["Each number", "zzz"]}            # P 1, R 2/16: F 2/9; 0  -> 100/9
    calls = []

    def scripted_generate(model, tokenizer, prompts, seed=None, **settings):
        calls.append(seed)
        assert len(prompts) == len(script[seed])
        return list(script[seed])

    monkeypatch.setattr(csd.evaluate, "generate", scripted_generate)
    inst = fixture_config(tmp_path, "uinst", "uinst/11_")
    gsm = fixture_config(tmp_path, "gsm8k", "gsm8k")
    out = tmp_path / "eval"
    cfg = compose_eval([f"model.name_or_path={checkpoint}", f"eval_sets=[{inst}]", "seeds=[10,20,30]",
                        f"output_dir={out}", "progress=false", "device=cpu"])
    result = run_evaluation(cfg)["results"]["uinst"]
    assert calls == [10, 20, 30]
    per_seed = [100.0, 50.0, 100 * (2 * 1 * (2 / 16) / (1 + 2 / 16)) / 2]
    assert per_seed[2] == pytest.approx(100 / 9)
    assert [result["per_seed"][s]["rougeL"] for s in ("10", "20", "30")] == pytest.approx(per_seed)
    mean = (100 + 50 + 100 / 9) / 3
    sample_std = (sum((x - mean) ** 2 for x in per_seed) / (3 - 1)) ** 0.5       # 44.56; population std is 36.38
    assert result["mean"]["rougeL"] == pytest.approx(mean)
    assert result["std"]["rougeL"] == pytest.approx(sample_std)
    assert result["per_seed"]["30"]["exact_match"] == 0.0 and result["per_seed"]["10"]["exact_match"] == 100.0
    # a greedy set is generated once, with the first seed; its std over one run is 0
    calls.clear()
    script[10] = ["#### 18", "#### 5", "#### 70,000"]    # the fixture's answers: 18, 3, 70,000
    cfg = compose_eval([f"model.name_or_path={checkpoint}", f"eval_sets=[{gsm}]", "seeds=[10,20,30]",
                        f"output_dir={out}", "progress=false", "device=cpu"])
    greedy = run_evaluation(cfg)["results"]["gsm8k"]
    assert calls == [10] and greedy["seeds"] == [10]
    assert greedy["mean"]["accuracy_strict"] == pytest.approx(200 / 3) and greedy["std"]["accuracy"] == 0.0

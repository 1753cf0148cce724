"""csd.evaluate's protocol with a recording generator: the decoding settings of each eval set (and the
generation.* overrides) reach generate, seeds are the ones documented, answer files and result records have the
documented fields, and the vLLM backend gets the same arguments (a stand-in `vllm` module, no GPU needed)."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

import csd.evaluate
from csd.evaluate import mean_and_std, primary_metric, run_evaluation, write_answers
from csd.testing import fixture_data_config as fixture_config

REPO = Path(__file__).resolve().parents[1]




def evaluate(tmp_path: Path, checkpoint: str, sets: list[str], *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[
            f"model.name_or_path={checkpoint}", f"eval_sets=[{','.join(sets)}]", f"output_dir={tmp_path}/a/b/eval",
            "progress=false", "device=cpu", *overrides])
    return run_evaluation(cfg)


@pytest.fixture
def generate_calls(monkeypatch):
    """Every call of the generate function csd.evaluate uses: (number of prompts, keyword arguments)."""
    calls = []

    def record(model, tokenizer, prompts, **kwargs):
        calls.append((len(prompts), kwargs))
        return ["Each number doubles." for _ in prompts]

    monkeypatch.setattr(csd.evaluate, "generate", record)
    return calls


def test_each_sets_decoding_settings_reach_generate(tmp_path, tiny_pair, generate_calls, capsys):
    sets = [fixture_config(tmp_path, "uinst", "uinst/11_"), fixture_config(tmp_path, "gsm8k", "gsm8k")]
    report = evaluate(tmp_path, tiny_pair[1], sets, "seeds=[10,20]", "max_examples=1", "generation.batch_size=3")
    sampled = dict(max_new_tokens=256, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, no_repeat_ngram_size=6,
                   stop_strings=None, max_prompt_length=256, batch_size=3, progress=False)
    greedy = dict(sampled, max_new_tokens=512, do_sample=False, no_repeat_ngram_size=0, stop_strings=["\n\n"])
    expected = [(1, dict(sampled, seed=10, desc="uinst seed 10")),     # MiniLLM: sampled, 5 seeds
                (1, dict(sampled, seed=20, desc="uinst seed 20")),
                (1, dict(greedy, seed=10, desc="gsm8k seed 10"))]     # Table 3: greedy, once
    assert [(n, {k: kwargs.get(k, "missing") for k in settings}) for (n, kwargs), (_, settings) in
            zip(generate_calls, expected, strict=True)] == expected
    results = report["results"]
    assert results["uinst"]["n_examples"] == 1 and results["uinst"]["settings"]["top_k"] == 0
    assert (results["gsm8k"]["metric"], results["gsm8k"]["primary"]) == ("gsm8k_accuracy", "accuracy_strict")
    assert json.loads((tmp_path / "a" / "b" / "eval" / "metrics.json").read_text()) == report
    assert (report["model"]["name_or_path"], report["backend"], report["split"]) == (tiny_pair[1], "hf", "test")
    printed = capsys.readouterr().out.splitlines()
    mean, std = results["uinst"]["mean"]["rougeL"], results["uinst"]["std"]["rougeL"]
    assert f"uinst        rougeL     {mean:7.2f} ± {std:.2f}  (n=1, seeds=[10, 20])" in printed
    assert printed[-1] == f"metrics: {tmp_path / 'a' / 'b' / 'eval' / 'metrics.json'}"


def test_generation_overrides_apply_to_every_set(tmp_path, tiny_pair, generate_calls):
    sets = [fixture_config(tmp_path, "uinst", "uinst/11_"), fixture_config(tmp_path, "gsm8k", "gsm8k")]
    evaluate(tmp_path, tiny_pair[1], sets, "seeds=[10]", "generation.top_p=0.9", "generation.max_new_tokens=7",
             "generation.stop_strings=[END]", "generation.max_prompt_length=99", "generation.top_k=5")
    for _, kwargs in generate_calls:
        assert (kwargs["top_p"], kwargs["max_new_tokens"], kwargs["stop_strings"], kwargs["max_prompt_length"],
                kwargs["top_k"]) == (0.9, 7, ["END"], 99, 5)


def test_chat_benchmarks_decode_as_fastchat_and_alpaca_eval(tmp_path, tiny_pair, generate_calls):
    sets = [fixture_config(tmp_path, "mt_bench", "mt_bench"), fixture_config(tmp_path, "alpaca_eval", "alpaca_eval")]
    results = evaluate(tmp_path, tiny_pair[1], sets, "seeds=[30,40]")["results"]
    # MT-Bench: per turn, one batch per category temperature (math 0 -> greedy, writing 0.7 -> sampled), seed 30
    turns = [(n, k["do_sample"], k["temperature"], k["seed"], k["desc"]) for n, k in generate_calls[:4]]
    assert turns == [(1, False, 1.0, 30, "mt_bench turn"), (1, True, 0.7, 30, "mt_bench turn")] * 2
    alpaca = generate_calls[4]
    assert (alpaca[0], alpaca[1]["seed"], alpaca[1]["do_sample"], alpaca[1]["desc"]) == (2, 30, False, "alpaca_eval")
    out = tmp_path / "a" / "b" / "eval"
    model_id = Path(tiny_pair[1]).name     # the checkpoint folder when model.model_id is not set
    assert results["mt_bench"] == {"format": "fastchat_model_answer", "n_examples": 2, "settings": results["mt_bench"]["settings"],
                                   "answer_file": str(out / "mt_bench" / "model_answer" / f"{model_id}.jsonl")}
    assert results["alpaca_eval"] == {"format": "alpaca_eval_json", "n_examples": 2, "settings": results["alpaca_eval"]["settings"],
                                      "answer_file": str(out / "alpaca_eval" / f"{model_id}.json")}
    assert all(Path(r["answer_file"]).exists() for r in results.values())


def test_chat_benchmarks_without_seeds_decode_unseeded(tmp_path, tiny_pair, generate_calls, capsys):
    sets = [fixture_config(tmp_path, "mt_bench", "mt_bench"), fixture_config(tmp_path, "alpaca_eval", "alpaca_eval")]
    report = evaluate(tmp_path, tiny_pair[1], sets, "seeds=[]", "model.model_id=m")
    assert [kwargs["seed"] for _, kwargs in generate_calls] == [None] * 5
    assert f"alpaca_eval  answers -> {report['results']['alpaca_eval']['answer_file']}" in capsys.readouterr().out


def test_two_eval_sets_with_one_name_are_an_error(tmp_path, tiny_pair, generate_calls):
    inst = fixture_config(tmp_path, "uinst", "uinst/11_")
    with pytest.raises(ValueError, match="^two eval sets are named 'uinst'$"):
        evaluate(tmp_path, tiny_pair[1], [inst, inst], "seeds=[10]")


def test_comet_scores_get_sources_predictions_and_first_references(tmp_path, tiny_pair, generate_calls, monkeypatch):
    """Translation with `comet: true` (the optional extra): COMET sees the Assamese source, the prediction and the
    first reference of every example, and its score joins the per-seed scores."""
    seen = []

    def comet(sources, predictions, references):
        seen.append((sources, predictions, references))
        return {"comet": 0.5}

    monkeypatch.setattr(csd.evaluate, "comet", comet)
    cfg = yaml.safe_load(Path(fixture_config(tmp_path, "translation", "translation")).read_text())
    cfg["comet"] = True
    path = tmp_path / "translation_comet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = evaluate(tmp_path, tiny_pair[1], [str(path)], "seeds=[10]")["results"]["translation"]
    from transformers import AutoTokenizer

    examples = csd.evaluate.load_examples(cfg, "test", AutoTokenizer.from_pretrained(tiny_pair[1]))
    assert examples and all(ex["source"] for ex in examples)
    assert seen == [([ex["source"] for ex in examples], ["Each number doubles."] * len(examples),
                     [ex["references"][0] for ex in examples])]
    assert result["per_seed"]["10"]["comet"] == 0.5 and "bleu" in result["per_seed"]["10"]


def test_answers_file_rows(tmp_path):
    path = tmp_path / "deep" / "answers.jsonl"
    write_answers(path, [{"prompt": "p0", "references": ["r"]}, {"prompt": "p1"}], ["café", "b"])
    text = path.read_text(encoding="utf-8")
    assert "café" in text  # written as UTF-8 text, not \\u escapes
    assert [json.loads(line) for line in text.splitlines()] == [
        {"index": 0, "prompt": "p0", "text": "café", "references": ["r"]},
        {"index": 1, "prompt": "p1", "text": "b", "references": []}]


def test_mean_and_std_with_two_seeds_and_one():
    means, stds = mean_and_std({"10": {"rougeL": 1.0}, "20": {"rougeL": 3.0}})
    assert means == {"rougeL": 2.0} and stds["rougeL"] == pytest.approx(2 ** 0.5)    # sample std, ddof = 1
    assert mean_and_std({"10": {"rougeL": 5.0}}) == ({"rougeL": 5.0}, {"rougeL": 0.0})


def test_primary_metric():
    assert primary_metric({"metric": "rouge"}) == "rougeL"                       # DialogSum: the paper reports ROUGE-L
    assert primary_metric({"metric": "bleu"}) == "bleu"
    assert primary_metric({"metric": "gsm8k_accuracy", "primary_metric": "accuracy_strict"}) == "accuracy_strict"


class FakeLLM:
    created: list = []

    def __init__(self, **kwargs):
        FakeLLM.created.append(kwargs)


def test_vllm_backend_gets_the_same_prompts_and_settings(tmp_path, tiny_pair, monkeypatch):
    FakeLLM.created = []
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM))
    calls = []

    def generate_vllm(name_or_path, tokenizer, prompts, llm=None, **kwargs):
        calls.append((name_or_path, tokenizer.name_or_path, len(prompts), llm, kwargs))
        return ["x" for _ in prompts]

    monkeypatch.setattr(csd.evaluate, "generate_vllm", generate_vllm)
    inst = fixture_config(tmp_path, "uinst", "uinst/11_")
    evaluate(tmp_path, tiny_pair[1], [inst], "backend=vllm", "seeds=[10]", "model.dtype=bfloat16")
    assert FakeLLM.created == [{"model": tiny_pair[1], "dtype": "bfloat16"}]
    (name, tokenizer, n, llm, kwargs), = calls
    assert (name, tokenizer, n, type(llm)) == (tiny_pair[1], tiny_pair[1], 2, FakeLLM)
    calls.clear()
    evaluate(tmp_path, tiny_pair[1], [inst], "backend=vllm", "seeds=[10]", f"model.tokenizer={tiny_pair[0]}")
    assert calls[0][1] == tiny_pair[0]  # model.tokenizer, when set, is the tokenizer the prompts are built with
    assert (kwargs["seed"], kwargs["do_sample"], kwargs["max_new_tokens"], kwargs["top_k"]) == (10, True, 256, 0)
    with pytest.raises(ValueError, match="^backend=vllm needs a merged checkpoint; merge the LoRA adapter first$"):
        evaluate(tmp_path, tiny_pair[1], [inst], "backend=vllm", "model.peft_path=adapter")
    with pytest.raises(ValueError, match="unknown backend 'tgi'"):
        evaluate(tmp_path, tiny_pair[1], [inst], "backend=tgi")

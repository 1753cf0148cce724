"""Chat pairs (Table 4) and MT-Bench answers with scripted generators, so each response names the model and the
prompt it came from: swapped sides, mis-joined prompts and a second turn blind to the first answer all fail."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from csd.testing import fixture_data_config

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module




def question_of(prompt: str) -> str:
    """The user turn of a prompt in the tiny chat template (csd.testing.CHAT_TEMPLATE)."""
    return prompt.split("<|user|>\n", 1)[1].split("<|end|>", 1)[0]


def model_name(model) -> str:
    return Path(model.config._name_or_path).name


def test_chat_pairs_put_each_models_response_on_its_side(tmp_path, tiny_pair, monkeypatch):
    teacher, student = tiny_pair
    script = load_script("generate_responses")
    calls = []

    def scripted_generate(model, tokenizer, prompts, seed=None, **settings):
        calls.append((model_name(model), seed, settings["temperature"], settings["top_p"]))
        return [f"{model_name(model)} answers {question_of(prompt)}" for prompt in prompts]

    monkeypatch.setattr(script, "generate", scripted_generate)
    out = tmp_path / "pairs"
    script.main([f"data={fixture_data_config(tmp_path, 'ultrachat', 'ultrachat')}", f"teacher.name_or_path={teacher}",
                 f"student.name_or_path={student}", f"output_dir={out}", "progress=false", "device=cpu", "test_size=1"])
    assert calls == [("teacher", 42, 0.8, 0.95), ("student", 42, 0.8, 0.95)]   # DistiLLM-2 settings, both sides
    train = [json.loads(line) for line in (out / "train.jsonl").open()]
    assert train == [
        {"prompt": "How does photosynthesis work?", "teacher_response": "teacher answers How does photosynthesis work?",
         "student_response": "student answers How does photosynthesis work?"},
        {"prompt": "Write a short poem about the sea.", "teacher_response": "teacher answers Write a short poem about the sea.",
         "student_response": "student answers Write a short poem about the sea."},
    ]
    assert [json.loads(line) for line in (out / "test.jsonl").open()] == train[:1]


def test_chat_pairs_join_the_sides_by_prompt(tmp_path, tiny_pair, monkeypatch):
    """Side files written separately (only=...) and in another order still pair each prompt's own responses."""
    script = load_script("generate_responses")
    out = tmp_path / "pairs"
    out.mkdir()
    (out / "teacher.jsonl").write_text("".join(json.dumps({"prompt": p, "generated_text": f"T:{p}"}) + "\n" for p in "abc"))
    (out / "student.jsonl").write_text("".join(json.dumps({"prompt": p, "generated_text": f"S:{p}"}) + "\n" for p in "cab"))
    monkeypatch.setattr(script, "generate", None)  # both sides exist: nothing is generated
    script.main([f"data={fixture_data_config(tmp_path, 'ultrachat', 'ultrachat')}", f"output_dir={out}"])
    train = [json.loads(line) for line in (out / "train.jsonl").open()]
    assert [(r["prompt"], r["teacher_response"], r["student_response"]) for r in train] == \
        [(p, f"T:{p}", f"S:{p}") for p in "abc"]


def test_mt_bench_second_turn_sees_the_first_answer(tmp_path, tiny_pair, monkeypatch):
    import csd.evaluate
    from hydra import compose, initialize_config_dir

    prompts_seen = []

    def scripted_generate(model, tokenizer, prompts, do_sample=None, temperature=None, **settings):
        answers = []
        for prompt in prompts:
            prompts_seen.append(prompt)
            turn = prompt.count("<|user|>")
            answers.append(f"answer {turn} to question {'81' if 'Hawaii' in prompt else '111'}")
        return answers

    monkeypatch.setattr(csd.evaluate, "generate", scripted_generate)
    out = tmp_path / "eval"
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[
            f"model.name_or_path={tiny_pair[1]}", f"eval_sets=[{fixture_data_config(tmp_path, 'mt_bench', 'mt_bench')}]",
            "model.model_id=tiny", f"output_dir={out}", "progress=false", "device=cpu"])
    csd.evaluate.run_evaluation(cfg)
    rows = {row["question_id"]: row["choices"][0]["turns"]
            for row in map(json.loads, (out / "mt_bench" / "model_answer" / "tiny.jsonl").open())}
    assert rows == {81: ["answer 1 to question 81", "answer 2 to question 81"],
                    111: ["answer 1 to question 111", "answer 2 to question 111"]}
    second = [p for p in prompts_seen if p.count("<|user|>") == 2]
    assert len(second) == 2
    for prompt in second:   # the tiny chat template: user turn 1, the model's own answer 1, user turn 2
        question = "81" if "Hawaii" in prompt else "111"
        first_question, rest = prompt.split("<|assistant|>\n", 1)
        assert rest.startswith(f"answer 1 to question {question}<|end|>\n<|user|>\n")
        assert rest.endswith("<|assistant|>\n")

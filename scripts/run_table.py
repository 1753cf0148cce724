"""Launch one paper table: train every row, evaluate its checkpoint, print the collected table.

Called by scripts/table*.sh and scripts/fig*.sh (via scripts/_common.sh), which write the run list to stdin,
one run per line: ``ROW<TAB>EVAL_SETS<TAB>OVERRIDES`` (EVAL_SETS like ``[dolly,vicuna]``, ``-`` for none).

    printf 'csd\\t[dolly]\\texperiment=table1 loss=csd\\n' | python scripts/run_table.py --table table1 [--dry-run|--tiny] -- [overrides]

Every run gets ``experiment_name=<table>`` (one W&B group per table; logger=wandb tags it with the objective) and
``run_name=<row>``, so its files are
    <output_root>/<table>/<row>/metrics.json        training summary (csd.train)
    <output_root>/<table>/<row>/eval/metrics.json   evaluation (csd.evaluate; answers under eval/<set>/...)
Overrides apply in this order: the row's, then --tiny's, then the user's (last wins); a user override
``eval.<key>=<value>`` goes to csd.evaluate instead (e.g. eval.seeds=[10] eval.backend=vllm).

--dry-run   print each run's resolved training config as one YAML document (``---`` between), load nothing.
--tiny      tiny random models (built once under <output_root>/tiny_models), the fixture data (tests/fixtures),
            2 optimizer steps, evaluation on the fixture copy of each eval set (4 prompts, 8 new tokens, 1 seed);
            runs in this process. Otherwise each run is ``$CSD_LAUNCH -m csd.train`` then ``python -m csd.evaluate``.
--force     rerun every row. Without it a row whose training finished with the same resolved config (its
            metrics.json, written last, and an identical config.yaml) is not trained again, and its evaluation
            is not redone if eval/metrics.json exists: rerunning an interrupted table continues where it stopped.
--wandb     the same as the override logger=wandb: every run logs to W&B (group <table>, name <row>, tags objective and
            weighting), each evaluation goes into its training run's W&B run, and the collected table with the paper
            column and the table's figures are published as a run <table>-results (scripts/wandb_results.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from csd.config import compose, resolved_yaml  # noqa: E402

TINY_TRAIN = [  # appended under --tiny; {root} = output_root, {tiny_data} = fixture copies of configs/data
    "model=tiny", "model.teacher.name_or_path={root}/tiny_models/teacher", "model.student.name_or_path={root}/tiny_models/student",
    "model.student.peft_path=null", "data=tiny", "train.batch_size=4", "train.grad_accum=1", "train.max_steps=2",
    "train.max_length=96", "train.max_prompt_length=48", "train.eval_generate=2", "train.eval_batches=1", "train.save_every=null",
    "train.mixed_precision=bf16", "train.gradient_checkpointing=false", "++data.max_new_tokens=8", "output_root={root}",
]
TINY_EVAL = ["seeds=[10]", "max_examples=4", "generation.max_new_tokens=8", "generation.batch_size=4", "progress=false",
             "device=cpu"]


@dataclasses.dataclass
class Run:
    row: str
    eval_sets: list[str]
    overrides: list[str]


def read_runs(lines) -> list[Run]:
    runs = []
    for line in lines:
        if not line.strip():
            continue
        row, eval_sets, overrides = (line.rstrip("\n").split("\t") + ["", ""])[:3]
        sets = [] if eval_sets.strip() in ("", "-", "[]") else eval_sets.strip().strip("[]").split(",")
        runs.append(Run(row, [s.strip() for s in sets], overrides.split()))
    return runs


def fixture_data_configs(target: Path) -> Path:
    """configs/data/<name>.yaml copied to target/<name>.yaml with `path` pointing at tests/fixtures/<name>/...

    (data/sinst/11_ -> tests/fixtures/sinst/11_); only sets that have a fixture folder."""
    target.mkdir(parents=True, exist_ok=True)
    for source in sorted((REPO_ROOT / "configs" / "data").glob("*.yaml")):
        node = OmegaConf.load(source)
        fixture = REPO_ROOT / "tests" / "fixtures" / source.stem
        if not fixture.is_dir() or not node.get("path"):
            continue
        node.path = str(fixture.joinpath(*Path(str(node.path)).parts[2:]))
        node.hub_id = None
        OmegaConf.save(node, target / source.name)
    return target


def ensure_tiny_models(root: Path) -> None:
    """Tiny Llama teacher (2 layers, width 48) and student (1 layer, width 32) sharing one tokenizer."""
    from csd.testing import save_tiny_checkpoint

    for name, layers, hidden, seed in (("teacher", 2, 48, 1), ("student", 1, 32, 2)):
        if not (root / "tiny_models" / name / "config.json").exists():
            save_tiny_checkpoint(root / "tiny_models" / name, arch="llama", layers=layers, hidden=hidden, seed=seed)


def train_overrides(run: Run, table: str, user: list[str], tiny: list[str] | None) -> list[str]:
    return [*run.overrides, f"experiment_name={table}", f"run_name={run.row}", *(tiny or []), *user]


def output_root_of(user: list[str], default: str = "outputs") -> str:
    values = [o.split("=", 1)[1] for o in user if o.startswith("output_root=")]
    return values[-1] if values else default


def finished(cfg) -> bool:
    """The run's training completed with exactly this config (metrics.json is written at the very end)."""
    output_dir = Path(cfg.output_dir)
    return (output_dir / "metrics.json").exists() and (output_dir / "config.yaml").exists() and \
        (output_dir / "config.yaml").read_text() == resolved_yaml(cfg)


def evaluated(output_dir: Path) -> bool:
    return (output_dir / "eval" / "metrics.json").exists()


def checkpoint_of(output_dir: Path) -> Path:
    """best/ (kept by validation) if the run made one, else final/."""
    return output_dir / "best" if (output_dir / "best").exists() else output_dir / "final"


def eval_overrides(run: Run, output_dir: Path, eval_sets: list[str], student_cfg) -> list[str]:
    checkpoint = checkpoint_of(output_dir)
    model = [f"model.name_or_path={checkpoint}", f"model.model_id={run.row}"]
    if (checkpoint / "adapter_config.json").exists():  # LoRA student: the adapter on its base model
        model = [f"model.name_or_path={student_cfg.name_or_path}", f"model.peft_path={checkpoint}",
                 f"model.tokenizer={checkpoint}", f"model.model_id={run.row}"]
    return [*model, f"eval_sets=[{','.join(eval_sets)}]", f"output_dir={output_dir / 'eval'}"]


def dry_run(runs: list[Run], table: str, user: list[str], tiny: list[str] | None) -> None:
    documents = [OmegaConf.to_yaml(compose(train_overrides(r, table, user, tiny)), resolve=True) for r in runs]
    sys.stdout.write("---\n".join(documents))


def run_in_process(runs: list[Run], table: str, user: list[str], tiny: list[str], tiny_data: Path,
                   eval_user: list[str], force: bool = False) -> None:
    from csd.evaluate import run_evaluation
    from csd.train import run as train

    for r in runs:
        cfg = compose(train_overrides(r, table, user, tiny))
        skip = not force and finished(cfg)
        print(f"== {table}/{r.row}: " + ("finished with this config, not trained again" if skip else "training"), flush=True)
        if not skip:
            train(cfg)
        if r.eval_sets and not (skip and evaluated(Path(cfg.output_dir))):
            sets = [str(tiny_data / f"{name}.yaml") if (tiny_data / f"{name}.yaml").exists() else name for name in r.eval_sets]
            evaluation = compose([*eval_overrides(r, Path(cfg.output_dir), sets, cfg.model.student), *TINY_EVAL,
                                  *eval_user],
                                 config_name="evaluate")
            print(f"== {table}/{r.row}: evaluating on {', '.join(r.eval_sets)}", flush=True)
            run_evaluation(evaluation)


def run_subprocesses(runs: list[Run], table: str, user: list[str], eval_user: list[str], force: bool = False) -> None:
    launch = shlex.split(os.environ.get("CSD_LAUNCH", "")) or [sys.executable]
    for r in runs:
        overrides = train_overrides(r, table, user, None)
        cfg = compose(overrides)
        skip = not force and finished(cfg)
        if skip:
            print(f"== {table}/{r.row}: finished with this config, not trained again", flush=True)
        else:
            print(f"== {table}/{r.row}: {' '.join(launch)} -m csd.train {' '.join(overrides)}", flush=True)
            subprocess.run([*launch, "-m", "csd.train", *overrides], check=True)
        if r.eval_sets and not (skip and evaluated(Path(cfg.output_dir))):
            command = [sys.executable, "-m", "csd.evaluate",
                       *eval_overrides(r, Path(cfg.output_dir), r.eval_sets, cfg.model.student), *eval_user]
            print(f"== {table}/{r.row}: {' '.join(command[1:])}", flush=True)
            subprocess.run(command, check=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="experiment_name shared by every run (the W&B group)")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--force", action="store_true", help="rerun rows whose training already finished")
    parser.add_argument("--only", action="append", default=[], help="run only this row (repeatable)")
    parser.add_argument("--tiny-override", action="append", default=[], help="extra override under --tiny")
    parser.add_argument("--wandb", action="store_true", help="logger=wandb for every run; publish the table to W&B")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    runs = read_runs(sys.stdin)
    if args.only:
        unknown = set(args.only) - {r.row for r in runs}
        if unknown:
            raise SystemExit(f"run_table.py: error: no row {sorted(unknown)}; rows: {[r.row for r in runs]}")
        runs = [r for r in runs if r.row in args.only]
    eval_user = [o.removeprefix("eval.") for o in args.overrides if o.startswith("eval.")]  # -> csd.evaluate
    user = ["logger=wandb"] * args.wandb + [o for o in args.overrides if not o.startswith("eval.")]
    root = Path(output_root_of(user))
    tiny_data = root / "tiny_data"
    tiny = None
    if args.tiny:
        tiny = [o.format(root=root, tiny_data=tiny_data) for o in (*TINY_TRAIN, *args.tiny_override)]
    if args.dry_run:
        dry_run(runs, args.table, user, tiny)
        return
    if args.tiny:
        ensure_tiny_models(root)
        fixture_data_configs(tiny_data)
        run_in_process(runs, args.table, user, tiny, tiny_data, eval_user, args.force)
    else:
        run_subprocesses(runs, args.table, user, eval_user, args.force)
    from collect_results import collect

    collected = collect(root, tables=[args.table])
    print(collected.markdown)
    logger = compose(train_overrides(runs[0], args.table, user, tiny)).logger if runs else None
    if logger is not None and logger.name == "wandb":
        from wandb_results import publish

        publish(collected, [args.table], root=root, project=logger.project, entity=logger.entity, mode=logger.mode)


if __name__ == "__main__":
    main(sys.argv[1:])

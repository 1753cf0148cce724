"""Run one paper table from its data, configs/tables/<table>.yaml: train every row, evaluate it, print the table.

    python -m csd.tables <table> [--dry-run] [--tiny] [--only ROW] [--force] [--wandb] [--sweep KEY=V1,V2]
                                 [hydra overrides] [eval.<key>=<value>]
(scripts/table*.sh and scripts/fig*.sh are this command for one table each; <table> may also be a path to a YAML file.)

Every run gets ``experiment_name`` from the table (one W&B group per table; logger=wandb tags it with the objective)
and ``run_name=<row>``, so its files are
    <output_root>/<experiment_name>/<row>/metrics.json        training summary (csd.train)
    <output_root>/<experiment_name>/<row>/eval/metrics.json   evaluation (csd.evaluate; answers under eval/<set>/...)
Overrides apply in this order: the row's, then --tiny's, then the user's (last wins); a user override
``eval.<key>=<value>`` goes to csd.evaluate instead (e.g. eval.seeds=[10] eval.backend=vllm). Real runs are
``$CSD_LAUNCH -m csd.train`` (default: this python; e.g. CSD_LAUNCH="accelerate launch --config_file
configs/accelerate/zero3_bf16_4gpu.yaml", the table's launch hint) then ``python -m csd.evaluate``; the collected
table (csd/results/collect.py, paper column from data/paper_results.yaml) is printed at the end.
Off-policy distillation rows read the teacher from its cache (train.teacher_cache=auto, csd/teacher_cache.py; a row or
the user may set train.teacher_cache=null): before the rows, ``python -m csd.teacher_cache`` runs once per cache the
rows to train need (same teacher, data, lengths, precision, head), and every row reads it; a complete cache is only
checked. A row finished with the live teacher counts as finished with the cache (the same numbers).
--devices 0,1,...,7 runs the rows concurrently over a node's GPUs, each on its own devices and port
(csd/parallel_rows.py; docs/cluster.md); --caches-only builds the teacher caches and stops.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import shlex
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from csd import parallel_rows
from csd.config import CONFIG_DIR, compose, resolved_yaml
from csd.inputs import one_line_errors

REPO_ROOT = CONFIG_DIR.parent
TABLES_DIR = CONFIG_DIR / "tables"
EPILOG = """Anything else is a Hydra override added to every run (e.g. optim.lr=3e-5 output_root=/scratch);
eval.<key>=<value> goes to csd.evaluate (eval.seeds=[10]). Environment: CSD_LAUNCH (default: this python) prefixes
"-m csd.train" in real runs. The hub is used as huggingface_hub is told (HF_HUB_OFFLINE=1: local files only);
--tiny sets HF_HUB_OFFLINE=1 itself (tiny models and fixture data)."""
TINY_TRAIN = [  # appended under --tiny; {root} = output_root, {tiny_data} = fixture copies of configs/data
    "model=tiny", "model.teacher.name_or_path={root}/tiny_models/teacher", "model.student.name_or_path={root}/tiny_models/student",
    "model.student.peft_path=null", "model.student.lora_path=null", "data=tiny", "train.batch_size=4", "train.grad_accum=1", "train.max_steps=2",
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
    launch: str | None = None   # a configs/accelerate/ file the paper's run used (a hint for CSD_LAUNCH)


@dataclasses.dataclass
class Table:
    experiment_name: str
    runs: list[Run]
    tiny: list[str]
    description: str = ""
    needs: str = ""


def table_names() -> list[str]:
    return sorted(path.stem for path in TABLES_DIR.glob("*.yaml"))


def table_path(name: str) -> Path:
    path = Path(name) if name.endswith((".yaml", ".yml")) else TABLES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SystemExit(f"csd.tables: error: no table {name!r}; tables: {', '.join(table_names())}")
    return path


def expand(row: dict, sweep: dict[str, list[str]]) -> list[dict]:
    """A row with ``sweep: {key: [values]}`` -> one row per combination (first key outermost), {key} filled in."""
    if not row.get("sweep"):
        return [row]
    keys = list(row["sweep"])
    values = [sweep.get(key, [str(v) for v in row["sweep"][key]]) for key in keys]
    rows = []
    for combination in itertools.product(*values):
        fill = dict(zip(keys, combination))
        overrides = [override.format(**fill) for override in row["overrides"]]
        rows.append(row | {"name": row["name"].format(**fill), "overrides": overrides})
    return rows


def load_table(name: str, sweep: dict[str, list[str]] | None = None) -> Table:
    """configs/tables/<name>.yaml (or the YAML file `name`) with its row templates expanded."""
    spec = OmegaConf.to_container(OmegaConf.load(table_path(name)))
    sweep = sweep or {}
    swept = {key for row in spec["rows"] for key in row.get("sweep") or {}}
    if set(sweep) - swept:
        raise SystemExit(f"csd.tables: error: no swept key {sorted(set(sweep) - swept)}; swept keys: {sorted(swept)}")
    runs = [Run(row["name"], list(row.get("eval_sets", spec.get("eval_sets") or [])), list(row["overrides"]),
                row.get("launch", spec.get("launch")))
            for template in spec["rows"] for row in expand(template, sweep)]
    return Table(spec["experiment_name"], runs, list(spec.get("tiny") or []), spec.get("description") or "",
                 spec.get("needs") or "")


def fixture_data_configs(target: Path) -> Path:
    """configs/data/<name>.yaml copied to target/<name>.yaml with `path` pointing at tests/fixtures/<name>/...

    (data/sinst/11_ -> tests/fixtures/sinst/11_); only sets that have a fixture folder."""
    target.mkdir(parents=True, exist_ok=True)
    for source in sorted((CONFIG_DIR / "data").glob("*.yaml")):
        node = OmegaConf.load(source)
        fixture = REPO_ROOT / "tests" / "fixtures" / source.stem
        if not fixture.is_dir() or not node.get("path"):
            continue
        node.path = str(fixture.joinpath(*Path(str(node.path)).parts[2:]))
        node.hub_id = None
        text = OmegaConf.to_yaml(node)
        if not (target / source.name).exists() or (target / source.name).read_text() != text:  # rows running at
            (target / source.name).write_text(text)                                            # once read them
    return target


def ensure_tiny_models(root: Path) -> None:
    """Tiny Llama teacher (2 layers, width 48) and student (1 layer, width 32) sharing one tokenizer."""
    from csd.testing import save_tiny_checkpoint

    for name, layers, hidden, seed in (("teacher", 2, 48, 1), ("student", 1, 32, 2)):
        if not (root / "tiny_models" / name / "config.json").exists():
            save_tiny_checkpoint(root / "tiny_models" / name, arch="llama", layers=layers, hidden=hidden, seed=seed)


def row_config(run: Run, table: str, user: list[str], tiny: list[str] | None):
    """(overrides, composed config) of a row's training run. The overrides: train.teacher_cache=auto first (off-policy
    rows read one teacher cache; a row or the user may set train.teacher_cache=null), then the row's, the table's,
    --tiny's and the user's."""
    from csd.teacher_cache import compose_reading_cache  # torch: not imported for --help

    return compose_reading_cache([*run.overrides, f"experiment_name={table}", f"run_name={run.row}", *(tiny or []),
                                  *user])


def cache_builds(configured: list[tuple[Run, list[str], object]],
                 force: bool) -> list[tuple[list[str], object, list[str]]]:
    """(overrides, config, rows) per teacher cache the rows to train read (``configured``: (row, overrides, config)
    from row_config): built once before them (python -m csd.teacher_cache with the first such row's overrides; a
    complete cache is only checked)."""
    from csd.teacher_cache import cache_key, reads_cache

    groups: dict[str, tuple[list[str], object, list[str]]] = {}
    for r, overrides, cfg in configured:
        if reads_cache(cfg) and (force or not finished(cfg)):
            groups.setdefault(cache_key(cfg), (overrides, cfg, []))[2].append(r.row)
    return list(groups.values())


def output_root_of(user: list[str], default: str = "outputs") -> str:
    values = [o.split("=", 1)[1] for o in user if o.startswith("output_root=")]
    return values[-1] if values else default


def finished(cfg) -> bool:
    """The run's training completed with exactly this config (metrics.json is written at the very end), whether
    its teacher was live or read from a cache (the same numbers)."""
    output_dir = Path(cfg.output_dir)
    if not ((output_dir / "metrics.json").exists() and (output_dir / "config.yaml").exists()):
        return False
    saved, current = OmegaConf.load(output_dir / "config.yaml"), OmegaConf.create(resolved_yaml(cfg))
    for config in (saved, current):
        if "train" in config:
            config.train.pop("teacher_cache", None)
    return OmegaConf.to_container(saved) == OmegaConf.to_container(current)


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
    documents = [OmegaConf.to_yaml(row_config(r, table, user, tiny)[1], resolve=True) for r in runs]
    sys.stdout.write("---\n".join(documents))


def plan(runs: list[Run], table: str, user: list[str], tiny: list[str] | None, args) -> None:
    """``--plan``: each row's plan under its launch file (csd/plan/__init__.py), or the file of its kind for ``--gpus``."""
    from csd.plan.cli import plan_config, print_plans

    print_plans([(f"{table}/{r.row}", plan_config(row_config(r, table, user, tiny)[1], r.launch, args.gpus,
                                                   args.gpu_memory, args.mfu)) for r in runs], args.json, args.summary)


def run_in_process(runs: list[Run], table: str, user: list[str], tiny: list[str], tiny_data: Path,
                   eval_user: list[str], force: bool = False, caches_only: bool = False) -> None:
    from csd.evaluate import run_evaluation
    from csd.teacher_cache import build_for as build_cache
    from csd.train import run as train

    configured = [(r, *row_config(r, table, user, tiny)) for r in runs]
    for overrides, cfg, rows in cache_builds(configured, force):
        print(f"== {table}: the teacher cache of rows {', '.join(rows)}", flush=True)
        build_cache(cfg)
    if caches_only:
        return
    for r, _, cfg in configured:
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


def run_command(command: list[str]) -> None:
    """A row's csd.train / csd.evaluate; its failure ends the table with its exit status (its error is printed)."""
    status = subprocess.run(command).returncode
    if status:
        raise SystemExit(status)


def run_subprocesses(runs: list[Run], table: str, user: list[str], eval_user: list[str], force: bool = False,
                     caches_only: bool = False) -> None:
    launch = shlex.split(os.environ.get("CSD_LAUNCH", "")) or [sys.executable]
    configured = [(r, *row_config(r, table, user, None)) for r in runs]
    for overrides, _, rows in cache_builds(configured, force):
        print(f"== {table}: the teacher cache of rows {', '.join(rows)}: {' '.join(launch)} -m csd.teacher_cache "
              f"{' '.join(overrides)}", flush=True)
        run_command([*launch, "-m", "csd.teacher_cache", *overrides])
    if caches_only:
        return
    for r, overrides, cfg in configured:
        skip = not force and finished(cfg)
        if skip:
            print(f"== {table}/{r.row}: finished with this config, not trained again", flush=True)
        else:
            if r.launch and "CSD_LAUNCH" not in os.environ:
                print(f"== {table}/{r.row}: the paper's setting is CSD_LAUNCH=\"accelerate launch --config_file "
                      f"{r.launch}\"; CSD_LAUNCH is not set, so this runs as one process", flush=True)
            print(f"== {table}/{r.row}: {' '.join(launch)} -m csd.train {' '.join(overrides)}", flush=True)
            run_command([*launch, "-m", "csd.train", *overrides])
        if r.eval_sets and not (skip and evaluated(Path(cfg.output_dir))):
            command = [sys.executable, "-m", "csd.evaluate",
                       *eval_overrides(r, Path(cfg.output_dir), r.eval_sets, cfg.model.student), *eval_user]
            print(f"== {table}/{r.row}: {' '.join(command[1:])}", flush=True)
            run_command(command)


def run_on_devices(args, runs: list[Run], table: str, user: list[str], tiny: list[str] | None, root: Path) -> int:
    """--devices: the rows as concurrent jobs (csd/parallel_rows.py); returns how many failed."""
    configured = [(r, *row_config(r, table, user, tiny)) for r in runs]
    caches = [(overrides, rows) for overrides, _, rows in cache_builds(configured, args.force)]
    done = {r.row for r, _, cfg in configured
            if not args.force and finished(cfg) and (not r.eval_sets or evaluated(Path(cfg.output_dir)))}
    return parallel_rows.run_on_devices(args, configured, table, root, caches, done)


def table_help(table: Table) -> str:
    launches = dict.fromkeys(r.launch for r in table.runs if r.launch)
    lines = [table.description.rstrip(), f"Rows: {' '.join(r.row for r in table.runs)}"]
    lines += [f"Needs first: {table.needs.strip()}"] * bool(table.needs)
    lines += [f"Launch as the paper: CSD_LAUNCH=\"accelerate launch --config_file {file}\"" for file in launches]
    return "\n".join(lines)


def parser_for(table: Table | None) -> argparse.ArgumentParser:
    if table is None:
        description = __doc__.split("\n\n")[0] + "\n\ntables: " + ", ".join(table_names())
    else:
        description = table_help(table)
    parser = argparse.ArgumentParser(prog="python -m csd.tables", description=description, epilog=EPILOG,
                                     usage="%(prog)s TABLE [options] [hydra overrides] [eval.<key>=<value>]",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help=f"one of {', '.join(table_names())}, or a path to such a YAML file")
    parser.add_argument("--dry-run", action="store_true",
                        help="print each run's resolved training config (YAML documents joined by ---), load nothing")
    parser.add_argument("--tiny", action="store_true", help="the whole table on tiny models + fixture data in a few "
                        "minutes, in this process (writes under output_root)")
    parser.add_argument("--only", action="append", default=[], metavar="ROW", help="only this row (repeatable)")
    parser.add_argument("--force", action="store_true", help="retrain rows already finished with the same config "
                        "(by default they are skipped, and so is an evaluation whose eval/metrics.json exists: an "
                        "interrupted table continues where it stopped)")
    parser.add_argument("--wandb", action="store_true", help="= logger=wandb; also publishes the collected table and "
                        "figures to W&B (group = the table's experiment_name)")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                        help="other values for a swept key of the rows (e.g. fig5a_temperature --sweep tau=0.5,1.0)")
    parallel_rows.add_arguments(parser)   # --devices, --no-collect
    parser.add_argument("--plan", action="store_true", help="per row: parameters, per-GPU memory, FLOPs, GPU-hours, "
                        "whether it fits and the smallest change that does (csd/plan/__init__.py); loads no weights")
    from csd.plan.cli import add_plan_options  # --gpus --gpu-memory --mfu --json

    add_plan_options(parser)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    name = argv[0] if argv and not argv[0].startswith("-") else None
    parser = parser_for(load_table(name) if name else None)   # --help after a table name describes that table
    args = parser.parse_intermixed_args(argv)
    if any("=" not in item for item in args.sweep):
        parser.error(f"--sweep takes KEY=V1,V2, not {args.sweep}")
    sweep = {key: [v for v in values.split(",") if v] for key, _, values in (s.partition("=") for s in args.sweep)}
    table = load_table(args.table, sweep)
    runs = table.runs
    if args.only:
        unknown = set(args.only) - {r.row for r in runs}
        if unknown:
            raise SystemExit(f"csd.tables: error: no row {sorted(unknown)}; rows: {[r.row for r in runs]}")
        runs = [r for r in runs if r.row in args.only]
    name = table.experiment_name
    eval_user = [o.removeprefix("eval.") for o in args.overrides if o.startswith("eval.")]  # -> csd.evaluate
    user = ["logger=wandb"] * args.wandb + [o for o in args.overrides if not o.startswith("eval.")]
    root = Path(output_root_of(user))
    tiny_data = root / "tiny_data"
    tiny = [o.format(root=root, tiny_data=tiny_data) for o in (*TINY_TRAIN, *table.tiny)] if args.tiny else None
    if args.tiny:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")   # tiny models and fixture data: nothing from the hub
    if args.dry_run:
        dry_run(runs, name, user, tiny)
        return
    if args.plan:
        plan(runs, name, user, tiny, args)
        return
    failed = 0
    if args.tiny:
        ensure_tiny_models(root)
        fixture_data_configs(tiny_data)
    if args.devices:
        failed = run_on_devices(args, runs, name, user, tiny, root)
    elif args.tiny:
        run_in_process(runs, name, user, tiny, tiny_data, eval_user, args.force, args.caches_only)
    else:
        run_subprocesses(runs, name, user, eval_user, args.force, args.caches_only)
    if args.no_collect or args.caches_only:
        if failed:
            raise SystemExit(1)
        return
    from csd.results import collect

    collected = collect(root, tables=[name])
    print(collected.markdown)
    logger = row_config(runs[0], name, user, tiny)[1].logger if runs else None
    if logger is not None and logger.name == "wandb":
        from csd.results.publish import publish

        publish(collected, [name], root=root, project=logger.project, entity=logger.entity, mode=logger.mode)
    if failed:
        raise SystemExit(f"csd.tables: error: {failed} of the table's jobs failed (the summary above names them)")


if __name__ == "__main__":
    with one_line_errors("csd.tables"):  # a bad override or input: one line, no traceback
        main()

"""csd.tables: the tables as data (configs/tables/*.yaml, one script per table), and the runner skipping rows whose
training finished with the same config and whose evaluation exists, so an interrupted table continues where it
stopped; a changed config or --force reruns the row."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from csd import tables

REPO = Path(__file__).resolve().parent.parent


def write_table(path: Path, rows: list[dict], experiment_name: str = "t") -> Path:
    path.write_text(yaml.safe_dump({"experiment_name": experiment_name, "rows": rows}))
    return path


def test_every_table_has_one_script_and_every_script_one_table():
    launched = {}
    for script in sorted((REPO / "scripts").glob("*.sh")):
        match = re.search(r"^[^#]*-m csd\.tables (\S+)", script.read_text(), re.M)  # the exec line
        if match:
            launched[script.name] = match[1]
    assert sorted(launched.values()) == tables.table_names()
    assert launched["table5_dld_ablation.sh"] == "table5" and launched["table1_instruction_following.sh"] == "table1"


def test_sweeps_expand_in_order_and_take_values_from_the_command_line():
    table5 = tables.load_table("table5")
    assert table5.experiment_name == "table5_dld" and len(table5.runs) == 16
    assert [r.row for r in table5.runs[:6]] == ["dld_S_mean", "dld_S_min", "dld_S_max", "dld_S_std", "dld_S_range",
                                                "dld_T_mean"]
    assert table5.runs[1].overrides == ["experiment=table5_dld", "loss.weight=S", "loss.normalize=min"]
    assert table5.runs[-1].row == "csd" and table5.runs[-1].eval_sets == ["dolly", "self_inst", "vicuna", "sinst", "uinst"]
    fig5a = tables.load_table("fig5a_temperature", {"tau": ["0.5", "3.0"]})
    assert [(r.row, r.overrides[-1]) for r in fig5a.runs] == [("csd_tau0.5", "loss.temperature=0.5"),
                                                              ("csd_tau3.0", "loss.temperature=3.0")]
    with pytest.raises(SystemExit, match="no swept key"):
        tables.load_table("table1", {"tau": ["1.0"]})


def test_rows_take_the_table_eval_sets_and_launch_hint_unless_they_name_their_own():
    table3, table2 = tables.load_table("table3"), tables.load_table("table2")
    assert [r.eval_sets for r in table3.runs] == [["gsm8k"], ["dialogsum"], ["translation"]]
    assert {r.launch for r in table3.runs} == {"configs/accelerate/zero3_bf16_4gpu.yaml"}
    assert [r.launch for r in table2.runs] == [None, *["configs/accelerate/zero1_bf16_1gpu.yaml"] * 2]


def test_unknown_table_or_row_is_an_error_naming_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit, match="tables: fig3_weighting"):
        tables.main(["table9", "--dry-run"])
    with pytest.raises(SystemExit, match=r"no row \['nope'\]; rows: \['a'\]"):
        tables.main([str(write_table(tmp_path / "t.yaml", [{"name": "a", "overrides": ["loss=csd"]}])),
                     "--dry-run", "--only", "nope"])


@pytest.fixture
def table(tmp_path, monkeypatch, tiny_pair):
    """run(rows, *args) -> {'train': [rows trained], 'eval': [rows evaluated]} for one csd.tables --tiny call."""
    import csd.evaluate
    import csd.train

    (tmp_path / "tiny_models").mkdir()
    for name, path in zip(("teacher", "student"), tiny_pair):  # the session's tiny models instead of new ones
        (tmp_path / "tiny_models" / name).symlink_to(path)

    def run(rows: list[dict], *args: str) -> dict:
        calls = {"train": [], "eval": []}
        real_train, real_eval = csd.train.run, csd.evaluate.run_evaluation

        def train(cfg, *rest, **kwargs):
            calls["train"].append(cfg.run_name)
            return real_train(cfg, *rest, **kwargs)

        def evaluate(cfg):
            calls["eval"].append(Path(cfg.output_dir).parent.name)
            return real_eval(cfg)

        with monkeypatch.context() as patch:
            patch.setattr(csd.train, "run", train)
            patch.setattr(csd.evaluate, "run_evaluation", evaluate)
            tables.main([str(write_table(tmp_path / "t.yaml", rows)), "--tiny", *args, f"output_root={tmp_path}",
                         "train.max_steps=1", "eval.max_examples=1", "eval.generation.max_new_tokens=2"])
        return calls

    return run


def test_finished_rows_are_skipped_and_changed_ones_rerun(table, tmp_path):
    rows = [{"name": "a", "eval_sets": ["uinst"], "overrides": ["loss=csd"]}, {"name": "b", "overrides": ["loss=fkl"]}]
    assert table(rows) == {"train": ["a", "b"], "eval": ["a"]}
    assert table(rows) == {"train": [], "eval": []}                       # everything finished: nothing redone
    (tmp_path / "t" / "a" / "eval" / "metrics.json").unlink()              # evaluation interrupted
    assert table(rows) == {"train": [], "eval": ["a"]}
    rows[1]["overrides"].append("optim.lr=3e-4")                          # another config under the same row
    assert table(rows) == {"train": ["b"], "eval": []}
    assert table(rows, "--force") == {"train": ["a", "b"], "eval": ["a"]}


def test_a_stopped_run_is_not_finished(table, tmp_path):
    """A run without metrics.json (stopped or crashed) is trained again."""
    rows = [{"name": "a", "overrides": ["loss=csd"]}]
    table(rows)
    (tmp_path / "t" / "a" / "metrics.json").unlink()
    assert table(rows)["train"] == ["a"]


def test_off_policy_rows_read_one_teacher_cache_built_before_them(table, tmp_path, monkeypatch):
    import csd.distiller
    import csd.teacher_cache

    builds, heads = [], []
    real_build, real_train = csd.teacher_cache.build, csd.distiller.Distiller.train
    monkeypatch.setattr(csd.teacher_cache, "build", lambda folder, *a, **k: builds.append(folder) or
                        real_build(folder, *a, **k))

    def train(self):
        heads.append((self.cfg.run_name, self.models.teacher is None and self.models.teacher_head is not None))
        return real_train(self)
    monkeypatch.setattr(csd.distiller.Distiller, "train", train)
    rows = [{"name": "a", "overrides": ["loss=csd"]}, {"name": "b", "overrides": ["loss=fkl"]},
            {"name": "sft", "overrides": ["loss=sft", "train.kd_ratio=0.0"]}]
    assert table(rows)["train"] == ["a", "b", "sft"]
    assert len(builds) == 1 and builds[0].parent == tmp_path / "teacher_cache"  # one build, before the rows
    assert heads == [("a", True), ("b", True), ("sft", False)]  # the distilling rows: the teacher's head only
    assert table(rows)["train"] == [] and len(builds) == 1  # finished: nothing built or trained again
    # an on-policy row runs the live teacher; a row finished with the live teacher counts as finished
    on_policy = tables.Run("g", [], ["loss=fkl", "batches=gkd"])
    assert tables.row_config(on_policy, "t", [], None)[1].train.teacher_cache is None
    assert table(rows, "train.teacher_cache=null")["train"] == []

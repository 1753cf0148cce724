"""scripts/run_table.py skips rows whose training finished with the same config and whose evaluation exists,
so an interrupted table continues where it stopped; a changed config or --force reruns the row."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))


@pytest.fixture
def table(tmp_path, monkeypatch, tiny_pair):
    """run(rows, *args) -> {'train': [rows trained], 'eval': [rows evaluated]} for one run_table.py --tiny call."""
    import run_table

    import csd.evaluate
    import csd.train

    (tmp_path / "tiny_models").mkdir()
    for name, path in zip(("teacher", "student"), tiny_pair):  # the session's tiny models instead of new ones
        (tmp_path / "tiny_models" / name).symlink_to(path)

    def run(lines: str, *args: str) -> dict:
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
            patch.setattr(sys, "stdin", io.StringIO(lines))
            run_table.main(["--table", "t", "--tiny", *args, "--", f"output_root={tmp_path}", "train.max_steps=1",
                            "eval.max_examples=1", "eval.generation.max_new_tokens=2"])
        return calls

    return run


def test_finished_rows_are_skipped_and_changed_ones_rerun(table, tmp_path):
    rows = "a\t[uinst]\tloss=csd\nb\t-\tloss=fkl\n"
    assert table(rows) == {"train": ["a", "b"], "eval": ["a"]}
    assert table(rows) == {"train": [], "eval": []}                       # everything finished: nothing redone
    (tmp_path / "t" / "a" / "eval" / "metrics.json").unlink()              # evaluation interrupted
    assert table(rows) == {"train": [], "eval": ["a"]}
    changed = rows.replace("loss=fkl", "loss=fkl optim.lr=3e-4")           # another config under the same row
    assert table(changed) == {"train": ["b"], "eval": []}
    assert table(changed, "--force") == {"train": ["a", "b"], "eval": ["a"]}


def test_a_stopped_run_is_not_finished(table, tmp_path):
    """A run without metrics.json (stopped or crashed) is trained again."""
    rows = "a\t-\tloss=csd\n"
    table(rows)
    (tmp_path / "t" / "a" / "metrics.json").unlink()
    assert table(rows)["train"] == ["a"]

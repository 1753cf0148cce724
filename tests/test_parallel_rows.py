"""python -m csd.tables <table> --devices ...: rows run concurrently, each on its own devices and port, with the
sequential run's skip-finished logic and results; a failed row is reported and does not stop the others."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from csd import parallel_rows, tables
from csd.parallel_rows import Job, row_launch, run_jobs

REPO = Path(__file__).resolve().parent.parent
ACCELERATE_DIR = REPO / "configs" / "accelerate"


def test_a_row_takes_as_many_devices_as_its_launch_file():
    assert row_launch(None, None) == ([], 1)                                  # python -m csd.train, one GPU
    launch, devices = row_launch(str(ACCELERATE_DIR / "zero3_bf16_4gpu.yaml"), None)
    assert devices == 4 and launch[-2:] == ["--config_file", str(ACCELERATE_DIR / "zero3_bf16_4gpu.yaml")]
    assert row_launch(str(ACCELERATE_DIR / "zero1_bf16_1gpu.yaml"), None)[1] == 1
    # CSD_LAUNCH set by the user replaces the row's file: its --num_processes, else its file's, else one device
    eight = f"accelerate launch --config_file {ACCELERATE_DIR / 'zero3_bf16_8gpu.yaml'}"
    assert row_launch("ignored.yaml", eight)[1] == 8
    assert row_launch(None, f"{eight} --num_processes 2")[1] == 2
    assert row_launch(None, f"{eight} --num_processes=3")[1] == 3
    assert row_launch(None, "python")[1] == 1
    with pytest.raises(SystemExit, match="no-such.yaml: no such file"):
        row_launch("configs/accelerate/no-such.yaml", None)


@pytest.mark.parametrize("text", ["", "0,0", " , "])
def test_devices_must_be_distinct_ids(text):
    with pytest.raises(SystemExit, match="distinct device ids"):
        parallel_rows.parse_devices(text)


class FakeProcess:
    """Runs for ``polls`` polls, then exits with ``status``; checks no device is held twice."""
    in_use: set = set()

    def __init__(self, devices: list[str], polls: int, status: int, log: list):
        assert not FakeProcess.in_use & set(devices), f"{devices} already in use"
        FakeProcess.in_use |= set(devices)
        self.devices, self.polls, self.status, self.returncode = devices, polls, status, None
        log.append(len(FakeProcess.in_use))

    def poll(self):
        self.polls -= 1
        if self.polls > 0:
            return None
        FakeProcess.in_use -= set(self.devices)
        self.returncode = self.status
        return self.status


def test_jobs_share_the_devices_without_overlap_and_a_failure_stops_nothing(tmp_path, capsys):
    accelerate = ["python", "-m", "accelerate.commands.launch", "--config_file", "x.yaml"]
    jobs = [Job("a", ["a"], 1, [], tmp_path / "a.log"), Job("b", ["b"], 2, accelerate, tmp_path / "b.log"),
            Job("c", ["c"], 1, [], tmp_path / "c.log"), Job("d", ["d"], 3, accelerate, tmp_path / "d.log"),
            Job("e", ["e"], 1, ["torchrun"], tmp_path / "e.log"),
            Job("f", ["-m", "csd.teacher_cache"], 2, accelerate, tmp_path / "f.log", direct=True)]
    polls, status = {"a": 3, "b": 2, "c": 4, "d": 1, "e": 1, "f": 1}, {"c": 2}
    started, busy, commands = [], [], {}

    def start(command, env, stdout, stderr):
        name = "f" if command[-1] == "csd.teacher_cache" else command[0]
        started.append((name, env))
        commands[name] = command
        stdout.write(f"last line of {name}\n")
        return FakeProcess(env["CUDA_VISIBLE_DEVICES"].split(","), polls[name], status.get(name, 0), busy)

    run_jobs(jobs, ["0", "1", "2"], "t", env={"CSD_LAUNCH": "user's", "KEEP": "1"}, poll_s=0, start=start)
    assert [name for name, _ in started] == ["a", "b", "c", "e", "f", "d"]  # e, f fit while d waits for three
    assert max(busy) == 3 and [j.status for j in jobs] == [0, 0, 2, 0, 0, 0]   # c failed, d, e and f still ran
    envs = dict(started)
    assert [len(envs[j.name]["CUDA_VISIBLE_DEVICES"].split(",")) for j in jobs] == [1, 2, 1, 3, 1, 2]
    assert envs["a"]["CUDA_VISIBLE_DEVICES"] == "0" and envs["b"]["CUDA_VISIBLE_DEVICES"] == "1,2"
    ports = {name: int(env["MASTER_PORT"]) for name, env in started}
    assert len(set(ports.values())) == 6 and ports == {j.name: j.port for j in jobs}
    assert "CSD_LAUNCH" not in envs["a"] and envs["a"]["KEEP"] == "1"        # python -m csd.train; the rest kept
    assert envs["b"]["CSD_LAUNCH"].endswith(f"--config_file x.yaml --main_process_port {envs['b']['MASTER_PORT']}")
    assert envs["e"]["CSD_LAUNCH"] == "torchrun"                               # not accelerate: no port flag
    assert commands["a"] == ["a"] and commands["f"] == [*accelerate, "--main_process_port", str(ports["f"]), "-m",
                                                        "csd.teacher_cache"]   # run under its launch, on its port
    out = capsys.readouterr().out
    assert "== t/c: FAILED after 0.0 min (exit 2): last line of c" in out and "== t/b: started on devices 1,2" in out
    summary = parallel_rows.summary("t", jobs, ["f"], {"g": "its teacher cache failed"})
    assert summary.splitlines()[0] == "== t: 5 done, 1 failed, 1 already finished, 1 not run"


def test_a_row_needing_more_devices_than_given_is_refused(tmp_path):
    job = Job("big", ["x"], 4, ["accelerate", "launch", "--config_file", "zero3_bf16_4gpu.yaml"], tmp_path / "log")
    with pytest.raises(SystemExit, match="big takes 4 devices .* --devices gives 2"):
        run_jobs([job], ["0", "1"], "t", start=lambda *a, **k: pytest.fail("started"))


def metrics(root: Path, row: str) -> dict:
    """A row's training summary without its times, its final weights, its evaluation scores and sampled answers."""
    train = json.loads((root / "t" / row / "metrics.json").read_text())
    train.pop("wall_s")
    for record in [train["train"], *train["history"]]:
        record.pop("train/tokens_per_s")
    evaluation, answers = root / "t" / row / "eval" / "metrics.json", root / "t" / row / "eval" / "uinst" / "seed10"
    return {"train": train, "weights": (root / "t" / row / "final" / "model.safetensors").read_bytes(),
            "eval": json.loads(evaluation.read_text())["results"] if evaluation.exists() else None,
            "answers": (answers / "answers.jsonl").read_text() if answers.exists() else None}


def test_devices_run_the_tiny_table_concurrently_as_the_sequential_run(tmp_path, tiny_pair, monkeypatch, capsys):
    rows = [{"name": "a", "eval_sets": ["uinst"], "overrides": ["loss=csd"]}, {"name": "b", "overrides": ["loss=fkl"]},
            {"name": "c", "overrides": ["loss=sft", "train.kd_ratio=0.0", "data.path=/nonexistent"]}]  # fails
    table = tmp_path / "t.yaml"
    table.write_text(yaml.safe_dump({"experiment_name": "t", "rows": rows}))
    for root in ("sequential", "devices"):
        (tmp_path / root / "tiny_models").mkdir(parents=True)
        for name, path in zip(("teacher", "student"), tiny_pair):
            (tmp_path / root / "tiny_models" / name).symlink_to(path)
    common = ["--tiny", "train.max_steps=1", "eval.max_examples=1", "eval.generation.max_new_tokens=2"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")   # the rows' processes: one thread, as this one
    tables.main([str(table), *common, "--only", "a", "--only", "b", f"output_root={tmp_path / 'sequential'}"])

    started, real_popen = [], subprocess.Popen

    def popen(command, env, **kwargs):
        started.append((command[command.index("-m") + 1:], env))
        return real_popen(command, env=env, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    capsys.readouterr()
    with pytest.raises(SystemExit, match="1 of the table's jobs failed"):
        tables.main([str(table), *common, "--devices", "0,1", f"output_root={tmp_path / 'devices'}"])
    out = capsys.readouterr().out
    assert [command[0] for command, _ in started] == ["csd.teacher_cache", "csd.tables", "csd.tables", "csd.tables"]
    assert [command[-3:] for command, _ in started[1:]] == [["--only", row, "--no-collect"] for row in "abc"]
    devices = [env["CUDA_VISIBLE_DEVICES"] for _, env in started]
    assert devices[:3] == ["0", "0", "1"] and devices[3] in ("0", "1")  # the cache; a and b side by side; then c
    assert len({env["MASTER_PORT"] for _, env in started}) == 4 and all("CSD_LAUNCH" not in env for _, env in started)
    assert "== t/c: FAILED" in out and "data.path=/nonexistent" in out and "== t: 2 done, 1 failed" in out
    for row in "ab":
        assert metrics(tmp_path / "devices", row) == metrics(tmp_path / "sequential", row)
    assert metrics(tmp_path / "devices", "a")["answers"] is not None
    # rows trained and evaluated with this config are not started again (nor is their cache)
    started.clear()
    tables.main([str(table), *common, "--devices", "0,1", "--only", "a", "--only", "b",
                 f"output_root={tmp_path / 'devices'}"])
    assert started == [] and "== t: 0 done, 0 failed, 2 already finished" in capsys.readouterr().out

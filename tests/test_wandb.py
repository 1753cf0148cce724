"""W&B offline on the tiny pair: training and its evaluation land in one W&B run, tables are published, W&B trouble never
stops a run, and nothing leaves the machine.

What W&B recorded is read back from its offline files, not from our own code's values: each `wandb/offline-run-*/
run-<id>.wandb` is W&B's transaction log (LevelDB log format: a 7-byte ':W&B' header, 32 KiB blocks of records with a
7-byte header each, FULL/FIRST/MIDDLE/LAST fragments) of `wandb_internal_pb2.Record` protobufs; wandb 0.31 has no
reader of its own (`wandb.sdk.internal.datastore` is gone) and writes no wandb-summary.json offline. Tables are the
JSON files the summary/history entries point at (files/<path>).
"""
from __future__ import annotations

import json
import logging
import socket
import struct
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
BLOCK, HEADER = 32768, 7


def wandb_records(path: Path):
    """The protobuf records of one .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    position, fragments = HEADER, b""
    while position + HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < HEADER:  # block trailer: padding
            position += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position:position + HEADER])
        if length == 0 and kind == 0:  # zero-filled rest of the block
            position += left
            continue
        fragments += data[position + HEADER:position + HEADER + length]
        position += HEADER + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(fragments)
            yield record
            fragments = b""


def _updates(items, into: dict) -> None:
    for item in items:
        keys = [item.key] if item.key else list(item.nested_key)
        node = into
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = json.loads(item.value_json)


def complete_records(log_file: Path, timeout: float = 30.0) -> list:
    """The records of a run's log once it ends with the exit record (wandb-core may still be writing after finish())."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout
    while True:
        try:
            records = list(wandb_records(log_file)) if log_file.stat().st_size > HEADER else []
        except DecodeError:  # a record still being written (seen on a loaded machine): read again
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def offline_runs(wandb_root: Path) -> list[dict]:
    """Every offline run directory under <wandb_root>/wandb: id, name, group, tags, job type, config, summary, history."""
    runs = []
    for run_dir in sorted((wandb_root / "wandb").glob("offline-run-*")):
        (log_file,) = run_dir.glob("run-*.wandb")
        run = {"dir": run_dir, "config": {}, "summary": {}, "history": [], "stats": 0, "exit": False}
        for record in complete_records(log_file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                r = record.run
                run.update(id=r.run_id, project=r.project, name=r.display_name, group=r.run_group,
                           job_type=r.job_type, tags=list(r.tags))
                _updates(r.config.update, run["config"])
            elif kind == "config":
                _updates(record.config.update, run["config"])
            elif kind == "summary":
                _updates(record.summary.update, run["summary"])
            elif kind == "history":
                row = {}
                _updates(record.history.item, row)
                run["history"].append(row)
            elif kind == "stats":
                run["stats"] += 1
            elif kind == "exit":
                run["exit"] = True
        assert run["exit"], f"{log_file}: no exit record, the run did not finish"
        runs.append(run)
    return runs


def table_of(run: dict, value: dict) -> dict:
    """The JSON of a logged wandb.Table (columns, data)."""
    assert value["_type"] == "table-file", value
    return json.loads((run["dir"] / "files" / value["path"]).read_text())


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B offline with its files under tmp_path/wandb_root; any connection off this machine raises and is recorded."""
    root = tmp_path / "wandb_root"
    root.mkdir()
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(root), "WANDB_SILENT": "true",
                       "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "", "WANDB_DISABLE_GIT": "true"}.items():
        monkeypatch.setenv(key, value)
    attempts = []
    real_connect, real_create = socket.socket.connect, socket.create_connection

    def local(address) -> bool:
        return isinstance(address, (str, bytes)) or str(address[0]) in ("127.0.0.1", "localhost", "::1")

    def connect(sock, address):
        if not local(address):
            attempts.append(address)
            raise OSError(f"network access in a test: {address}")
        return real_connect(sock, address)

    def create_connection(address, *args, **kwargs):
        if not local(address):
            attempts.append(address)
            raise OSError(f"network access in a test: {address}")
        return real_create(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    import csd.logger

    monkeypatch.setattr(csd.logger, "_warned", False)
    yield root
    assert attempts == [], f"W&B tried the network: {attempts}"


def fixture_eval_set(tmp_path: Path, name: str = "uinst", folder: str = "uinst/11_") -> str:
    import yaml

    cfg = yaml.safe_load((REPO / "configs" / "data" / f"{name}.yaml").read_text())
    cfg.update(path=str(FIXTURES / folder), max_new_tokens=4)
    path = tmp_path / f"{name}_fixture.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def evaluate(checkpoint: Path, tmp_path: Path, *overrides: str) -> dict:
    from csd.config import compose
    from csd.evaluate import run_evaluation

    return run_evaluation(compose([f"model.name_or_path={checkpoint}", f"eval_sets=[{fixture_eval_set(tmp_path)}]",
                                   "seeds=[10,20]", "max_examples=2", "progress=false", "device=cpu",
                                   f"output_dir={checkpoint.parent / 'eval'}", *overrides], config_name="evaluate"))


def test_training_and_its_evaluation_land_in_one_wandb_run(train_config, offline_wandb, tmp_path):
    from csd.train import run

    cfg = train_config("logger=wandb", "loss.weighting=TS", "experiment_name=table1", "train.save_final_model=true")
    run(cfg)
    run_dir = Path(cfg.output_dir)
    saved = json.loads((run_dir / "wandb_run.json").read_text())
    report = evaluate(run_dir / "final", tmp_path)  # logger=auto: the run logged to W&B, so its W&B run gets the scores

    runs = offline_runs(offline_wandb)
    assert len(runs) == 2 and {r["id"] for r in runs} == {saved["id"]}  # one W&B run: trained, then resumed by id
    trained, evaluated = runs
    assert (trained["name"], trained["group"], trained["job_type"]) == (cfg.run_name, "table1", "train")
    assert run_dir.name == cfg.run_name and set(trained["tags"]) == {"csd", "weighting=TS"}
    assert trained["config"]["loss"]["weighting"] == "TS"                       # resolved config
    assert trained["config"]["output_dir"] == str(run_dir)
    assert [row["_step"] for row in trained["history"]] == [1, 2]                        # optimizer step = W&B step
    assert all("train/kd" in row for row in trained["history"]) and trained["stats"] == 0  # no system metrics on CPU

    uinst = report["results"]["uinst"]
    summary = evaluated["summary"]
    assert summary["eval/uinst/rougeL"] == pytest.approx(uinst["mean"]["rougeL"])
    assert summary["eval/uinst/rougeL_std"] == pytest.approx(uinst["std"]["rougeL"])
    assert [summary[f"eval/uinst/seed{s}/rougeL"] for s in (10, 20)] == pytest.approx(
        [uinst["per_seed"][s]["rougeL"] for s in ("10", "20")])
    samples = table_of(evaluated, summary["eval/uinst/samples"])
    answers = [json.loads(line) for line in (run_dir / "eval" / "uinst" / "seed10" / "answers.jsonl").open()]
    assert samples["columns"] == ["index", "prompt", "reference", "answer"]
    assert [row[1:] for row in samples["data"]] == [[a["prompt"], a["references"][0], a["text"]] for a in answers]
    assert evaluated["config"]["eval"]["seeds"] == [10, 20]


def test_resumed_training_continues_its_wandb_run(train_config, offline_wandb):
    from csd.train import run

    run(train_config("logger=wandb", "train.max_steps=2", "train.stop_after_steps=1"))
    run(train_config("logger=wandb", "train.max_steps=2", "train.resume=auto"))
    first, second = offline_runs(offline_wandb)
    assert first["id"] == second["id"]
    assert [row["_step"] for row in first["history"]] == [1] and [row["_step"] for row in second["history"]] == [2]


def test_evaluation_of_a_run_without_wandb(train_config, offline_wandb, tmp_path, monkeypatch, caplog):
    """logger=auto leaves a run trained without W&B alone (W&B not even imported); logger=wandb makes a linked
    evaluation run in the training run's group, named and tagged like the training run."""
    from csd.train import run

    cfg = train_config("train.save_final_model=true", "experiment_name=table1")
    run(cfg)
    run_dir = Path(cfg.output_dir)
    monkeypatch.setitem(sys.modules, "wandb", None)  # importing wandb now raises ImportError (and warns)
    with caplog.at_level(logging.WARNING, logger="csd.logger"):
        evaluate(run_dir / "final", tmp_path)
    assert not [r for r in caplog.records if r.name == "csd.logger"], "logger=auto tried W&B for a run without it"
    assert not (offline_wandb / "wandb").exists() and not (run_dir / "wandb_run.json").exists()
    monkeypatch.delitem(sys.modules, "wandb")
    evaluate(run_dir / "final", tmp_path, "logger=wandb")
    (linked,) = offline_runs(offline_wandb)
    assert (linked["name"], linked["group"], linked["job_type"]) == (cfg.run_name, "table1", "eval")
    assert set(linked["tags"]) == {"csd", "weighting=SS"} and "eval/uinst/rougeL" in linked["summary"]
    assert json.loads((run_dir / "wandb_run.json").read_text())["id"] == linked["id"]


@pytest.mark.parametrize("failure", ["missing", "init_raises", "log_raises"])
def test_wandb_trouble_never_stops_a_run(train_config, offline_wandb, monkeypatch, caplog, failure):
    from csd.train import run

    if failure == "missing":
        monkeypatch.setitem(sys.modules, "wandb", None)
    else:
        import wandb

        def fail(*args, **kwargs):
            raise RuntimeError("W&B is down")

        if failure == "init_raises":
            monkeypatch.setattr(wandb, "init", fail)
        else:  # and finishing fails too: still one warning
            monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", fail)
            monkeypatch.setattr(wandb.sdk.wandb_run.Run, "finish", fail)
    with caplog.at_level(logging.WARNING, logger="csd.logger"):
        summary = run(train_config("logger=wandb", "train.max_steps=2"))
    assert summary["steps"] == 2
    warnings = [r for r in caplog.records if r.name == "csd.logger"]
    assert len(warnings) == 1 and "continuing without W&B" in warnings[0].getMessage()


def test_table_publishing_writes_a_table_with_the_paper_column(tmp_path, tiny_pair, offline_wandb):
    """csd.tables --wandb: the row's training, its evaluation and the published table, all offline."""
    from csd import tables

    (tmp_path / "tiny_models").mkdir()
    for name, path in zip(("teacher", "student"), tiny_pair):
        (tmp_path / "tiny_models" / name).symlink_to(path)
    table = tmp_path / "table1.yaml"
    table.write_text(yaml.safe_dump({"experiment_name": "table1", "eval_sets": ["dolly"],
                                     "rows": [{"name": "csd", "overrides": ["experiment=table1", "loss=csd"]}]}))
    tables.main([str(table), "--tiny", "--wandb", f"output_root={tmp_path}", "train.max_steps=1",
                 "eval.max_examples=2", "eval.generation.max_new_tokens=2"])
    runs = offline_runs(offline_wandb)
    published = [r for r in runs if r["job_type"] == "results"]
    row_runs = {r["id"] for r in runs if r["job_type"] == "train"}
    assert len(published) == 1 and len(row_runs) == 1
    assert {r["id"] for r in runs if r["job_type"] != "results"} == row_runs  # evaluation resumed the row's run
    (results,) = published
    assert (results["name"], results["group"]) == ("table1-results", "table1")
    table = table_of(results, results["summary"]["results"])
    lines = [dict(zip(table["columns"], row)) for row in table["data"]]
    (dolly,) = [line for line in lines if line["eval_set"] == "dolly"]
    assert (dolly["row"], dolly["loss"], dolly["metric"]) == ("csd", "csd", "rougeL")
    assert dolly["paper"] == pytest.approx(24.94) and dolly["diff"] == pytest.approx(dolly["mean"] - 24.94)
    eval_report = json.loads((tmp_path / "table1" / "csd" / "eval" / "metrics.json").read_text())
    assert dolly["mean"] == pytest.approx(eval_report["results"]["dolly"]["mean"]["rougeL"])
    grid = table_of(results, results["summary"]["results_grid"])
    assert grid["columns"] == ["row", "dolly"] and grid["data"][0][0] == "csd" and "[24.94" in grid["data"][0][1]
    assert "figures/fidelity_diversity" in results["config"]["_wandb"]["visualize"]  # a W&B scatter
    assert (tmp_path / "table1" / "figures" / "fidelity_diversity_table1.png").exists()


def test_figures_are_published_as_wandb_charts_and_pngs(tmp_path, offline_wandb):
    """plot_results.py --wandb: Fig. 5(a) as a line chart, Fig. 3 as a bar chart, next to their PNGs."""
    sys.path.insert(0, str(REPO / "scripts"))
    import plot_results

    root = tmp_path / "outputs"
    rows = {"fig5a_temperature": {"csd_tau0.5": 10.0, "csd_tau1.5": 12.0}, "fig3_weighting": {"csd_SS": 11.0, "csd_TS": 9.0}}
    for table, scores in rows.items():
        for row, score in scores.items():
            (root / table / row / "eval").mkdir(parents=True)
            result = {"metric": "rougeL", "seeds": [10], "mean": {"rougeL": score}, "std": {"rougeL": 0.0}}
            (root / table / row / "eval" / "metrics.json").write_text(json.dumps({"results": {"dolly": result}}))
    plot_results.main(["--root", str(root), "--out", str(tmp_path / "figures"), "--wandb"])
    runs = {r["group"]: r for r in offline_runs(offline_wandb)}
    assert set(runs) == set(rows) and all(r["job_type"] == "results" for r in runs.values())
    expected = {"fig5a_temperature": ("figures/temperature", "wandb/line/v0", [[0.5, 10.0, "dolly"], [1.5, 12.0, "dolly"]]),
                "fig3_weighting": ("figures/weighting", "wandb/bar/v0", [["SS dolly", 11.0], ["TS dolly", 9.0]])}
    for table, (key, panel, data) in expected.items():
        run = runs[table]
        assert run["config"]["_wandb"]["visualize"][key]["panel_config"]["panelDefId"] == panel
        assert table_of(run, run["summary"][f"{key}_table"])["data"] == data
        assert run["summary"][f"figures/{table}"]["_type"] == "image-file"
        assert (tmp_path / "figures" / f"{table}.png").exists()


def test_cpu_frontier_logs_its_table_and_figures(tmp_path, offline_wandb):
    """scripts/cpu_frontier.py with logger=wandb: one results run with the rows as a Table, the plane as a scatter chart,
    the curves, the PNG and the computed Pareto set / claims in the summary."""
    from omegaconf import OmegaConf
    from test_sweep import synthetic_results

    sys.path.insert(0, str(REPO / "scripts"))
    import cpu_frontier

    results = synthetic_results()
    results.update(cpu_frontier.analyse(results))
    png = tmp_path / "cpu_frontier.png"
    cpu_frontier.figure(results, png)
    cpu_frontier.log_wandb(results, png, OmegaConf.create({"project": "csd", "entity": None, "mode": "offline"}))
    (run,) = offline_runs(offline_wandb)
    assert (run["group"], run["job_type"], run["name"]) == ("cpu_frontier", "results", "cpu_frontier-results")
    table = table_of(run, run["summary"]["frontier"])
    rows = {line[0]: dict(zip(table["columns"], line)) for line in table["data"]}
    assert set(rows) == set(results["rows"])
    assert rows["srkl"]["pareto"] is True and rows["csd"]["pareto"] is False
    assert rows["csd"]["rougeL_mean"] == 12 and rows["fkl"]["distinct_2_mean"] == 0.97
    visualize = run["config"]["_wandb"]["visualize"]
    assert visualize["figures/fidelity_diversity"]["panel_config"]["panelDefId"] == "wandb/scatter/v0"
    assert visualize["figures/temperature"]["panel_config"]["panelDefId"] == "wandb/line/v0"
    assert run["summary"]["figures/cpu_frontier"]["_type"] == "image-file"
    assert run["summary"]["pareto"]["distinct_2"]["front"] == results["pareto"]["distinct_2"]["front"]

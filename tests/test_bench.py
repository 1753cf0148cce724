"""The benchmark scripts keep working (tiny sizes; the numbers themselves are not asserted — see docs/bench)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_losses_runs_and_writes_its_outputs(tmp_path):
    cases = ["plain_csd", "csd", "plain_linear_csd", "fused_csd", "fused_js", "liger_jsd"]
    subprocess.run([sys.executable, "scripts/bench_losses.py", "--sizes", "64x500", "--hidden", "16", "--repeats", "1",
                    "--cases", *cases, "--out", str(tmp_path)], cwd=REPO, check=True, capture_output=True, text=True)
    rows = json.loads((tmp_path / "bench_losses.json").read_text())
    liger = importlib.util.find_spec("liger_kernel") is not None
    assert {r["case"] for r in rows} == set(cases) - (set() if liger else {"liger_jsd"})
    assert all(r["time_s"] > 0 for r in rows)
    assert (tmp_path / "bench_losses.png").stat().st_size > 0
    markdown = (tmp_path / "bench_losses.md").read_text()
    assert "| csd | 64 × 500 |" in markdown
    assert ("Against Liger-Kernel" in markdown) if liger else ("Liger-Kernel not installed" in markdown)
    if liger:  # the same JSD as Liger's (λ 0.9 = beta 0.1)
        values = {r["case"]: r["value"] for r in rows}
        assert abs(values["fused_js"] - values["liger_jsd"]) < 1e-4


def test_bench_train_runs_and_writes_its_report(tmp_path):
    result = subprocess.run([sys.executable, "scripts/bench_train.py", "--tiny", "--variants", "fp32", "fp32_plain_ce",
                             "--steps", "1", "--warmup", "1", "--out", str(tmp_path), "--scratch", str(tmp_path / "s")],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "bench_train.json").read_text())
    assert [r["variant"] for r in report["rows"]] == ["fp32", "fp32_plain_ce"]
    assert all(r["tokens_per_s"] > 0 for r in report["rows"])
    assert "| fp32_plain_ce |" in (tmp_path / "bench_train.md").read_text()

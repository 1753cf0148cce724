"""The benchmark script keeps working (tiny sizes; the numbers themselves are not asserted — see README)."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_losses_runs_and_writes_its_outputs(tmp_path):
    subprocess.run([sys.executable, "scripts/bench_losses.py", "--sizes", "64x500", "--hidden", "16", "--repeats", "1",
                    "--out", str(tmp_path)], cwd=REPO, check=True, capture_output=True, text=True)
    rows = json.loads((tmp_path / "bench_losses.json").read_text())
    assert {r["case"] for r in rows} == {"plain_csd", "plain_surrogate", "csd", "plain_linear_csd", "fused_csd"}
    assert all(r["time_s"] > 0 for r in rows)
    assert (tmp_path / "bench_losses.png").stat().st_size > 0
    assert "| csd | 64 × 500 |" in (tmp_path / "bench_losses.md").read_text()

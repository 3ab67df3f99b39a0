"""`just perf-test` (benchmarks/perf.py): it runs the benchmarks, prints their ratios and
writes one JSON file of the figures. Here with the one benchmark that needs no lab."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_perf_test_runs_a_benchmark_and_writes_its_figures(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "perf.py"), "--quick", "--only", "rekey",
         "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    (written,) = tmp_path.glob("perf-*.json")
    figures = json.loads(written.read_text())
    assert set(figures) == {"rekey"}
    rekey = figures["rekey"]
    assert rekey["exit"] == result.returncode
    assert rekey["seconds"]["nixfleet"] > 0 and rekey["seconds"]["age"] > 0
    assert "######## ratios" in result.stdout
    assert f"rekey     age / nixfleet (x faster): {rekey['ratios'][0]['value']:.2f}" \
        in result.stdout
    assert f"figures: {written}" in result.stdout

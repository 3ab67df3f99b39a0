"""`just perf-test` (benchmarks/perf.py): it runs the benchmarks, prints their ratios and
writes one JSON file of the figures. Here with the one benchmark that needs no lab."""

from __future__ import annotations

import importlib
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


# A canary run on the lab (4 hosts): the second each line came, and its summary's reasons.
CANARY_RUN = """\
5.12 --> Starting operation: nixos-rebuild switch
5.12 nixfleet: wave 1 of 2 starts: p620, razer, dex5550 (one host per hardware class)
8.57     [razer]   Success
8.65     [dex5550] Success
8.75     [p620]    Success
8.75 nixfleet: wave 1 of 2 passed
8.76 nixfleet: wave 2 of 2 starts: p510
12.13     [p510]    Success
22.30 nixfleet: wave 2 of 2 passed
22.30 --> Results:"""
CANARY_REASONS = {
    "p620": "switch done; alert gate skipped: it is the monitoring server, in this wave",
    "razer": "switch done; alert gate skipped: its monitoring server p620 is in this wave",
    "dex5550": "switch done; alert gate skipped: its monitoring server p620 is in this wave",
    "p510": "switch done; confirmed over a fresh SSH connection; alert gate: no new alert "
            "within 10s",
}


def test_rollout_benchmark_reads_each_waves_rebuild_gates_and_idle_time(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    rollout = importlib.import_module("rollout")
    lines = [(float(at), line) for at, line in
             (row.split(" ", 1) for row in CANARY_RUN.splitlines())]
    summary = {host: {"reason": reason} for host, reason in CANARY_REASONS.items()}
    first, second = rollout.waves_of(rollout.TimedSwitch(lines, summary))
    assert first.hosts == ["p620", "razer", "dex5550"] and second.hosts == ["p510"]
    assert (round(first.rebuild, 2), round(first.gates, 2), round(first.idle, 2)) \
        == (3.63, 0.0, 0.01)
    assert (round(second.rebuild, 2), round(second.gates, 2), second.idle) == (3.37, 10.17, None)
    assert (first.settle, second.settle) == (0, 10)

"""Canary rollouts on the lab: waves by hardware class (p620 amd, razer nvidia, dex5550 intel
first; then p510), each gated by the health gate, verification and the alert gate, which asks
the fleet's real Prometheus on p620."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.lab.conftest import HOSTS, configuration_with_its_checks, on, reset_after_the_module
from tests.lab.test_deploys import deploy, generation

pytestmark = pytest.mark.usefixtures("lab")
WEB_DEMO = {"web-demo": {"execStart": "/bin/sleep infinity"}}


# Every host back to first boot once these tests are done (each test starts by deploying the
# plain configuration, which undoes the one before).
reset_hosts_after_the_module = reset_after_the_module(*HOSTS)


@pytest.fixture
def repo(tmp_path, reset_hosts_after_the_module) -> Path:
    """A copy of the configuration with its verification suite, deployed to every host."""
    configuration_with_its_checks(tmp_path)
    (tmp_path / "nix" / "lab" / "faults").mkdir(exist_ok=True)
    result, _ = deploy(tmp_path, "switch")
    assert result.returncode == 0, result.stdout + result.stderr
    return tmp_path


def faults(repo: Path, **units_by_host: dict) -> None:
    for host, units in units_by_host.items():
        (repo / "nix" / "lab" / "faults" / f"{host}.json").write_text(json.dumps(units))


def group_data(repo: Path, text: str) -> None:
    with (repo / "group_data" / "all.py").open("a") as file:
        file.write(text)


def waves(summary: dict) -> dict[str, int]:
    return {host: row["wave"] for host, row in summary.items()}


def test_a_fault_only_razer_has_stops_the_rollout_after_wave_1(repo):
    before = {h: generation(h) for h in HOSTS}
    faults(repo, p620=WEB_DEMO, p510=WEB_DEMO, dex5550=WEB_DEMO, razer={
        **WEB_DEMO, "broken": {"execStart": "/bin/false", "type": "oneshot"}})
    result, summary = deploy(repo, "switch", "--data", "canary=true")
    assert result.returncode == 1, result.stdout + result.stderr
    assert waves(summary) == {"p620": 1, "razer": 1, "dex5550": 1, "p510": 2}
    assert summary["razer"]["result"] == "rolled-back"
    assert summary["p620"]["result"] == summary["dex5550"]["result"] == "changed"
    assert summary["p510"]["result"] == "not-attempted"
    assert summary["p510"]["reason"].startswith(
        "not attempted: wave 1 stopped the rollout (razer: rolled-back: switch-to-configuration "
        "switch exited 4 (failed units: broken.service)")
    assert generation("p510") == before["p510"] and generation("razer") == before["razer"]
    assert generation("p620") == before["p620"] + 1
    assert "nixfleet: wave 1 of 2 starts: p620, razer, dex5550 (one host per hardware class)" \
        in result.stdout
    assert "nixfleet: wave 1 of 2 stopped the rollout: razer rolled-back" in result.stdout
    assert "wave 2 of 2 starts" not in result.stdout
    # The table shows the waves in order.
    rows = [line for line in result.stdout.splitlines() if re.match(r"│ [12] ", line)]
    assert [row.split("│")[2].strip() for row in rows] == ["p620", "razer", "dex5550", "p510"]


def test_the_same_change_rolls_out_in_two_waves_all_verified(repo):
    faults(repo, **{h: WEB_DEMO for h in HOSTS})
    result, summary = deploy(repo, "switch", "--data", "canary=true", verify=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert waves(summary) == {"p620": 1, "razer": 1, "dex5550": 1, "p510": 2}
    for row in summary.values():
        assert row["result"] == "changed", row
        assert row["verification"]["failures"] == [] and row["verification"]["passed"] > 0
    assert summary["razer"]["reason"].endswith(
        "alert gate skipped: its monitoring server p620 is in this wave (it restarts with it)")
    assert "alert gate: no new alert within 10s" in summary["p510"]["reason"]
    stdout = result.stdout
    assert stdout.index("wave 1 of 2 passed") < stdout.index("wave 2 of 2 starts: p510")


def test_the_alert_gate_catches_an_exporter_that_serves_nothing(repo):
    # The fleet's own rule, quicker to fire here (data, not an edited rule); the gate watches
    # long enough for the NixOS exporter's 60 s scrape and a rule evaluation.
    group_data(repo, '\nalertRules = {"ExporterDown": {"for": "0s"}}\n')
    settings = (repo / "group_data" / "all.py").read_text()
    (repo / "group_data" / "all.py").write_text(settings.replace(
        '"strictUnits": False,', '"strictUnits": False, "alertGate": {"settle": 100},'))
    # p510's NixOS exporter: active, its port takes connections (the health gate passes), and
    # it never answers one.
    faults(repo, p510={"nixfleet-nixos-exporter": {"execStart": (
        "/usr/bin/python3 -c 'import socket, time; s = socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"\", 9101)); "
        "s.listen(); time.sleep(86400)'")}})
    result, summary = deploy(repo, "switch", "--data", "canary=true")
    assert result.returncode == 1, result.stdout + result.stderr
    row = summary["p510"]
    assert row["wave"] == 2 and row["result"] == "failed", row
    assert re.search(r"alert gate: ExporterDown firing: nixos-exporter on p510 does not answer$",
                     row["reason"]), row["reason"]
    assert on("p510", "systemctl is-active nixfleet-nixos-exporter").stdout.strip() == "active"
    assert summary["p620"]["result"] == "changed"  # wave 1: the new rule

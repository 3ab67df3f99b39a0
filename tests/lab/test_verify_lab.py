"""Post-deploy verification on the lab: a switched fleet passes (`nixfleet verify` and plain
pytest), each fault injected into one host is reported as exactly that failure, and a deploy
whose verification fails exits 1 with the check in its summary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nixfleet.lab.config import lab_paths
from tests.lab.conftest import ROOT, configuration_with_its_checks, nixfleet, on
from tests.lab.test_deploys import deploy, lab_env

pytestmark = pytest.mark.usefixtures("lab")


@pytest.fixture(scope="module")
def switched() -> None:
    """The whole lab switched to the repository's configuration."""
    result, summary = deploy(ROOT, "switch")
    assert result.returncode == 0, result.stdout + result.stderr
    assert {row["result"] for row in summary.values()} <= {"changed", "unchanged"}, summary


def verify(*args: str) -> tuple[int, dict]:
    result = subprocess.run([sys.executable, "-m", "nixfleet", "verify", "--json", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=lab_env(ROOT))
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def failures(report: dict) -> list[tuple[str, str, str]]:
    return [(h["host"], f["check"], f["line"]) for h in report["hosts"] for f in h["failures"]]


def test_a_switched_fleet_passes_verification(switched):
    code, report = verify()
    assert failures(report) == [] and report["errors"] == []
    assert code == 0
    checked = {h["host"]: h["passed"] for h in report["hosts"]}
    assert set(checked) == {"p620", "razer", "p510", "dex5550"}
    assert all(count >= 10 for count in checked.values()), checked


def test_the_plain_pytest_form_passes_too(switched):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/fleet", "-q", "-p", "no:cacheprovider",
         "--hosts=nvidia"], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=lab_env(ROOT))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "razer" in result.stdout and "p510" in result.stdout  # the per-host table


GPU_DRIVER = "/usr/lib/nixfleet-lab/standins/nixfleet-lab-gpu-driver"  # the lab's modprobe -r
FAULTS = {
    "an exporter stopped": (
        "dex5550", "systemctl stop nixfleet-systemd-exporter",
        "systemctl start nixfleet-systemd-exporter",
        "monitoring: the exporter serves its metrics and is scraped (systemd-exporter)",
        "nothing listens on :9102"),
    "an agenix file made world-readable": (
        "p620", "chmod 0644 /run/agenix/grafana-admin-password",
        "chmod 0440 /run/agenix/grafana-admin-password",
        "agenix: the secret is in place (grafana-admin-password)",
        "mode is 0644, expected 0440"),
    "a secret deleted": (
        "razer", "mv /run/agenix/smtp-password /root/smtp-password.moved",
        "mv /root/smtp-password.moved /run/agenix/smtp-password",
        "agenix: the secret is in place (smtp-password)",
        "missing from /run/agenix (expected root:root 0400)"),
    "a secret planted": (
        "p510", "install -m 0400 /dev/null /run/agenix/planted",
        "rm -f /run/agenix/planted",
        "agenix: no secret it should not have",
        "in /run/agenix but not its secret: planted"),
    "Ollama stopped": (
        "p510", "systemctl stop ollama", "systemctl start ollama",
        "ollama: ollama serves the configured default model",
        "ollama.service is not running"),
    "Ollama's default model removed": (
        "p620", "ollama rm mistral-small3.1", "systemctl restart ollama",
        "ollama: ollama serves the configured default model",
        "default model mistral-small3.1:latest missing (has: llama3.2:latest)"),
    "the GPU driver unloaded": (
        "razer", f"{GPU_DRIVER} unload nvidia", f"{GPU_DRIVER} load nvidia",
        "gpu: its gpus are present driven and answering",
        "0000:01:00.0: driver nvidia not in use (none bound)"),
}


@pytest.fixture
def fault(request) -> Iterator[tuple[str, str, str]]:
    host, inject, repair, check, line = FAULTS[request.param]
    on(host, inject)
    try:
        yield host, check, line
    finally:
        on(host, repair)


@pytest.mark.parametrize("fault", list(FAULTS), indirect=True)
def test_a_fault_is_reported_as_exactly_that_failure(switched, fault):
    code, report = verify()
    assert failures(report) == [fault]
    assert code == 1


def sshd_pid(name: str) -> int:
    """The PID (here) of the host's listening sshd: a child of its systemd, which is the child
    of its systemd-nspawn."""
    def children(pid: int) -> list[int]:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    nspawn = int((lab_paths().host_dir(name) / "nspawn.pid").read_text())
    (init,) = children(nspawn)
    (sshd,) = [p for p in children(init) if Path(f"/proc/{p}/comm").read_text().strip() == "sshd"]
    return sshd


def test_a_host_whose_sshd_is_stopped_costs_one_connect_timeout():
    """razer's sshd stopped (SIGSTOP: connections are accepted, never answered): every one of
    its checks fails with ssh's reason after one connection attempt, and the run takes the
    connect timeout plus the other hosts' time (it took 226 s when each check tried again)."""
    # No master connection of an earlier run may carry this one past the stopped sshd.
    for config in Path(tempfile.gettempdir()).glob(f"nixfleet-verify-{os.getuid()}/ssh_config-*"):
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", "razer"],
                       capture_output=True, timeout=10, check=False)
    pid = sshd_pid("razer")
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        code, report = verify()
        took = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    razer = next(h for h in report["hosts"] if h["host"] == "razer")
    assert razer["passed"] == 0 and len(razer["failures"]) >= 10, razer
    assert {f["line"] for f in razer["failures"]} == {
        "unreachable over SSH: Connection timed out during banner exchange"}
    others = [line for host, _, line in failures(report) if host != "razer"]
    assert not [line for line in others if "unreachable" in line or "razer" in line], others
    assert code == 1
    assert took < 20, f"verify took {took:.1f} s"


@pytest.fixture
def repo(tmp_path) -> Iterator:
    """A copy of the configuration with its verification suite; p510 is reset after."""
    configuration_with_its_checks(tmp_path)
    yield tmp_path
    nixfleet("lab", "reset", "p510")


def test_a_deploy_whose_verification_fails_exits_1_naming_the_check(switched, repo):
    """p510's default model removed, then a change that leaves Ollama running as it is: the
    switch succeeds, the verification after it fails, the deploy exits 1."""
    (repo / "nix" / "lab" / "faults").mkdir(exist_ok=True)
    (repo / "nix" / "lab" / "faults" / "p510.json").write_text(
        json.dumps({"lab-marker": {"execStart": "/bin/sleep infinity"}}))
    on("p510", "ollama rm mistral-small3.1")
    result, summary = deploy(repo, "switch", "--limit", "p510", verify=True)
    assert result.returncode == 1, result.stdout
    row = summary["p510"]
    assert row["result"] == "changed"
    assert row["verification"]["failures"] == [{
        "check": "ollama: ollama serves the configured default model",
        "line": "default model mistral-small3.1:latest missing (has: llama3.2:latest)"}]
    assert ("p510: FAILED ollama: ollama serves the configured default model: default model "
            "mistral-small3.1:latest missing (has: llama3.2:latest)") in result.stdout

"""`just ping-hosts` (nixfleet ping) against the lab: every host answers with its address,
latency and NixOS version; a host whose sshd is down is a row saying why, and the exit is 1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from nixfleet.lab.config import host_address
from tests.lab.conftest import HOSTS, ROOT, on, wait_until

pytestmark = pytest.mark.usefixtures("lab")


def lab_env() -> dict[str, str]:
    return {**os.environ, "NIXFLEET_TARGET": "lab"}


def ping(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nixfleet", "ping", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=lab_env())


def test_every_lab_host_answers_with_its_nixos_version():
    just = os.path.join(os.path.dirname(sys.executable), "just")
    table = subprocess.run([just, "ping-hosts"], cwd=ROOT, capture_output=True, text=True,
                           timeout=120, env=lab_env())
    assert table.returncode == 0, table.stdout + table.stderr
    assert f"{len(HOSTS)} of {len(HOSTS)} hosts answer over SSH" in table.stdout
    rows = {r["host"]: r for r in json.loads(ping("--json").stdout)}
    assert list(rows) == list(HOSTS)
    for index, host in enumerate(HOSTS):
        row = rows[host]
        assert row["address"] == host_address(index)
        assert row["ssh_ok"] and row["error"] is None
        assert 0 < row["latency_ms"] < 100 and 0 < row["ssh_seconds"] < 10
        assert re.fullmatch(r"\d\d\.\d\d\S* \(.+\)", row["nixos_version"]), row
        assert row["nixos_version"] == on(host, "nixos-version").stdout.strip()
        assert f"{host_address(index)}:22" in table.stdout


def test_a_host_without_sshd_is_a_row_with_the_reason():
    # The session that stops sshd survives it (KillMode=process) and starts it again when told
    # to: sshd stays down for exactly the pings, however long a busy machine makes them (it
    # came back by itself after 10 s, sometimes before the second ping). The timer only starts
    # it should this test die first.
    stopper = subprocess.Popen(
        [sys.executable, "-m", "nixfleet", "lab", "exec", "dex5550", "--",
         "systemd-run --on-active=300s --unit=ping-test-ssh systemctl start ssh.service"
         " && systemctl stop ssh.service && echo stopped && read -r _;"
         " systemctl start ssh.service; systemctl stop ping-test-ssh.timer"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert stopper.stdout is not None and stopper.stdout.readline() == "stopped\n"
        result = ping("--limit", "dex5550", "--limit", "razer")
        assert result.returncode == 1
        assert "1 of 2 hosts answer over SSH; not: dex5550" in result.stdout
        [row] = [line for line in result.stdout.splitlines() if line.startswith("│ dex5550")]
        assert "no: port 22:" in row
        rows = {r["host"]: r for r in json.loads(ping("--limit", "dex5550", "--json").stdout)}
        assert rows["dex5550"]["error"] == "port 22: Connection refused"
        assert not rows["dex5550"]["ssh_ok"] and rows["dex5550"]["nixos_version"] is None
    finally:
        stopper.communicate("\n", timeout=120)
        wait_until(lambda: ping("--limit", "dex5550").returncode == 0, 60, "dex5550's sshd")

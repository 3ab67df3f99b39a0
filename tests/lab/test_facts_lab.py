"""Facts against the lab hosts agree with the inventory; `nixfleet facts` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from nixfleet.commands.facts import expected_gpu_class
from nixfleet.flake import nixos_release
from nixfleet.inventory import load_inventory_file
from nixfleet.lab.config import host_address
from tests.lab.conftest import HOSTS, ROOT, nixfleet, on

pytestmark = pytest.mark.usefixtures("lab")
NIXOS_VERSION = f"{nixos_release(ROOT / 'nix' / 'flake.nix')}.lab"

FACTS = ["facts.nix.NixGenerations", "facts.nix.CurrentSystem", "facts.nix.BootedSystem",
         "facts.nix.NixStore", "facts.gpu.PciGpus", "facts.gpu.NvidiaGpus", "facts.gpu.AmdGpus",
         "facts.systemd.SystemState", "facts.systemd.FailedUnits"]


def lab_env() -> dict[str, str]:
    return {**os.environ, "NIXFLEET_TARGET": "lab"}


def nixfleet_facts(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nixfleet", "facts", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=lab_env())


@pytest.fixture(scope="module")
def fleet():
    os.environ["NIXFLEET_TARGET"] = "lab"
    try:
        return load_inventory_file(ROOT / "inventory.py")
    finally:
        del os.environ["NIXFLEET_TARGET"]


def test_every_fact_runs_on_the_lab_and_agrees_with_the_inventory(fleet):
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "pyinfra"), "-y", "inventory.py", "fact",
         *FACTS, "facts.systemd.UnitStates", 'units=["ssh.service"]', "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=lab_env())
    assert result.returncode == 0, result.stderr
    # Asked for by their names in this repository's facts/, answered by nixfleet's own.
    facts = {k.removeprefix("nixfleet."): v for k, v in json.loads(result.stdout).items()}
    assert set(facts) >= set(FACTS)
    for name in HOSTS:
        host = fleet.hosts[name]
        generations = facts["facts.nix.NixGenerations"][name]
        current = [g for g in generations if g["current"]]
        assert len(current) == 1 and current[0]["nixos_version"] == NIXOS_VERSION
        system = facts["facts.nix.CurrentSystem"][name]
        assert system["current"]["store_path"].endswith(f"-nixos-system-{name}-{NIXOS_VERSION}")
        assert system["reboot_required"] is False
        assert facts["facts.nix.BootedSystem"][name]["kernel_modules"] \
            == system["current"]["kernel_modules"]
        assert facts["facts.nix.NixStore"][name]["paths"] >= 5
        pci = facts["facts.gpu.PciGpus"][name]
        assert [(g["slot"], g["vendor_id"], g["device_id"], g["driver"]) for g in pci] == [
            (g.slot, g.vendorId, g.deviceId, g.driver) for g in host.gpus]
        nvidia = facts["facts.gpu.NvidiaGpus"][name] or []
        assert [g["uuid"] for g in nvidia] == [g.uuid for g in host.gpus if g.vendor == "nvidia"]
        assert [g["memory_total_mib"] for g in nvidia] == \
            [g.vramMiB for g in host.gpus if g.vendor == "nvidia"]
        amd = facts["facts.gpu.AmdGpus"][name] or []
        assert len(amd) == sum(g.vendor == "amd" for g in host.gpus)
        assert facts["facts.systemd.SystemState"][name] == "running"
        assert facts["facts.systemd.FailedUnits"][name] == []
        units = next(v for k, v in facts.items() if k.startswith("facts.systemd.UnitStates"))
        assert units[name]["ssh.service"]["active"] == "active"


def test_nixfleet_facts_rows_match_the_inventory(fleet):
    result = nixfleet_facts("--json")
    assert result.returncode == 0, result.stderr
    rows = {row["host"]: row for row in json.loads(result.stdout)}
    assert list(rows) == list(HOSTS)
    for name, row in rows.items():
        host = fleet.hosts[name]
        assert row["gpu_state"]["hardware_class"] == expected_gpu_class(host)
        assert row["gpu_state"]["compute"] == host.graphics.compute
        assert row["warnings"] == [] and row["errors"] == {}
        assert row["nixos_version"] == NIXOS_VERSION and row["reboot_required"] is False
    table = nixfleet_facts("--limit", "nvidia")
    assert table.returncode == 0
    assert "razer" in table.stdout and "p510" in table.stdout and "p620" not in table.stdout


def test_facts_costs_one_ssh_command_per_host():
    """Counted in sshd's own log on a lab host: exec and subsystem requests per deployer run."""
    on("p620", "echo 'LogLevel DEBUG1' > /etc/ssh/sshd_config.d/zz-debug.conf && "
               "systemctl reload ssh")
    try:
        # Lab hosts share this machine's clock: a window that holds only the facts run.
        time.sleep(1.1)
        start = int(time.time()) + 1
        time.sleep(1.1)
        assert nixfleet_facts("--limit", "p620", "--json").returncode == 0
        end = int(time.time()) + 1
        time.sleep(1.1)
        log = on("p620", f"journalctl -u ssh --since @{start} --until @{end} --no-pager").stdout
    finally:
        on("p620", "rm -f /etc/ssh/sshd_config.d/zz-debug.conf && systemctl reload ssh")
    commands = [line for line in log.splitlines()
                if "request exec" in line or "request subsystem" in line]
    connections = [line for line in log.splitlines() if "Accepted publickey" in line]
    assert len(connections) == 1, log
    assert 1 <= len(commands) <= 2, log


def test_an_nvidia_host_without_its_driver_is_flagged():
    """p510 booted a generation without the NVIDIA kernel module: a real fault."""
    booted = on("p510", "readlink /run/booted-system").stdout.strip()
    on("p510", f"rm -rf /tmp/sys && cp -a {booted} /tmp/sys && chmod u+w /tmp/sys && "
               "rm /tmp/sys/kernel-modules && echo i915 > /tmp/sys/kernel-modules && "
               "ln -sfn /tmp/sys /run/booted-system")
    try:
        result = nixfleet_facts("--limit", "p510", "--json")
    finally:
        on("p510", f"ln -sfn {booted} /run/booted-system")
    row = json.loads(result.stdout)[0]
    assert row["warnings"] == [
        "p510: nvidia-class host without cuda: NVIDIA driver not loaded (driver in use: none)"]
    assert row["reboot_required"] is True
    table = nixfleet_facts("--limit", "p510")
    assert "warning:" not in table.stdout  # restored: no warning any more


def test_an_unreachable_host_is_a_row_with_its_error():
    on("dex5550", "systemctl stop ssh.socket ssh.service", check=False)
    try:
        result = nixfleet_facts("--json")
        rows = {row["host"]: row for row in json.loads(result.stdout)}
    finally:
        nixfleet("lab", "reset", "dex5550")
    assert result.returncode == 1
    assert rows["dex5550"]["reachable"] is False
    assert rows["dex5550"]["error"] == ("Could not connect ([Errno None] Unable to connect to "
                                        f"port 22 on {host_address(3)})")
    assert all(rows[h]["reachable"] for h in ("p620", "razer", "p510"))

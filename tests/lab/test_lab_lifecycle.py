"""Bringing the lab up and down: idempotent, recoverable, and leaving nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nixfleet.lab.config import bridge, cgroup_name, host_address, lab_paths, veth_name
from tests.lab.conftest import HOSTS, ROOT, lab_status, nixfleet, on

pytestmark = pytest.mark.usefixtures("lab")


def boot_ids() -> dict[str, str]:
    return {h: on(h, "cat /proc/sys/kernel/random/boot_id").stdout for h in HOSTS}


def leftovers() -> list[str]:
    """Anything of this lab instance still on this machine: processes, mounts, links, cgroups
    (another instance's, e.g. /var/lib/nixfleet-lab-2 beside /var/lib/nixfleet-lab, is not)."""
    state = f"{lab_paths().state}/"
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if ("nixfleet.lab.supervise" in cmdline or "systemd-nspawn" in cmdline) \
                    and state in cmdline:
                found.append(f"process {proc.name}: {cmdline[:80]}")
    found += [f"mount {line.split()[4]}" for line in
              Path("/proc/self/mountinfo").read_text().splitlines() if state in line.split()[4]]
    found += [f"link {link.name}" for link in Path("/sys/class/net").iterdir()
              if link.name == bridge() or link.name.startswith(veth_name(0)[:-1])]
    for root in (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified")):
        found += [f"cgroup {p}" for p in root.glob(cgroup_name("*"))]
    return found


def test_up_twice_is_a_no_op():
    before = boot_ids()
    result = nixfleet("lab", "up")
    assert "all 4 hosts already running" in result.stdout
    assert boot_ids() == before


def test_down_leaves_nothing_behind_and_up_comes_back():
    nixfleet("lab", "down")
    assert leftovers() == []
    assert all(row["state"] == "stopped" for row in lab_status().values())
    nixfleet("lab", "up")
    assert all(row["state"] == "running" for row in lab_status().values())
    # Hosts keep their state across down/up (only reset forgets it).
    assert on("p620", "test -e /nix/var/nix/profiles/system-1-link").returncode == 0


def test_a_crashed_host_is_recovered_by_the_next_up():
    host_dir = lab_paths().host_dir("razer")
    supervisor = int((host_dir / "supervisor.pid").read_text())
    nspawn = int((host_dir / "nspawn.pid").read_text())
    os.kill(supervisor, signal.SIGKILL)
    os.kill(nspawn, signal.SIGKILL)
    assert lab_status()["razer"]["state"] == "stopped"
    nixfleet("lab", "up")
    assert lab_status()["razer"]["state"] == "running"
    assert on("razer", "hostname").stdout.strip() == "razer"


def test_reset_returns_a_host_to_first_boot():
    on("dex5550", "touch /root/marker && nixos-rebuild boot >/dev/null 2>&1 || true")
    nixfleet("lab", "reset", "dex5550")
    assert on("dex5550", "test -e /root/marker", check=False).returncode != 0
    assert on("dex5550", "readlink /nix/var/nix/profiles/system").stdout.strip() == "system-1-link"


def test_status_shows_state_address_systemd_and_memory():
    rows = lab_status()
    assert list(rows) == list(HOSTS)
    for i, host in enumerate(HOSTS):
        row = rows[host]
        assert row["state"] == "running"
        assert row["address"] == host_address(i)
        assert row["systemd"] in ("running", "degraded")
        assert 5 < row["memory_mib"] < 200


def test_extra_hosts_join_group_lab_extra_and_leave_again():
    try:
        nixfleet("lab", "up", "--extra", "2")
        rows = lab_status()
        assert list(rows) == [*HOSTS, "p620-x1", "razer-x2"]
        assert rows["razer-x2"]["state"] == "running"
        result = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "pyinfra"), "inventory.py", "exec",
             "-y", "--limit", "lab_extra", "--", "hostname"], cwd=ROOT, capture_output=True,
            text=True, timeout=120, env={**os.environ, "NIXFLEET_TARGET": "lab"})
        assert result.returncode == 0, result.stderr
        output = result.stdout + result.stderr
        assert re.search(r"\[p620-x1\]\s+p620-x1", output)
        assert re.search(r"\[razer-x2\]\s+razer-x2", output)
        assert "[p620]" not in output
    finally:
        nixfleet("lab", "up", "--extra", "0")
    assert list(lab_status()) == list(HOSTS)
    assert not lab_paths().host_dir("p620-x1").exists()


def test_host_keys_are_checked_strictly(tmp_path):
    wrong = tmp_path / "known_hosts"
    other = lab_paths().known_hosts.read_text().splitlines()
    # Every address paired with another host's key.
    wrong.write_text("".join(f"{a.split()[0]} {b.split(' ', 1)[1]}\n"
                             for a, b in zip(other, other[1:] + other[:1], strict=True)))
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "pyinfra"), "inventory.py", "exec", "-y",
         "--limit", "p620", "--data", f"ssh_known_hosts_file={wrong}", "--", "true"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NIXFLEET_TARGET": "lab"})
    assert result.returncode != 0
    # pyinfra's (paramiko's) words for a key that does not match the known one.
    assert "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!" in result.stderr
    assert re.search(rf"\[p620\]\s+SSH host key error \(Host key for "
                     rf"{re.escape(host_address(0))} does not match\.\)", result.stderr), \
        result.stderr


def test_lab_commands_refuse_unknown_hosts():
    result = nixfleet("lab", "exec", "nohost", "--", "true", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == ("nixfleet: error: unknown lab host 'nohost' "
                                     "(hosts: p620, razer, p510, dex5550)")

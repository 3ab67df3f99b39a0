"""Lab settings that need no running lab: instances and the inotify limit; starting and
stopping a host's processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest

from nixfleet import nvidia
from nixfleet.errors import NixfleetError
from nixfleet.inventory import load_inventory_file
from nixfleet.lab import config, machine


def test_instances_get_their_own_bridge_subnet_veths_cgroups_and_state(monkeypatch):
    monkeypatch.delenv("NIXFLEET_LAB_DIR", raising=False)
    monkeypatch.setenv("NIXFLEET_LAB_INSTANCE", "0")
    first = (config.bridge(), config.host_address(0), config.veth_name(3),
             config.cgroup_name("p620"), str(config.lab_paths().state))
    assert first == ("nflab0", "10.199.77.11", "nflab-v3", "nixfleet-lab-p620",
                     "/var/lib/nixfleet-lab")
    monkeypatch.setenv("NIXFLEET_LAB_INSTANCE", "2")
    second = (config.bridge(), config.host_address(0), config.veth_name(3),
              config.cgroup_name("p620"), str(config.lab_paths().state))
    assert second == ("nflab2", "10.199.79.11", "nflab2-v3", "nixfleet-lab2-p620",
                      "/var/lib/nixfleet-lab-2")
    assert len(config.veth_name(199)) <= 15
    monkeypatch.setenv("NIXFLEET_LAB_INSTANCE", "12")
    with pytest.raises(NixfleetError, match="NIXFLEET_LAB_INSTANCE must be 0-9, got '12'"):
        config.bridge()


def test_the_inotify_limit_grows_with_the_host_count(tmp_path, monkeypatch):
    limit = tmp_path / "max_user_instances"
    limit.write_text("128\n")
    monkeypatch.setattr(machine, "INOTIFY_INSTANCES", limit)
    machine._raise_inotify_limit(32)
    assert int(limit.read_text()) == 128 + machine.INOTIFY_PER_HOST * 32
    limit.write_text("100000\n")
    machine._raise_inotify_limit(32)
    assert limit.read_text() == "100000\n"  # never lowered


def test_the_nvidia_smi_stand_in_knows_a_version_of_every_driver_branch():
    assert set(machine.NVIDIA_DRIVER_VERSIONS) == set(nvidia.BRANCHES)
    for name, version in machine.NVIDIA_DRIVER_VERSIONS.items():
        assert version.split(".")[0] == nvidia.BRANCHES[name].series, name


def test_p510_reports_the_legacy_580_driver(root, monkeypatch):
    monkeypatch.setenv("NIXFLEET_TARGET", "fleet")
    p510 = load_inventory_file(root / "inventory.py").hosts["p510"]
    description = machine.hardware_description(p510)
    assert description["nvidiaDriverVersion"].startswith("580.")
    assert [g["model"] for g in description["gpus"]] == ["GP106GL [Quadro P2000]"]


@pytest.mark.skipif(os.geteuid() != 0 or not machine.CGROUP_ROOTS[1].is_dir(),
                    reason="needs root and the cgroup2 hierarchy the lab uses")
def test_a_stopped_host_leaves_no_process_nor_cgroup(tmp_path, monkeypatch, root):
    """Stopping a host SIGKILLs what is left of it and waits until it is gone: its cgroup is
    removed every time (without the wait, 40 processes killed at once still held it in 2 of
    10 stops, and the next boot of the host started beside what was left)."""
    monkeypatch.setenv("NIXFLEET_LAB_INSTANCE", "9")  # no lab of anyone's: its own cgroups
    monkeypatch.setenv("NIXFLEET_LAB_DIR", str(tmp_path / "state"))
    from nixfleet.lab.target import LabTarget

    paths = config.lab_paths()
    lab = machine.Lab(load_inventory_file(root / "inventory.py", LabTarget(paths)), paths, root,
                      progress=lambda line: None)
    host = lab.host("dex5550")
    top = machine.CGROUP_ROOTS[1] / config.cgroup_name("dex5550")
    group = top / "payload" / "system.slice"

    def join() -> None:  # in the child, before sleep runs: one of the host's processes
        (group / "cgroup.procs").write_text(str(os.getpid()))

    for _ in range(10):
        group.mkdir(parents=True, exist_ok=True)
        procs = [subprocess.Popen(["sleep", "60"], preexec_fn=join) for _ in range(40)]
        try:
            lab._stop(host)
            assert not top.exists()
            assert all(p.poll() is not None for p in procs)
        finally:
            for p in procs:
                p.kill()
                p.wait()
            machine._remove_cgroups("dex5550")


def test_a_started_supervisor_is_known_as_running_as_soon_as_its_pid_is_handed_out():
    """Lab._start writes a supervisor's pid only once running() (its command line) knows it:
    Popen returns while the kernel is still in the exec, when /proc/PID/cmdline reads empty
    (68 of 100 starts on this 2-core machine at load 21, checked at once), and `lab reset`
    failed 'stopped while booting' about a live supervisor, both tries at once. The stand-in
    shows its name 0.3 s after it started (bash's exec -a), as a slow exec would."""
    needle = machine.SUPERVISOR
    late = machine._spawn(["bash", "-c", 'sleep 0.3; exec -a nixfleet.lab.super""vise sleep 30'],
                          needle, stdin=subprocess.DEVNULL)
    try:
        assert machine._alive(late, needle)
    finally:
        os.kill(late, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(late, 0)
    started = time.monotonic()
    ended = machine._spawn(["bash", "-c", "exit 3"], needle, stdin=subprocess.DEVNULL)
    assert not machine._alive(ended, needle) and time.monotonic() - started < 10

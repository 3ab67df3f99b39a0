"""Lab settings that need no running lab: instances and the inotify limit."""

from __future__ import annotations

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

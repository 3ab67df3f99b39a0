"""The combined HostOverview fact, the running-system fact and the mismatch warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from nixfleet.commands.facts import gpu_warnings
from nixfleet.facts.errors import FactParseError
from nixfleet.facts.host import HostOverview
from nixfleet.facts.nix import CurrentSystem, NixStore, parse_store_usage, parse_system_links
from nixfleet.inventory import load_inventory_file

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gpu"
STORE = "/nix/store/"


def links(current_modules: str = "mods-a", booted_modules: str = "mods-a") -> str:
    row = "{name}\t" + STORE + "aaa-nixos-system-p510-25.05\t" + STORE + "k/bzImage\t" + \
        STORE + "i/initrd\t" + STORE + "{mods}\t25.05.20250101.abc\t"
    return row.format(name="current", mods=current_modules) + "\n" + \
        row.format(name="booted", mods=booted_modules) + "\n"


def test_running_system_and_reboot_required():
    same = parse_system_links(links())
    assert same.current is not None and same.current.nixos_version == "25.05.20250101.abc"
    assert same.current.configuration_revision is None
    assert not same.reboot_required
    assert parse_system_links(links(booted_modules="mods-b")).reboot_required
    assert parse_system_links("").current is None
    with pytest.raises(FactParseError, match="readlink /run/\\*-system: unexpected line"):
        CurrentSystem().process(["garbage"])


def test_store_usage():
    assert parse_store_usage("12 34567\n").nar_bytes == 34567
    with pytest.raises(FactParseError, match="nix path-info --all: expected COUNT BYTES"):
        NixStore().process(["not numbers here"])


def overview_output(nvidia_lines: list[str]) -> list[str]:
    lspci = FIXTURES / "lspci-nnk-xps15-9570-hybrid.txt"
    pci = lspci.read_text().splitlines()
    return [
        "#nixfleet:part:generations",
        '[{"generation": 3, "date": "2025-01-01 10:00:00", "nixosVersion": "25.05",'
        ' "kernelVersion": "6.6.63", "configurationRevision": "", "specialisations": [],'
        ' "current": true}]',
        "#nixfleet:part:system", *links().splitlines(),
        "#nixfleet:part:pci", *pci,
        "#nixfleet:part:nvidia", *nvidia_lines,
        "#nixfleet:part:state", "degraded",
        "#nixfleet:part:failed",
        '[{"unit":"broken.service","load":"loaded","active":"failed","sub":"failed",'
        '"description":"x"}]',
    ]


def test_overview_splits_the_parts_and_reads_each_with_its_own_fact():
    data = HostOverview().process(overview_output(
        ["0, NVIDIA GeForce RTX 2070, GPU-1, 550.54, 8192, 100, 3, 40, 20.5, [N/A]"]))
    assert data.current_generation is not None and data.current_generation.generation == 3
    assert data.state == "degraded"
    assert [u.name for u in data.failed] == ["broken.service"]
    assert data.nvidia[0].uuid == "GPU-1"
    assert data.amd == [] and data.errors == {}
    assert data.gpu.hardware_class == "hybrid" and data.gpu.compute == "cuda"
    assert "#nixfleet:part:" in HostOverview().command()


def test_a_part_with_garbage_is_an_error_not_a_wrong_value():
    data = HostOverview().process(overview_output(["this is not csv at all"]))
    assert data.nvidia == []
    assert data.errors["nvidia"].startswith("nvidia-smi")
    assert data.state == "degraded"  # the other parts still read


def test_gpu_warnings_name_the_fault():
    fleet = load_inventory_file(Path(__file__).resolve().parents[2] / "inventory.py")
    p510 = fleet.hosts["p510"]
    healthy = {"hardware_class": "nvidia", "compute": "cuda", "driver_loaded": True,
               "primary": {"driver": "nvidia"}}
    assert gpu_warnings(p510, healthy) == []
    no_driver = {"hardware_class": "nvidia", "compute": "none", "driver_loaded": False,
                 "primary": {"driver": "nouveau"}}
    assert gpu_warnings(p510, no_driver) == [
        "p510: nvidia-class host without cuda: NVIDIA driver not loaded (driver in use: nouveau)"]
    razer = fleet.hosts["razer"]
    assert gpu_warnings(razer, {**healthy, "hardware_class": "nvidia"}) == [
        "razer: the inventory says hybrid GPU, the host shows nvidia"]

"""The lab's GPU stand-ins answer in formats the real parsers read (a round trip)."""

from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nixfleet.facts.gpu import (
    NVIDIA_QUERY,
    ROCM_SMI_QUERY,
    detect_gpu_state,
    parse_lspci_nnk,
    parse_nvidia_smi_csv,
    parse_nvidia_smi_xml,
    parse_rocm_smi_json,
)

STANDINS = Path(__file__).resolve().parents[2] / "nixfleet" / "lab" / "standins"
TOOLS = ("lspci", "nvidia-smi", "rocm-smi")
REAL_NO_DRIVER = Path(__file__).resolve().parent.parent / "fixtures" / "gpu"

INTEL_IGPU = {
    "vendor": "intel",
    "model": "CoffeeLake-H GT2 [UHD Graphics 630]",
    "vendorId": "8086",
    "deviceId": "3e9b",
    "slot": "0000:00:02.0",
    "driver": "i915",
    "vramMiB": 0,
}
RTX_2070 = {
    "vendor": "nvidia",
    "model": "TU106M [GeForce RTX 2070 Mobile]",
    "vendorId": "10de",
    "deviceId": "1f10",
    "slot": "0000:01:00.0",
    "driver": "nvidia",
    "vramMiB": 8192,
    "uuid": "GPU-5b1f4f7e-2c1d-4f0a-9a55-0e3b7c2d9a11",
    "gfx": None,
}
RX_7900 = {
    "vendor": "amd",
    "model": "Navi 31 [Radeon RX 7900 XT/7900 XTX]",
    "vendorId": "1002",
    "deviceId": "744c",
    "slot": "0000:03:00.0",
    "driver": "amdgpu",
    "vramMiB": 24576,
    "gfx": "gfx1100",
}
RAZER = {
    "hostname": "razer",
    "hardwareClass": "nvidia",
    "nvidiaDriverVersion": "550.144.03",
    "cudaVersion": "12.4",
    "gpus": [INTEL_IGPU, RTX_2070],
}
P620 = {"hostname": "p620", "hardwareClass": "amd", "gpus": [RX_7900]}


class Lab:
    """One lab host's hardware file and booted kernel-module list, and its tools."""

    def __init__(self, directory: Path) -> None:
        self.hardware = directory / "hardware.json"
        self.kernel_modules = directory / "kernel-modules"

    def host(self, hardware: dict[str, Any], modules: list[str] | None = None) -> None:
        self.hardware.write_text(json.dumps(hardware))
        if modules is None:
            self.kernel_modules.unlink(missing_ok=True)  # no list: every driver counts as loaded
        else:
            self.kernel_modules.write_text("".join(f"{m}\n" for m in modules))

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        tool, *args = shlex.split(command)
        env = {
            **os.environ,
            "NIXFLEET_LAB_HARDWARE": str(self.hardware),
            "NIXFLEET_LAB_KERNEL_MODULES": str(self.kernel_modules),
        }
        return subprocess.run(
            [sys.executable, str(STANDINS / tool), *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )

    def stdout(self, command: str) -> str:
        result = self.run(command)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


@pytest.mark.parametrize("tool", TOOLS)
def test_each_stand_in_is_an_executable_stdlib_only_script_that_says_what_it_is(tool: str) -> None:
    path = STANDINS / tool
    lines = path.read_text().splitlines()

    assert lines[0] == "#!/usr/bin/python3"
    assert lines[1].startswith(f"# STAND-IN for the real {tool}")
    assert os.access(path, os.X_OK)
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= sys.stdlib_module_names


def test_hybrid_laptop_round_trip(lab: Lab) -> None:
    lab.host(RAZER)

    pci = parse_lspci_nnk(lab.stdout("lspci -nnk"))
    nvidia = parse_nvidia_smi_csv(lab.stdout(NVIDIA_QUERY))

    assert [(g.slot, g.vendor, g.device_id, g.device_name, g.driver) for g in pci] == [
        ("0000:00:02.0", "intel", "3e9b", "CoffeeLake-H GT2 [UHD Graphics 630]", "i915"),
        ("0000:01:00.0", "nvidia", "1f10", "TU106M [GeForce RTX 2070 Mobile]", "nvidia"),
    ]
    assert [
        (g.index, g.uuid, g.driver_version, g.memory_total_mib, g.mig_mode) for g in nvidia
    ] == [(0, RTX_2070["uuid"], "550.144.03", 8192, None)]
    state = detect_gpu_state(pci, nvidia, [])
    assert (state.hardware_class, state.driver_loaded, state.compute) == ("hybrid", True, "cuda")


def test_nvidia_smi_xml_says_what_the_csv_says(lab: Lab) -> None:
    lab.host(RAZER)

    (from_xml,) = parse_nvidia_smi_xml(lab.stdout("nvidia-smi -q -x"))
    (from_csv,) = parse_nvidia_smi_csv(lab.stdout(NVIDIA_QUERY))

    assert from_xml.pci_bus_id == "0000:01:00.0"
    assert from_xml == from_csv.__class__(**{**vars(from_csv), "pci_bus_id": "0000:01:00.0"})


def test_nvidia_smi_with_header_and_units(lab: Lab) -> None:
    lab.host(RAZER)

    output = lab.stdout("nvidia-smi --query-gpu=index,name,memory.total,power.draw --format=csv")

    assert output.splitlines()[0] == "index, name, memory.total [MiB], power.draw [W]"
    (gpu,) = parse_nvidia_smi_csv(output)
    assert (gpu.memory_total_mib, gpu.power_draw_w) == (8192, 12.34)


def test_two_mig_enabled_datacenter_gpus(lab: Lab) -> None:
    h100 = {
        "vendor": "nvidia",
        "model": "GH100 [H100 SXM5 80GB]",
        "vendorId": "10de",
        "deviceId": "2330",
        "driver": "nvidia",
        "vramMiB": 81559,
        "migMode": "Enabled",
    }
    lab.host(
        {
            "nvidiaDriverVersion": "590.48.01",
            "gpus": [{**h100, "slot": "0000:19:00.0"}, {**h100, "slot": "0000:3b:00.0"}],
        }
    )

    gpus = parse_nvidia_smi_csv(lab.stdout(NVIDIA_QUERY))

    assert [(g.index, g.name, g.mig_mode) for g in gpus] == [
        (0, "NVIDIA H100 SXM5 80GB", True),
        (1, "NVIDIA H100 SXM5 80GB", True),
    ]
    assert [g.pci_bus_id for g in parse_nvidia_smi_xml(lab.stdout("nvidia-smi -x -q"))] == [
        "0000:19:00.0",
        "0000:3b:00.0",
    ]
    # lspci lists both cards; only display-class devices are kept.
    assert {g.slot for g in parse_lspci_nnk(lab.stdout("lspci -nnk"))} == {
        "0000:19:00.0",
        "0000:3b:00.0",
    }


def test_nvidia_driver_not_loaded(lab: Lab) -> None:
    lab.host(RAZER, modules=["i915"])

    result = lab.run(NVIDIA_QUERY)
    pci = parse_lspci_nnk(lab.stdout("lspci -nnk"))

    assert result.returncode == 9
    assert result.stdout == (REAL_NO_DRIVER / "nvidia-smi-driver-not-loaded.txt").read_text()
    assert [g.driver for g in pci] == ["i915", None]
    assert pci[1].modules == ("nvidiafb", "nouveau", "nvidia_drm", "nvidia")
    state = detect_gpu_state(pci, [], [])
    assert (state.hardware_class, state.driver_loaded, state.compute) == ("hybrid", False, "none")


def test_nvidia_smi_list_table_version_and_bad_fields(lab: Lab) -> None:
    lab.host(RAZER)

    assert lab.stdout("nvidia-smi -L") == (
        f"GPU 0: NVIDIA GeForce RTX 2070 Mobile (UUID: {RTX_2070['uuid']})\n"
    )
    table = lab.stdout("nvidia-smi")
    assert "Driver Version: 550.144.03" in table and "CUDA Version: 12.4" in table
    assert {len(line) for line in table.splitlines()[1:] if line} == {91}
    assert "DRIVER version      : 550.144.03" in lab.stdout("nvidia-smi --version")
    bad = lab.run("nvidia-smi --query-gpu=index,bogus --format=csv")
    assert (bad.returncode, bad.stdout) == (2, 'Field "bogus" is not a valid field to query.\n')


def test_amd_workstation_round_trip(lab: Lab) -> None:
    lab.host(P620)

    pci = parse_lspci_nnk(lab.stdout("lspci -nnk"))
    (amd,) = parse_rocm_smi_json(lab.stdout(ROCM_SMI_QUERY))

    assert (amd.model, amd.gfx_version, amd.vram_total_mib) == (
        "Radeon RX 7900 XT/7900 XTX",
        "gfx1100",
        24576,
    )
    assert amd.pci_bus == pci[0].slot == "0000:03:00.0"
    assert amd.model == pci[0].model
    state = detect_gpu_state(pci, [], [amd])
    assert (state.hardware_class, state.driver_loaded, state.compute) == ("amd", True, "rocm")


def test_amdgpu_not_loaded(lab: Lab) -> None:
    lab.host(P620, modules=["nvme"])

    result = lab.run(ROCM_SMI_QUERY)

    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr == "ERROR:root:Driver not initialized (amdgpu not found in modules)\n"
    assert parse_rocm_smi_json(result.stdout) == []
    assert parse_lspci_nnk(lab.stdout("lspci -nnk"))[0].driver is None


def test_rocm_smi_text_form_and_unknown_option(lab: Lab) -> None:
    lab.host(P620)

    assert "GPU[0]\t\t: GFX Version: gfx1100" in lab.stdout("rocm-smi --showproductname")
    assert lab.run("rocm-smi --bogus").returncode == 2


def test_lspci_plain_and_numeric_forms(lab: Lab) -> None:
    lab.host(RAZER)

    assert lab.stdout("lspci").splitlines() == [
        "00:02.0 VGA compatible controller: Intel Corporation CoffeeLake-H GT2 [UHD Graphics 630]",
        "01:00.0 3D controller: NVIDIA Corporation TU106M [GeForce RTX 2070 Mobile] (rev a1)",
    ]
    assert lab.stdout("lspci -n -D").splitlines() == [
        "0000:00:02.0 0300: 8086:3e9b",
        "0000:01:00.0 0302: 10de:1f10 (rev a1)",
    ]
    assert lab.run("lspci -x").returncode == 2


def test_a_host_without_a_hardware_file_has_no_gpus(lab: Lab) -> None:
    assert lab.stdout("lspci -nnk") == ""
    assert lab.run(NVIDIA_QUERY).returncode == 9
    assert lab.run(ROCM_SMI_QUERY).stdout == ""

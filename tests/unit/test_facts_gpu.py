"""GPU parsers on real tool outputs (tests/fixtures/gpu/SOURCES.md says where each is from)."""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.facts import get_fact

from nixfleet.facts.errors import FactParseError
from nixfleet.facts.gpu import (
    NVIDIA_QUERY_FIELDS,
    AmdGpu,
    AmdGpus,
    NvidiaGpu,
    NvidiaGpus,
    PciGpu,
    PciGpus,
    detect_gpu_state,
    parse_amd_smi_json,
    parse_lspci_nnk,
    parse_nvidia_smi_csv,
    parse_nvidia_smi_xml,
    parse_rocm_smi_json,
)

STANDINS = Path(__file__).resolve().parents[2] / "nixfleet" / "lab" / "standins"


# --- lspci -nnk ------------------------------------------------------------------------------


def test_hybrid_laptop_lists_the_intel_igpu_and_the_nvidia_3d_controller_only(captured) -> None:
    gpus = parse_lspci_nnk(captured("gpu/lspci-nnk-xps15-9570-hybrid.txt"))

    assert gpus == [
        PciGpu(
            slot="0000:00:02.0",
            vendor="intel",
            vendor_id="8086",
            device_id="3e9b",
            model="UHD Graphics 630 (Mobile)",
            device_name="UHD Graphics 630 (Mobile)",
            driver="i915",
            modules=("i915",),
        ),
        PciGpu(
            slot="0000:01:00.0",
            vendor="nvidia",
            vendor_id="10de",
            device_id="1c8c",
            model="GeForce GTX 1050 Ti Mobile",
            device_name="GP107M [GeForce GTX 1050 Ti Mobile]",
            driver="nvidia",
            modules=("nvidiafb", "nouveau", "nvidia_drm", "nvidia"),
        ),
    ]


def test_the_audio_function_of_a_graphics_card_is_not_a_gpu(captured) -> None:
    gpus = parse_lspci_nnk(captured("gpu/lspci-nnk-gtx1650-mobile.txt"))

    assert [(gpu.slot, gpu.model, gpu.driver) for gpu in gpus] == [
        ("0000:01:00.0", "GeForce GTX 1650 Mobile / Max-Q", "nvidia")
    ]


def test_amd_card_with_tab_indented_attributes_and_an_unnamed_device(captured) -> None:
    (gpu,) = parse_lspci_nnk(captured("gpu/lspci-nnk-rx7900xtx-amdgpu.txt"))

    assert (gpu.vendor, gpu.device_id, gpu.model, gpu.driver) == ("amd", "744c", "Device", "amdgpu")


def test_a_gpu_without_a_bound_driver_has_driver_none(captured) -> None:
    (gpu,) = parse_lspci_nnk(captured("gpu/lspci-nnk-navi31-no-driver.txt"))

    assert gpu.driver is None
    assert gpu.modules == ("amdgpu",)
    assert gpu.model == "Radeon RX 7900 XT/7900 XTX/7900M"


def test_lspci_without_ids_is_refused_with_a_hint() -> None:
    with pytest.raises(FactParseError, match="run it with -nnk"):
        parse_lspci_nnk("00:02.0 VGA compatible controller: Intel Corporation UHD Graphics 630\n")


def test_lspci_garbage_raises() -> None:
    with pytest.raises(FactParseError, match="lspci: no device lines"):
        parse_lspci_nnk("pcilib: Cannot open /proc/bus/pci\n")


def test_empty_lspci_output_means_no_gpus() -> None:
    assert parse_lspci_nnk("") == []


# --- nvidia-smi --query-gpu ------------------------------------------------------------------


def test_our_query_on_a_mig_enabled_h100(captured) -> None:
    assert parse_nvidia_smi_csv(captured("gpu/nvidia-smi-query-h100-mig.csv")) == [
        NvidiaGpu(
            index=0,
            name="NVIDIA H100 80GB HBM3",
            uuid="GPU-00000000-0000-0000-0000-000000000000",
            driver_version="590.48.01",
            memory_total_mib=81559,
            memory_used_mib=59,
            utilization_pct=None,  # [N/A] while MIG is on
            temperature_c=42,
            power_draw_w=71.15,
            mig_mode=True,
        )
    ]


def test_our_query_on_two_gpus(captured) -> None:
    gpus = parse_nvidia_smi_csv(captured("gpu/nvidia-smi-query-dual-rtx2070.csv"))

    assert [(g.index, g.uuid, g.temperature_c, g.mig_mode) for g in gpus] == [
        (0, "GPU-12345678-aaaa-bbbb-cccc-0123456789ab", 14, None),
        (1, "GPU-12345678-aaaa-bbbb-cccc-0123456789cd", 13, None),
    ]


def test_a_full_capture_with_header_and_units_is_read_by_column_name(captured) -> None:
    (gpu,) = parse_nvidia_smi_csv(captured("gpu/nvidia-smi-csv-h100-mig-590.csv"))

    assert (gpu.memory_total_mib, gpu.memory_used_mib, gpu.power_draw_w) == (81559, 59, 71.15)
    assert gpu.mig_mode is True
    assert gpu.pci_bus_id == "0000:00:09.0"


def test_two_different_gpus_with_header_and_no_index_column(captured) -> None:
    gpus = parse_nvidia_smi_csv(captured("gpu/nvidia-smi-csv-gtx1080ti-gtx1060.csv"))

    assert [(g.index, g.name, g.memory_used_mib, g.utilization_pct) for g in gpus] == [
        (0, "GeForce GTX 1080 Ti", 10356, 100),
        (1, "GeForce GTX 1060 6GB", 5479, 100),
    ]


def test_old_drivers_print_n_a_without_brackets(captured) -> None:
    # The query used the aliases gpu_uuid, clocks.sm and clocks.mem.
    fields = (
        *("power.limit", "power.min_limit", "power.max_limit", "memory.total", "vbios_version"),
        *("driver_version", "name", "uuid", "power.draw", "temperature.gpu"),
        *("temperature.memory", "clocks.current.graphics", "clocks.sm", "clocks.mem"),
        *("utilization.gpu", "utilization.memory", "fan.speed", "pcie.link.width.current"),
        "pstate",
    )

    (gpu,) = parse_nvidia_smi_csv(captured("gpu/nvidia-smi-csv-rtx2080-440-nounits.csv"), fields)

    assert (gpu.name, gpu.driver_version, gpu.memory_total_mib) == (
        "GeForce RTX 2080",
        "440.64",
        7979,
    )
    assert (gpu.power_draw_w, gpu.temperature_c, gpu.utilization_pct) == (176.98, 45, 86)


@pytest.mark.parametrize(
    "name", ["nvidia-smi-csv-2gb-na-nounits.csv", "nvidia-smi-csv-2gb-not-supported-nounits.csv"]
)
def test_na_and_not_supported_cells_are_none(name: str, captured) -> None:
    fields = (
        "memory.total",
        "memory.free",
        "memory.used",
        "temperature.gpu",
        "fan.speed",
        "utilization.gpu",
        "utilization.memory",
    )

    (gpu,) = parse_nvidia_smi_csv(captured(f"gpu/{name}"), fields)

    assert (gpu.memory_total_mib, gpu.memory_used_mib, gpu.temperature_c) == (2004, 0, 44)


def test_not_supported_utilization_is_none(captured) -> None:
    (gpu,) = parse_nvidia_smi_csv(captured("gpu/nvidia-smi-csv-gtx650-not-supported.csv"))

    assert gpu.utilization_pct is None


def test_the_driver_failure_message_is_not_gpu_data(captured) -> None:
    with pytest.raises(FactParseError, match="expected 10 comma-separated values"):
        parse_nvidia_smi_csv(captured("gpu/nvidia-smi-driver-not-loaded.txt"))


def test_a_non_number_where_a_number_belongs_names_the_field() -> None:
    row = "0, GPU, GPU-1, 550.1, lots, 1, 0, 40, 10.0, Disabled"

    with pytest.raises(FactParseError, match=r"memory\.total: expected a number, got 'lots'"):
        parse_nvidia_smi_csv(row)


def test_no_output_means_no_gpus() -> None:
    assert parse_nvidia_smi_csv("") == []


def test_the_query_fields_are_the_documented_ones() -> None:
    assert NVIDIA_QUERY_FIELDS[0] == "index"
    assert "mig.mode.current" in NVIDIA_QUERY_FIELDS


# --- nvidia-smi -q -x ------------------------------------------------------------------------


def test_xml_of_a_mig_a100_reads_driver_version_from_the_top(captured) -> None:
    (gpu,) = parse_nvidia_smi_xml(captured("gpu/nvidia-smi-q-x-a100-mig-v12.xml"))

    assert gpu == NvidiaGpu(
        index=0,
        name="NVIDIA A100-SXM4-80GB",
        uuid="GPU-513536b6-7d19-9063-b049-1e69664bb298",
        driver_version="535.54.03",
        memory_total_mib=81920,
        memory_used_mib=50,
        utilization_pct=None,
        temperature_c=27,
        power_draw_w=67.03,
        mig_mode=True,
        pci_bus_id="0000:01:00.0",
    )


def test_xml_of_two_gpus_with_driver_590_instant_power(captured) -> None:
    gpus = parse_nvidia_smi_xml(captured("gpu/nvidia-smi-q-x-dual-rtx2070-v13.xml"))

    assert [(g.index, g.pci_bus_id, g.power_draw_w, g.mig_mode) for g in gpus] == [
        (0, "0000:01:00.0", 9.23, None),
        (1, "0000:02:00.0", 11.82, None),
    ]


def test_xml_of_driver_418_without_mig_and_with_power_readings(captured) -> None:
    (gpu,) = parse_nvidia_smi_xml(captured("gpu/nvidia-smi-q-x-gtx1660ti-418.xml"))

    assert (gpu.driver_version, gpu.memory_total_mib, gpu.power_draw_w) == ("418.43", 5912, 8.93)
    assert gpu.mig_mode is None


def test_xml_and_csv_agree_on_the_same_machine(captured) -> None:
    from_xml = parse_nvidia_smi_xml(captured("gpu/nvidia-smi-q-x-dual-rtx2070-v13.xml"))
    from_csv = parse_nvidia_smi_csv(captured("gpu/nvidia-smi-query-dual-rtx2070.csv"))

    assert [g.__class__(**{**vars(g), "pci_bus_id": None}) for g in from_xml] == from_csv


def test_xml_garbage_raises() -> None:
    with pytest.raises(FactParseError, match="nvidia-smi -q -x: not XML"):
        parse_nvidia_smi_xml("NVIDIA-SMI has failed")


# --- rocm-smi / amd-smi ----------------------------------------------------------------------


def test_rocm6_product_use_and_vram(captured) -> None:
    assert parse_rocm_smi_json(captured("gpu/rocm-smi-json-rx7900xt-rocm6.json")) == [
        AmdGpu(
            card="card0",
            model="Radeon RX 7900 XT",
            gfx_version="gfx1100",
            pci_bus=None,
            vram_total_mib=20464,
            vram_used_mib=26,
            utilization_pct=0.0,
            temperature_c=None,
        )
    ]


def test_rocm612_device_name_temperature_and_bus(captured) -> None:
    (gpu,) = parse_rocm_smi_json(captured("gpu/rocm-smi-json-rx6700xt-rocm612.json"))

    assert gpu.model == "Radeon RX 6700/6700 XT / 6800M"
    assert (gpu.gfx_version, gpu.pci_bus, gpu.temperature_c) == ("gfx1031", "0000:07:00.0", 45.0)
    assert (gpu.vram_total_mib, gpu.vram_used_mib) == (12272, 1499)


def test_rocm430_hex_ids_are_not_a_model_name(captured) -> None:
    (gpu,) = parse_rocm_smi_json(captured("gpu/rocm-smi-json-rx6700xt-rocm430.json"))

    assert gpu.model is None
    assert gpu.vram_total_mib == 12272


def test_six_mi100_cards(captured) -> None:
    gpus = parse_rocm_smi_json(captured("gpu/rocm-smi-json-6x-mi100-rocm571.json"))

    assert [g.card for g in gpus] == [f"card{i}" for i in range(6)]
    assert {g.model for g in gpus} == {"Instinct MI100"}
    assert [g.temperature_c for g in gpus] == [31.0, 30.0, 31.0, 33.0, 32.0, 33.0]


def test_rocm2_lowercase_celsius_keys(captured) -> None:
    (gpu,) = parse_rocm_smi_json(captured("gpu/rocm-smi-json-2019-f-t-P.json"))

    assert gpu.temperature_c == 77.0
    assert gpu.model is None


def test_rocm_smi_warnings_before_the_json_are_skipped(captured) -> None:
    text = "WARNING: AMD GPU device(s) is/are in a low-power state.\n" + captured(
        "gpu/rocm-smi-json-rx7900xt-rocm6.json"
    )

    assert parse_rocm_smi_json(text)[0].model == "Radeon RX 7900 XT"


def test_rocm_smi_with_nothing_to_report_means_no_gpus() -> None:
    assert parse_rocm_smi_json("WARNING: No JSON data to report\n") == []
    assert parse_rocm_smi_json("") == []


def test_rocm_smi_garbage_raises() -> None:
    with pytest.raises(FactParseError, match="rocm-smi: no JSON"):
        parse_rocm_smi_json("GPU[0] : Card series: Radeon\n")
    with pytest.raises(FactParseError, match="rocm-smi: invalid JSON"):
        parse_rocm_smi_json('{"card0": {')


def test_amd_smi_static_behind_python_warnings(captured) -> None:
    (gpu,) = parse_amd_smi_json(captured("gpu/amd-smi-static-json-rx7800xt.txt"))

    assert (gpu.model, gpu.gfx_version, gpu.pci_bus) == (
        "AMD Radeon RX 7800 XT",
        "gfx1101",
        "0000:03:00.0",
    )


def test_amd_smi_metric_as_a_plain_list(captured) -> None:
    (gpu,) = parse_amd_smi_json(captured("gpu/amd-smi-metric-usage-json-w7700.json"))

    assert (gpu.card, gpu.utilization_pct, gpu.model) == ("card0", 42.0, None)


def test_amd_smi_memory_in_mb() -> None:
    text = (
        '{"gpu_data": [{"gpu": 0, "mem_usage": {"total_vram": {"value": 16368, "unit": "MB"},'
        ' "used_vram": {"value": 283, "unit": "MB"}}, "temperature": {"edge": "N/A",'
        ' "hotspot": {"value": 36, "unit": "C"}}}]}'
    )

    (gpu,) = parse_amd_smi_json(text)

    assert (gpu.vram_total_mib, gpu.vram_used_mib, gpu.temperature_c) == (16368, 283, 36.0)


def test_amd_smi_garbage_raises() -> None:
    with pytest.raises(FactParseError, match="amd-smi"):
        parse_amd_smi_json('{"gpus": 1}')


# --- detect_gpu_state ------------------------------------------------------------------------


def test_hybrid_laptop_with_working_cuda(captured) -> None:
    pci = parse_lspci_nnk(captured("gpu/lspci-nnk-xps15-9570-hybrid.txt"))
    nvidia = parse_nvidia_smi_csv(captured("gpu/nvidia-smi-query-dual-rtx2070.csv"))[:1]

    state = detect_gpu_state(pci, nvidia, [])

    assert (state.hardware_class, state.driver_loaded, state.compute) == ("hybrid", True, "cuda")
    assert state.primary is not None and state.primary.vendor == "nvidia"


def test_nvidia_driver_bound_but_nvidia_smi_sees_nothing_means_no_cuda(captured) -> None:
    pci = parse_lspci_nnk(captured("gpu/lspci-nnk-gtx1650-mobile.txt"))

    state = detect_gpu_state(pci, [], [])

    assert (state.hardware_class, state.driver_loaded, state.compute) == ("nvidia", True, "none")


def test_amd_with_rocm(captured) -> None:
    pci = parse_lspci_nnk(captured("gpu/lspci-nnk-rx7900xtx-amdgpu.txt"))
    amd = parse_rocm_smi_json(captured("gpu/rocm-smi-json-rx7900xt-rocm6.json"))

    state = detect_gpu_state(pci, [], amd)

    assert (state.hardware_class, state.driver_loaded, state.compute) == ("amd", True, "rocm")


def test_amd_without_amdgpu_bound_is_not_loaded(captured) -> None:
    pci = parse_lspci_nnk(captured("gpu/lspci-nnk-navi31-no-driver.txt"))

    state = detect_gpu_state(pci, [], [])

    assert (state.hardware_class, state.driver_loaded, state.compute) == ("amd", False, "none")


def test_nouveau_is_not_the_nvidia_compute_driver(captured) -> None:
    (gpu,) = parse_lspci_nnk(captured("gpu/lspci-nnk-gtx1650-mobile.txt"))
    on_nouveau = PciGpu(**{**vars(gpu), "driver": "nouveau"})

    assert detect_gpu_state([on_nouveau], [], []).driver_loaded is False


def test_intel_only_and_other_vendors_are_ignored(captured) -> None:
    intel = parse_lspci_nnk(captured("gpu/lspci-nnk-xps15-9570-hybrid.txt"))[:1]
    bmc = PciGpu("0000:02:00.0", "other", "1a03", "2000", "ASPEED Graphics Family", "x", "ast")

    state = detect_gpu_state([bmc, *intel], [], [])

    assert (state.hardware_class, state.driver_loaded, state.compute) == ("intel", True, "none")
    assert detect_gpu_state([bmc], [], []).hardware_class == "none"
    assert detect_gpu_state([], [], []).primary is None


# --- the pyinfra facts, run through the @local connector -------------------------------------


@pytest.fixture
def local_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A pyinfra state on @local whose PATH holds only sh and what a test puts in bin/."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sh = shutil.which("sh")
    assert sh is not None
    (bin_dir / "sh").symlink_to(sh)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("NIXFLEET_LAB_HARDWARE", str(tmp_path / "hardware.json"))
    monkeypatch.setenv("NIXFLEET_LAB_KERNEL_MODULES", str(tmp_path / "kernel-modules"))
    inventory = Inventory((["@local"], {}))
    state = State(inventory, Config())
    connect_all(state)
    return state, inventory.get_host("@local"), bin_dir


def put_tool(bin_dir: Path, name: str, script: str) -> None:
    tool = bin_dir / name
    tool.write_text(script)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)


def test_missing_tools_give_empty_facts(local_host) -> None:
    state, host, _ = local_host

    for fact in (PciGpus, NvidiaGpus, AmdGpus):
        assert get_fact(state, host, fact) == []
    assert not state.failed_hosts


def test_a_failing_nvidia_smi_gives_an_empty_fact(local_host, tmp_path: Path) -> None:
    state, host, bin_dir = local_host
    (bin_dir / "nvidia-smi").symlink_to(STANDINS / "nvidia-smi")
    (tmp_path / "hardware.json").write_text(
        '{"gpus": [{"vendor": "nvidia", "model": "GA102 [GeForce RTX 3080]", "vendorId": "10de",'
        ' "deviceId": "2206", "slot": "0000:01:00.0", "driver": "nvidia", "vramMiB": 10240}]}'
    )
    (tmp_path / "kernel-modules").write_text("i915\n")  # nvidia not loaded: exits 9

    assert get_fact(state, host, NvidiaGpus) == []
    assert not state.failed_hosts

    os.remove(tmp_path / "kernel-modules")
    assert [gpu.name for gpu in get_fact(state, host, NvidiaGpus)] == ["NVIDIA GeForce RTX 3080"]


def test_garbage_output_is_a_readable_fact_error_not_a_traceback(
    local_host, caplog: pytest.LogCaptureFixture
) -> None:
    state, host, bin_dir = local_host
    put_tool(bin_dir, "nvidia-smi", "#!/bin/sh\necho 'Segmentation fault, core dumped'\n")

    with caplog.at_level(logging.WARNING):
        assert get_fact(state, host, NvidiaGpus, kwargs={"_ignore_errors": True}) == []

    assert "nvidia-smi: expected 10 comma-separated values per GPU, got 2" in caplog.text


def test_lspci_verbose_lines_with_prog_if_are_read_too() -> None:
    # `lspci -vnn` header of a TigerLake iGPU, https://github.com/oracle/linux-uek/issues/34
    text = (
        "00:02.0 VGA compatible controller [0300]: Intel Corporation TigerLake-H GT1 "
        "[UHD Graphics] [8086:9a60] (rev 01) (prog-if 00 [VGA controller])\n"
        "Kernel driver in use: i915\n"
        "Kernel modules: i915\n"
    )

    (gpu,) = parse_lspci_nnk(text)

    assert (gpu.device_id, gpu.model, gpu.device_name, gpu.driver) == (
        "9a60",
        "UHD Graphics",
        "TigerLake-H GT1 [UHD Graphics]",
        "i915",
    )

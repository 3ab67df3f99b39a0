"""GPU metrics for every hardware class, read with the facts' own commands and parsers
(nixfleet.facts.parsers.gpu): ``lspci -nnk``, ``nvidia-smi --query-gpu`` (CSV) and
``rocm-smi --json``. The NixOS exporter registers these sources; the metric names are listed
in nixfleet/exporters/__init__.py.

Each GPU's samples are labelled with its number as its tool counts it (``gpu``: nvidia-smi's
index, rocm-smi's card number), its PCI slot (``0000:01:00.0``, as lspci writes it) and its
model as the tool names it. A tool that is not installed reads as "no GPUs of that kind"
(no samples, no error); one that is installed but fails (no driver loaded) sets its source's
error gauge. Intel GPUs have no such tool: they appear in ``nixos_gpu_info`` only.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import TypeVar

from nixfleet.exporters.sources import Family, Sample, Source, command_path, run, sample
from nixfleet.facts.parsers.gpu import (
    LSPCI_COMMAND,
    NVIDIA_METRICS_FIELDS,
    ROCM_SMI_METRICS_QUERY,
    AmdGpu,
    NvidiaGpu,
    PciGpu,
    nvidia_smi_query,
    parse_lspci_nnk,
    parse_nvidia_smi_csv,
    parse_rocm_smi_json,
)

T = TypeVar("T")
_MIB = 1024 * 1024
_GPU = ("gpu", "model", "slot")

GPU_INFO = Family(
    "nixfleet_gpu_info", "A display-class PCI device (lspci): its model, vendor and kernel driver",
    ("slot", "model", "vendor", "driver"),
)  # fmt: skip
GPU_UTILIZATION = Family("nixfleet_gpu_utilization_ratio", "GPU busy time, 0 to 1", _GPU)
GPU_MEMORY_USED = Family("nixfleet_gpu_memory_used_bytes", "GPU memory in use (VRAM)", _GPU)
GPU_MEMORY_TOTAL = Family("nixfleet_gpu_memory_total_bytes", "GPU memory in all (VRAM)", _GPU)
GPU_TEMPERATURE = Family("nixfleet_gpu_temperature_celsius", "GPU (edge) temperature", _GPU)
GPU_POWER = Family("nixfleet_gpu_power_watts", "GPU power draw", _GPU)
GPU_FAMILIES = (
    GPU_INFO, GPU_UTILIZATION, GPU_MEMORY_USED, GPU_MEMORY_TOTAL, GPU_TEMPERATURE, GPU_POWER,
)  # fmt: skip


def gpu_sources(interval: float) -> list[Source]:
    """The GPU sources: lspci, nvidia-smi and rocm-smi, each read every ``interval`` seconds.

    + interval: seconds between reads
    """
    nvidia_query = nvidia_smi_query(NVIDIA_METRICS_FIELDS)
    return [
        Source("lspci", lambda: _if_installed("lspci", LSPCI_COMMAND, parse_lspci_nnk),
               pci_samples, interval),
        Source("nvidia-smi",
               lambda: _if_installed("nvidia-smi", nvidia_query, _parse_nvidia_metrics),
               nvidia_samples, interval),
        Source("rocm-smi",
               lambda: _if_installed("rocm-smi", ROCM_SMI_METRICS_QUERY, parse_rocm_smi_json),
               amd_samples, interval),
    ]  # fmt: skip


def _if_installed(tool: str, command: str, parse: Callable[[str], T]) -> T | None:
    if shutil.which(tool, path=command_path()) is None:
        return None
    return parse(run(tool, command))


def _parse_nvidia_metrics(text: str) -> list[NvidiaGpu]:
    return parse_nvidia_smi_csv(text, NVIDIA_METRICS_FIELDS)


def pci_samples(gpus: list[PciGpu]) -> Iterator[Sample]:
    for gpu in gpus:
        yield sample(GPU_INFO, 1, gpu.slot, gpu.model, gpu.vendor, gpu.driver or "")


def nvidia_samples(gpus: list[NvidiaGpu]) -> Iterator[Sample]:
    for gpu in gpus:
        labels = (str(gpu.index), gpu.name or "", gpu.pci_bus_id or "")
        yield from _gpu_samples(labels, gpu.utilization_pct, gpu.memory_used_mib,
                                gpu.memory_total_mib, gpu.temperature_c, gpu.power_draw_w)


def amd_samples(gpus: list[AmdGpu]) -> Iterator[Sample]:
    for gpu in gpus:
        labels = (gpu.card.removeprefix("card"), gpu.model or "", gpu.pci_bus or "")
        yield from _gpu_samples(labels, gpu.utilization_pct, gpu.vram_used_mib,
                                gpu.vram_total_mib, gpu.temperature_c, gpu.power_w)


def _gpu_samples(
    labels: tuple[str, str, str],
    utilization: float | None,
    used_mib: int | None,
    total_mib: int | None,
    temperature: float | None,
    power: float | None,
) -> Iterator[Sample]:
    # What a tool reports as N/A is left out, not reported as 0.
    for family, value in (
        (GPU_UTILIZATION, None if utilization is None else utilization / 100),
        (GPU_MEMORY_USED, None if used_mib is None else used_mib * _MIB),
        (GPU_MEMORY_TOTAL, None if total_mib is None else total_mib * _MIB),
        (GPU_TEMPERATURE, temperature),
        (GPU_POWER, power),
    ):
        if value is not None:
            yield sample(family, value, *labels)

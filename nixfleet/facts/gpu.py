"""
GPU facts: the display devices on the PCI bus, what ``nvidia-smi`` and ``rocm-smi`` report,
and the class of machine they add up to (nvidia, amd, intel or hybrid).

The parsers are pure functions in nixfleet.facts.parsers.gpu (shared with the exporters;
their names are re-exported here); the pyinfra facts only run the tool and call them.
"""

from __future__ import annotations

from pyinfra.api import FactBase
from typing_extensions import override

from nixfleet.facts.errors import FactParseError
from nixfleet.facts.parsers.gpu import (
    COMPUTE_DRIVERS,
    DISPLAY_CLASSES,
    LSPCI_COMMAND,
    NVIDIA_QUERY,
    NVIDIA_QUERY_FIELDS,
    ROCM_SMI_QUERY,
    VENDOR_IDS,
    AmdGpu,
    Compute,
    GpuState,
    HardwareClass,
    NvidiaGpu,
    PciGpu,
    Vendor,
    detect_gpu_state,
    parse_amd_smi_json,
    parse_lspci_nnk,
    parse_nvidia_smi_csv,
    parse_nvidia_smi_xml,
    parse_rocm_smi_json,
)

__all__ = [
    "COMPUTE_DRIVERS", "DISPLAY_CLASSES", "NVIDIA_QUERY", "NVIDIA_QUERY_FIELDS", "ROCM_SMI_QUERY",
    "VENDOR_IDS", "AmdGpu", "AmdGpus", "Compute", "FactParseError", "GpuState", "HardwareClass",
    "NvidiaGpu", "NvidiaGpus", "PciGpu", "PciGpus", "Vendor", "detect_gpu_state",
    "parse_amd_smi_json", "parse_lspci_nnk", "parse_nvidia_smi_csv", "parse_nvidia_smi_xml",
    "parse_rocm_smi_json",
]  # fmt: skip


# --- pyinfra facts ---------------------------------------------------------------------------
#
# Each command prints the tool's output only when the tool succeeded: a GPU tool that fails
# (no driver loaded, no devices) then reads as "no GPUs", not as a failed host.


class PciGpus(FactBase[list[PciGpu]]):
    """
    Returns the display-class PCI devices (VGA, 3D and display controllers) from
    ``lspci -nnk``, with the kernel driver bound to each.

    **Example:**

    .. code:: python

        [gpu.driver for gpu in host.get_fact(PciGpus)]  # ["i915", "nvidia"]
    """

    @override
    def requires_command(self) -> str:
        return "lspci"

    @override
    def command(self) -> str:
        return f'out="$({LSPCI_COMMAND} 2>/dev/null)" && printf "%s\\n" "$out" || true'

    @staticmethod
    @override
    def default() -> list[PciGpu]:
        return []

    @override
    def process(self, output: list[str]) -> list[PciGpu]:
        return parse_lspci_nnk("\n".join(output))


class NvidiaGpus(FactBase[list[NvidiaGpu]]):
    """
    Returns the GPUs ``nvidia-smi`` sees; empty when the tool is missing or cannot reach
    the NVIDIA driver.
    """

    @override
    def requires_command(self) -> str:
        return "nvidia-smi"

    @override
    def command(self) -> str:
        return f'out="$({NVIDIA_QUERY} 2>/dev/null)" && printf "%s\\n" "$out" || true'

    @staticmethod
    @override
    def default() -> list[NvidiaGpu]:
        return []

    @override
    def process(self, output: list[str]) -> list[NvidiaGpu]:
        return parse_nvidia_smi_csv("\n".join(output))


class AmdGpus(FactBase[list[AmdGpu]]):
    """
    Returns the GPUs ``rocm-smi`` sees; empty when the tool is missing or amdgpu is not
    loaded (rocm-smi then only logs an error).
    """

    @override
    def requires_command(self) -> str:
        return "rocm-smi"

    @override
    def command(self) -> str:
        return f'out="$({ROCM_SMI_QUERY} 2>/dev/null)" && printf "%s\\n" "$out" || true'

    @staticmethod
    @override
    def default() -> list[AmdGpu]:
        return []

    @override
    def process(self, output: list[str]) -> list[AmdGpu]:
        return parse_rocm_smi_json("\n".join(output))

"""Hosts with GPUs in the inventory: each is on the PCI bus at its slot, bound to the driver of
the host's class, and its compute stack (nvidia-smi, rocm-smi) answers for it. Read through the
same parsers as the GPU facts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from nixfleet.facts.parsers.gpu import (
    LSPCI_COMMAND,
    NVIDIA_METRICS_FIELDS,
    ROCM_SMI_QUERY,
    nvidia_smi_query,
    parse_lspci_nnk,
    parse_nvidia_smi_csv,
    parse_rocm_smi_json,
)

# The exporters' queries, which name each GPU's PCI slot: vendor, command, parser, slot field.
COMPUTE: dict[str, tuple[str, str, Callable[[str], list[Any]], str]] = {
    "cuda": ("nvidia", nvidia_smi_query(NVIDIA_METRICS_FIELDS),
             lambda text: parse_nvidia_smi_csv(text, NVIDIA_METRICS_FIELDS), "pci_bus_id"),
    "rocm": ("amd", ROCM_SMI_QUERY, parse_rocm_smi_json, "pci_bus"),
}


def _driven(gpu, graphics) -> bool:
    """Whether the class binds a driver to this GPU (an Intel iGPU always has i915)."""
    return gpu.vendor == "intel" or gpu.driver == graphics.videoDriver


@pytest.mark.fleet(hosts=lambda spec, session: bool(spec.gpus))
def test_its_gpus_are_present_driven_and_answering(host, spec):
    on_bus = {g.slot: g for g in parse_lspci_nnk(host.check_output(LSPCI_COMMAND))}
    for gpu in spec.gpus:
        found = on_bus.get(gpu.slot)
        assert found is not None, f"no GPU at {gpu.slot} ({gpu.model})"
        assert found.device_name == gpu.model, \
            f"{gpu.slot} is {found.device_name}, the inventory says {gpu.model}"
        if _driven(gpu, spec.graphics):
            assert found.driver == gpu.driver, \
                f"{gpu.slot}: driver {gpu.driver} not in use ({found.driver or 'none bound'})"
    if spec.graphics.compute not in COMPUTE:
        return
    vendor, query, parse, bus = COMPUTE[spec.graphics.compute]
    tool = query.split()[0]
    answer = host.run(query)
    assert answer.rc == 0, f"{tool} fails: {(answer.stdout or answer.stderr).strip()[:120]}"
    seen = {getattr(g, bus) for g in parse(answer.stdout)}
    for gpu in spec.gpus:
        if gpu.vendor == vendor:
            assert gpu.slot in seen, f"{tool} does not list {gpu.slot} ({gpu.model})"

"""Hosts with GPUs in the inventory: each is on the PCI bus at its slot, bound to the driver of
the host's class, and its compute stack (nvidia-smi, rocm-smi) answers for it. Read through the
same parsers as the GPU facts."""

from __future__ import annotations

import pytest

from nixfleet.facts.parsers.gpu import LSPCI_COMMAND, parse_lspci_nnk
from tests.fleet.support import COMPUTE


def _driven(gpu, graphics) -> bool:
    """Whether the class binds a driver to this GPU (an Intel iGPU always has i915)."""
    return gpu.vendor == "intel" or gpu.driver == graphics.videoDriver


@pytest.mark.fleet(hosts=lambda spec, session: bool(spec.gpus))
def test_its_gpus_are_present_driven_and_answering(reads, spec):
    on_bus = {g.slot: g for g in parse_lspci_nnk(reads.check_output(LSPCI_COMMAND))}
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
    answer = reads.run(query)
    assert answer.rc == 0, f"{tool} fails: {(answer.stdout or answer.stderr).strip()[:120]}"
    seen = {getattr(g, bus) for g in parse(answer.stdout)}
    for gpu in spec.gpus:
        if gpu.vendor == vendor:
            assert gpu.slot in seen, f"{tool} does not list {gpu.slot} ({gpu.model})"

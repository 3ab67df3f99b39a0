"""One fact that gathers what `nixfleet facts` shows, in a single SSH round trip.

It runs the commands of the individual facts one after another, each behind a marker line,
and hands each part of the output to that fact's own `process`: one way to read each tool,
whether a deploy asks for one fact or the overview asks for all of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pyinfra.api import FactBase
from typing_extensions import override

from nixfleet.facts.errors import FactParseError
from nixfleet.facts.gpu import (
    AmdGpu,
    AmdGpus,
    GpuState,
    NvidiaGpu,
    NvidiaGpus,
    PciGpu,
    PciGpus,
    detect_gpu_state,
)
from nixfleet.facts.nix import CurrentSystem, Generation, NixGenerations, RunningSystem
from nixfleet.facts.parsers.parts import split_parts
from nixfleet.facts.results import FactResult
from nixfleet.facts.systemd import FailedUnits, ManagerState, SystemState, UnitStatus

_MARK = "#nixfleet:part:"
PARTS: dict[str, type[FactBase]] = {
    "generations": NixGenerations,
    "system": CurrentSystem,
    "pci": PciGpus,
    "nvidia": NvidiaGpus,
    "amd": AmdGpus,
    "state": SystemState,
    "failed": FailedUnits,
}


@dataclass(frozen=True)
class HostOverviewData(FactResult):
    generations: list[Generation] = field(default_factory=list)
    system: RunningSystem | None = None
    pci: list[PciGpu] = field(default_factory=list)
    nvidia: list[NvidiaGpu] = field(default_factory=list)
    amd: list[AmdGpu] = field(default_factory=list)
    state: ManagerState | None = None
    failed: list[UnitStatus] = field(default_factory=list)
    # A part whose output could not be read: its error, never a made-up value.
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def gpu(self) -> GpuState:
        return detect_gpu_state(self.pci, self.nvidia, self.amd)

    @property
    def current_generation(self) -> Generation | None:
        return next((g for g in self.generations if g.current), None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["system"] = self.system.to_json() if self.system else None
        data["gpu"] = asdict(self.gpu)
        return data


def _part_command(name: str, fact: FactBase) -> str:
    command = str(fact.command())
    requires = getattr(fact, "requires_command", None)
    required = requires() if callable(requires) else requires
    if required:
        command = f"if command -v {required} >/dev/null 2>&1; then {command}; fi"
    return f"echo '{_MARK}{name}'; {{ {command}; }} 2>/dev/null"


class HostOverview(FactBase[HostOverviewData]):
    """
    Returns generations, running/booted system, GPUs and systemd state in one round trip.

    **Example:**

    .. code:: python

        overview = host.get_fact(HostOverview)
        overview.gpu.compute  # "cuda"
    """

    @override
    def command(self) -> str:
        return "; ".join(_part_command(name, fact()) for name, fact in PARTS.items())

    @override
    def process(self, output: list[str]) -> HostOverviewData:
        sections = split_parts(output, _MARK)
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name, fact_class in PARTS.items():
            fact = fact_class()
            lines = sections.get(name, [])
            if not lines:
                default = fact.default()
                if default is not None:
                    values[name] = default
                continue
            try:
                values[name] = fact.process(lines)
            except FactParseError as error:
                errors[name] = str(error)
        return HostOverviewData(**values, errors=errors)

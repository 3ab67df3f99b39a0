"""What `nixfleet status` reads of a host, in one SSH round trip: the deploy state (flake
directory, systems, last deploy, verification record, boot partition and store), nixfleet's
record of the flake directory, the last deploy's journal, the generations, the running and
booted systems and the failed units.

As HostOverview does, it runs each fact's own command behind a marker line and hands each part
to that fact's own parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyinfra.api import FactBase
from typing_extensions import override

from nixfleet.facts.deploy import DeployState, HostDeployState
from nixfleet.facts.errors import FactParseError
from nixfleet.facts.host import split_parts
from nixfleet.facts.nix import CurrentSystem, Generation, NixGenerations, RunningSystem
from nixfleet.facts.parsers.status import (
    JOURNAL_COMMAND,
    RECORD,
    DeployJournal,
    parse_journals,
    parse_record,
)
from nixfleet.facts.results import FactResult
from nixfleet.facts.systemd import FailedUnits, UnitStatus

_MARK = "#nixfleet:status:"


@dataclass(frozen=True)
class HostStatusData(FactResult):
    deploy: DeployState | None = None
    record: dict[str, str] | None = None  # None: damaged
    record_text: str = ""
    journal: DeployJournal | None = None
    generations: list[Generation] = field(default_factory=list)
    system: RunningSystem | None = None
    failed: list[UnitStatus] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # a part that could not be read

    @property
    def current_generation(self) -> Generation | None:
        return next((g for g in self.generations if g.current), None)


def status_command(flake_dir: str) -> str:
    """Each part's command in a subshell (one that exits ends only its part)."""
    parts = {
        "deploy": str(HostDeployState().command(flake_dir)),
        "record": f"cat {RECORD} 2>/dev/null; true",
        "journal": JOURNAL_COMMAND,
        "generations": NixGenerations().command(),
        "system": CurrentSystem().command(),
        "failed": f"command -v systemctl >/dev/null && {{ {FailedUnits().command()}; }}",
    }
    return "; ".join(f"echo '{_MARK}{name}'; ( {command} ) 2>/dev/null"
                     for name, command in parts.items()) + "; echo '#nixfleet:status:end'"


def parse_status(output: list[str]) -> HostStatusData:
    """The parts of status_command's output, each read by its own parser; a part that cannot
    be read is an error of that part, never a made-up value.

    + output: the command's output lines
    """
    sections = split_parts(output, _MARK)
    if "end" not in sections:
        raise FactParseError("status", "the host's answer ended early", "\n".join(output))
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    readers: dict[str, Any] = {
        "deploy": HostDeployState().process,
        "journal": parse_journals,
        "generations": NixGenerations().process,
        "system": CurrentSystem().process,
        "failed": FailedUnits().process,
    }
    for name, read in readers.items():
        lines = sections.get(name, [])
        if not lines and name in ("generations", "failed", "journal"):
            values[name] = [] if name != "journal" else None
            continue
        try:
            values[name] = read(lines)
        except FactParseError as error:
            errors[name] = str(error)
    text = "\n".join(sections.get("record", []))
    return HostStatusData(**values, record=parse_record(text), record_text=text, errors=errors)


class HostStatus(FactBase[HostStatusData]):
    """
    Returns what `nixfleet status` shows of a host, in one round trip.

    + flake_dir: the flake directory (/etc/nixos by default)
    """

    @override
    def command(self, flake_dir: str) -> str:
        return status_command(flake_dir)

    @override
    def process(self, output: list[str]) -> HostStatusData:
        return parse_status(output)

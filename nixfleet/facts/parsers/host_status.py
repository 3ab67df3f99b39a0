"""What `nixfleet status` reads of a host, in one SSH round trip: the deploy state (flake
directory, systems, last deploy, verification record, boot partition and store), nixfleet's
record of the flake directory, the last deploy's journal, the system profile's generations,
the running and booted systems and the failed units.

As HostOverview does, it runs each reader's own command behind a marker line and hands each
part to that reader's own parser. Pyinfra-free, so that `nixfleet status` starts without it
(the HostStatus fact, nixfleet.facts.status, wraps it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nixfleet.facts.parsers.deploy import DeployState, deploy_state_command, parse_deploy_state
from nixfleet.facts.parsers.errors import FactParseError
from nixfleet.facts.parsers.nix import (
    PROFILE_LINKS_COMMAND,
    SYSTEM_LINKS_COMMAND,
    Generation,
    RunningSystem,
    parse_profile_links,
    parse_system_links,
)
from nixfleet.facts.parsers.parts import split_parts
from nixfleet.facts.parsers.status import (
    JOURNAL_COMMAND,
    RECORD,
    DeployJournal,
    parse_journals,
    parse_record,
)
from nixfleet.facts.parsers.systemd import UnitStatus, list_units_command, parse_list_units
from nixfleet.facts.results import FactResult

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
    """Each part's command in a group of this shell, its errors discarded: no part exits, and
    a subshell would cost each host a process per part (processes are most of what this
    command costs a host).

    What status shows of the generations, the current one's number and age, is in the
    profile links themselves: one find, where `nixos-rebuild list-generations` (the
    NixGenerations fact's, a Python program on NixOS) costs each host ~40 ms of CPU more.
    Likewise the deploy state without what only a deploy's pre-flight reads (the boot files
    of the partition and of each generation, the closure's size: a nix process).
    """
    parts = {
        "deploy": deploy_state_command(flake_dir, preflight=False),
        "record": f"cat {RECORD} 2>/dev/null; true",
        "journal": JOURNAL_COMMAND,
        "generations": PROFILE_LINKS_COMMAND,
        "system": SYSTEM_LINKS_COMMAND,
        "failed": f"command -v systemctl >/dev/null && {{ {list_units_command('--failed')}; }}",
    }
    return "; ".join(f"echo '{_MARK}{name}'; {{ {command}; }} 2>/dev/null"
                     for name, command in parts.items()) + "; echo '#nixfleet:status:end'"


_READERS: dict[str, Callable[[str], Any]] = {
    "deploy": parse_deploy_state,
    "journal": lambda text: parse_journals(text.splitlines()),
    "generations": parse_profile_links,
    "system": parse_system_links,
    "failed": parse_list_units,
}


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
    for name, read in _READERS.items():
        lines = sections.get(name, [])
        if not lines and name in ("generations", "failed", "journal"):
            values[name] = [] if name != "journal" else None
            continue
        try:
            values[name] = read("\n".join(lines))
        except FactParseError as error:
            errors[name] = str(error)
    text = "\n".join(sections.get("record", []))
    return HostStatusData(**values, record=parse_record(text), record_text=text, errors=errors)

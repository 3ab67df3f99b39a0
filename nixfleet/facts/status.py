"""What `nixfleet status` reads of a host, in one SSH round trip, as a pyinfra fact.

The command and its parser are in nixfleet.facts.parsers.host_status (pyinfra-free, so that
`nixfleet status` runs them without importing pyinfra).
"""

from __future__ import annotations

from pyinfra.api import FactBase
from typing_extensions import override

from nixfleet.facts.errors import FactParseError
from nixfleet.facts.parsers.host_status import HostStatusData, parse_status, status_command

__all__ = ["FactParseError", "HostStatus", "HostStatusData", "parse_status", "status_command"]


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

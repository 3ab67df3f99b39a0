"""What a deploy needs to know before it sends anything: the host's flake directory and the
system it runs, so that a host with nothing to do is a no-op decided from facts.

The command and its parser are in nixfleet.facts.parsers.deploy (pyinfra-free, so that
`nixfleet status` runs them without importing pyinfra)."""

from __future__ import annotations

from pyinfra.api import FactBase, StringCommand
from typing_extensions import override

from nixfleet.facts.errors import FactParseError
from nixfleet.facts.parsers.deploy import DeployState, deploy_state_command, parse_deploy_state
from nixfleet.facts.parsers.status import RECORD

__all__ = ["RECORD", "DeployState", "FactParseError", "HostDeployState", "parse_deploy_state"]


class HostDeployState(FactBase[DeployState]):
    """
    Returns the host's flake directory (sha256 of each file, strays) and its system: profile
    generation, current and profile systems, what the last finished deploy left, and the
    boot partition's and store's room (nixfleet.facts.parsers.boot) for the pre-flight.

    + flake_dir: the flake directory (/etc/nixos by default)
    + preflight: also the boot files and the closure size, for the pre-flight (default)
    """

    @override
    def command(self, flake_dir: str, preflight: bool = True) -> StringCommand:
        return StringCommand(deploy_state_command(flake_dir, preflight))

    @override
    def process(self, output: list[str]) -> DeployState:
        return parse_deploy_state("\n".join(output))

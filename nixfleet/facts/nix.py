"""
Facts of a NixOS host's system generations, running system and store.

The parsers and the commands they read are in nixfleet.facts.parsers.nix (pyinfra-free, so
the exporters share them); their names are re-exported here.
"""

from __future__ import annotations

from pyinfra.api import FactBase, StringCommand
from typing_extensions import override

from nixfleet.facts.errors import FactParseError
from nixfleet.facts.parsers import nix as parsers
from nixfleet.facts.parsers.nix import (
    PROFILE_LINKS_COMMAND,
    STORE_USAGE_COMMAND,
    SYSTEM_LINKS_COMMAND,
    SYSTEM_PROFILE,
    Generation,
    RunningSystem,
    StoreUsage,
    SystemLink,
    parse_list_generations_json,
    parse_profile_links,
    parse_store_usage,
    parse_system_links,
)

__all__ = [
    "PROFILE_LINKS_COMMAND", "STORE_USAGE_COMMAND", "SYSTEM_LINKS_COMMAND", "SYSTEM_PROFILE",
    "BootedSystem", "CurrentSystem", "FactParseError", "Generation", "NixGenerations",
    "NixStore", "RunningSystem", "StoreUsage", "SystemLink", "parse_list_generations_json",
    "parse_profile_links", "parse_store_usage", "parse_system_links", "profile_links_command",
]  # fmt: skip


def profile_links_command(profile: str = SYSTEM_PROFILE) -> StringCommand:
    """parsers.nix.profile_links_command as a pyinfra command.

    + profile: the profile path, /nix/var/nix/profiles/system by default
    """
    return StringCommand(parsers.profile_links_command(profile))


_LINKS_MARK = "#nixfleet:profile-links"


class NixGenerations(FactBase[list[Generation]]):
    """
    Returns every system generation, newest first, with the fields of
    ``nixos-rebuild list-generations --json``; where that command is missing or too old,
    read from the profile links (/nix/var/nix/profiles/system-*-link).

    **Example:**

    .. code:: python

        current = next(g for g in host.get_fact(NixGenerations) if g.current)
    """

    @override
    def command(self) -> str:
        return (
            "nixos-rebuild list-generations --json 2>/dev/null || "
            f"{{ echo '{_LINKS_MARK}'; {PROFILE_LINKS_COMMAND}; }}"
        )

    @staticmethod
    @override
    def default() -> list[Generation]:
        return []

    @override
    def process(self, output: list[str]) -> list[Generation]:
        if output and output[0] == _LINKS_MARK:
            return parse_profile_links("\n".join(output[1:]))
        return parse_list_generations_json("\n".join(output))


class CurrentSystem(FactBase[RunningSystem]):
    """
    Returns the running system (/run/current-system) and the booted one
    (/run/booted-system) with their NixOS version and configuration revision, and
    ``reboot_required`` when their kernel, initrd or kernel modules differ.
    """

    @override
    def command(self) -> str:
        return SYSTEM_LINKS_COMMAND

    @override
    def process(self, output: list[str]) -> RunningSystem:
        return parse_system_links("\n".join(output))


class BootedSystem(FactBase[SystemLink | None]):
    """Returns what the host booted (/run/booted-system), None where unknown."""

    @override
    def command(self) -> str:
        return SYSTEM_LINKS_COMMAND

    @override
    def process(self, output: list[str]) -> SystemLink | None:
        return parse_system_links("\n".join(output)).booted


class NixStore(FactBase[StoreUsage | None]):
    """
    Returns the store's valid path count, total NAR size and derivation count, from Nix's
    database (one query, no walk of /nix/store); None where nix cannot read it.
    """

    @override
    def requires_command(self) -> str:
        return "nix"

    @override
    def command(self) -> str:
        return f"{{ {STORE_USAGE_COMMAND}; }} 2>/dev/null || true"

    @override
    def process(self, output: list[str]) -> StoreUsage:
        return parse_store_usage("\n".join(output))

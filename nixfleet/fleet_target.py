"""The real fleet as a target (NIXFLEET_TARGET=fleet, the default): the inventory's hosts at
their own addresses, the repository's nix/ and secrets/, built as path:FLAKE_DIR?dir=nix.

Found like every target, by its entry point (pyproject.toml), so that nixfleet/target.py stays
below the inventory, the flake and the secrets it answers with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nixfleet.flake import fleet_flake_files
from nixfleet.inventory import Fleet, fleet_connection
from nixfleet.model import Host
from nixfleet.target import ConnectionFn, HostEntry, Target

if TYPE_CHECKING:
    from nixfleet.secrets.store import SecretStore


class FleetTarget(Target):
    name = "fleet"

    def host_entries(self, entries: Sequence[HostEntry]
                     ) -> tuple[list[HostEntry], dict[str, list[str]]]:
        return list(entries), {}

    def connection(self, entries: Sequence[HostEntry]) -> ConnectionFn:
        return fleet_connection

    def flake_files(self, hosts: Iterable[Host], root: Path,
                    at: str | None = None) -> dict[str, bytes]:
        return fleet_flake_files(root)  # the same wherever it is written

    def flake_ref(self, flake_dir: str) -> str:
        return f"path:{flake_dir}?dir=nix"

    def secrets_store(self, fleet: Fleet, root: Path,
                      identity_paths: Sequence[Path] = ()) -> SecretStore:
        # Imported here: a command that only reaches the hosts starts without the secrets'.
        from nixfleet.secrets.store import open_store

        return open_store(root, identity_paths, fleet=fleet)

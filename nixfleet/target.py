"""What a deploy reaches: the real fleet, or another target such as the lab.

The choice is made once, by NIXFLEET_TARGET (default "fleet"), and answered by a Target
object: everything that differs between targets is a question to it (which hosts, how to
connect, which flake a host receives and how Nix names it, the deployer's Nix settings, where
the secrets are). Production code asks `current_target()` and names no target's module:
targets are found by their entry points (group `nixfleet.targets` in pyproject.toml), the way
pyinfra finds its connectors, so a target imports production code and never the reverse.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from nixfleet.errors import InventoryError
from nixfleet.model import Host

ENTRY_POINT_GROUP = "nixfleet.targets"
DEFAULT_TARGET = "fleet"

# One inventory entry as inventory.py writes it: (name, {data}).
HostEntry = tuple[str, dict[str, Any]]
# A host's pyinfra connection data (ssh_hostname, ssh_user, ...).
ConnectionFn = Callable[[Host], dict[str, Any]]


class Target(ABC):
    """What differs between the places a deploy reaches."""

    name: str
    # Boot partitions and boot files are this fraction of the real sizes (the lab's are small).
    boot_scale: float = 1.0
    # Seconds a rollout's alert gate watches a wave where deploy.alertGate.settle is not set.
    alert_settle: int = 180

    @abstractmethod
    def host_entries(self, entries: Sequence[HostEntry]
                     ) -> tuple[list[HostEntry], dict[str, list[str]]]:
        """The inventory's entries as this target sees them, and the groups it adds."""

    @abstractmethod
    def connection(self, entries: Sequence[HostEntry]) -> ConnectionFn:
        """How pyinfra connects to each of these hosts (the entries host_entries returned)."""

    @abstractmethod
    def flake_files(self, hosts: Iterable[Host], root: Path,
                    at: str | None = None) -> dict[str, bytes]:
        """Relative path -> content of the flake directory the hosts receive; at: where the
        receiving host writes it, when that is not the hosts' flakeDir (a builder's)."""

    @abstractmethod
    def flake_ref(self, flake_dir: str) -> str:
        """How Nix names the flake written to flake_dir."""

    def lock_dir(self, root: Path) -> Path:
        """The configuration's directory whose flake.nix and flake.lock the hosts are built
        from (`nixfleet update` moves that lock)."""
        return root / "nix"

    def local_nix(self, root: Path) -> str:
        """Ready the deployer's own Nix to evaluate or build the hosts' systems (--dry,
        buildOn local) and give its extra NIX_CONFIG lines."""
        return ""

    @abstractmethod
    def secrets_store(self, fleet: Any, root: Path, identity_paths: Sequence[Path] = ()) -> Any:
        """The secrets the hosts should hold, to check delivery against: a
        nixfleet.secrets.store.SecretStore for this nixfleet.inventory.Fleet (identity_paths:
        the user's -i, where the target's secrets are the user's). Typed in the targets:
        both types sit above this module, which the inventory imports."""

    def binary_cache_public_key(self, fleet: Any, root: Path) -> str:
        """The public key ("name:base64") the hosts' Nix trusts for the fleet's binary cache:
        nix/binary-cache.pub, which the flake reads."""
        return (root / "nix" / "binary-cache.pub").read_text().strip()

    def builder_login(self, builder: Any, root: Path) -> tuple[str, str, str] | None:
        """How targets log into a builder's store over SSH (one that runs no binary cache):
        user, address and the builder's public host key; None when the fleet has no fetch key
        (nix/builder-ssh.pub, whose private half is the agenix secret builder-ssh-key). NixOS's
        nix.sshServe serves it as the user nix-ssh (nix/modules/binary-cache.nix)."""
        if not (root / "nix" / "builder-ssh.pub").is_file():
            return None
        return "nix-ssh", builder.address, builder.ssh.hostKey

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def current_target() -> Target:
    """The target NIXFLEET_TARGET names (default: the real fleet)."""
    return target_named(os.environ.get("NIXFLEET_TARGET", DEFAULT_TARGET) or DEFAULT_TARGET)


@cache
def target_named(name: str) -> Target:
    found = _entry_points()
    if not found:
        raise InventoryError(f"NIXFLEET_TARGET: no target is installed (entry points "
                             f"{ENTRY_POINT_GROUP}); reinstall nixfleet (scripts/setup)")
    if name not in found:
        raise InventoryError(f"NIXFLEET_TARGET: unknown target {name!r} "
                             f"(known: {', '.join(found)})")
    target = found[name].load()()
    if not isinstance(target, Target):
        raise InventoryError(f"NIXFLEET_TARGET: entry point {found[name].value} of target "
                             f"{name!r} is not a nixfleet Target")
    return target


@cache
def _entry_points() -> dict[str, EntryPoint]:
    """Installed targets by name, the real fleet first."""
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return dict(sorted(found.items(), key=lambda item: (item[0] != DEFAULT_TARGET, item[0])))

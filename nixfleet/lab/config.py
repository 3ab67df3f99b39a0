"""Where the lab lives on this machine and how its network is laid out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BRIDGE = "nflab0"
# A private /24 on a bridge the lab creates; traffic never leaves this machine.
SUBNET_PREFIX = "10.199.77"
GATEWAY = f"{SUBNET_PREFIX}.1"
FIRST_HOST_OCTET = 11
MAX_HOSTS = 200


@dataclass(frozen=True)
class LabPaths:
    state: Path  # keys, known_hosts, per-host upper dirs
    cache: Path  # the shared read-only Debian rootfs

    @property
    def key(self) -> Path:
        return self.state / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state / "known_hosts"

    @property
    def state_file(self) -> Path:
        return self.state / "state.json"

    def host_dir(self, name: str) -> Path:
        return self.state / "hosts" / name


def lab_paths() -> LabPaths:
    return LabPaths(
        state=Path(os.environ.get("NIXFLEET_LAB_DIR", "/var/lib/nixfleet-lab")),
        cache=Path(os.environ.get("NIXFLEET_LAB_CACHE", "/var/cache/nixfleet-lab")),
    )


def host_address(index: int) -> str:
    if not 0 <= index < MAX_HOSTS:
        raise ValueError(f"lab host index {index} out of range")
    return f"{SUBNET_PREFIX}.{FIRST_HOST_OCTET + index}"


def veth_name(index: int) -> str:
    """Host-side veth name (the kernel allows 15 characters)."""
    return f"nflab-v{index}"

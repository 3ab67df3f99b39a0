"""Where the lab lives on this machine and how its network is laid out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

FIRST_HOST_OCTET = 11
MAX_HOSTS = 200
MAX_INSTANCE = 9
# The lab's boot partitions and boot files are the real ones' sizes scaled down: one real MiB
# is 16 KiB in the lab (nix/lab/toplevel.nix sizes kernel and initrd with the same factor).
BOOT_SCALE = 16 / 1024
DEFAULT_ESP_MIB = 1024  # a host whose data has no boot.espSize


def instance() -> int:
    """Which lab (NIXFLEET_LAB_INSTANCE, default 0): several labs can run side by side, each
    with its own bridge, subnet, state directory and cgroups."""
    value = os.environ.get("NIXFLEET_LAB_INSTANCE", "0") or "0"
    if not value.isdigit() or int(value) > MAX_INSTANCE:
        from nixfleet.errors import NixfleetError

        raise NixfleetError(f"NIXFLEET_LAB_INSTANCE must be 0-{MAX_INSTANCE}, got {value!r}")
    return int(value)


def bridge() -> str:
    return f"nflab{instance()}"


def subnet_prefix() -> str:
    """A private /24 on a bridge the lab creates; traffic never leaves this machine."""
    return f"10.199.{77 + instance()}"


def gateway() -> str:
    return f"{subnet_prefix()}.1"


def cgroup_name(name: str) -> str:
    suffix = instance() or ""
    return f"nixfleet-lab{suffix}-{name}"


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
    suffix = f"-{instance()}" if instance() else ""
    return LabPaths(
        state=Path(os.environ.get("NIXFLEET_LAB_DIR", f"/var/lib/nixfleet-lab{suffix}")),
        cache=Path(os.environ.get("NIXFLEET_LAB_CACHE", "/var/cache/nixfleet-lab")),
    )


def host_address(index: int) -> str:
    if not 0 <= index < MAX_HOSTS:
        raise ValueError(f"lab host index {index} out of range")
    return f"{subnet_prefix()}.{FIRST_HOST_OCTET + index}"


def veth_name(index: int) -> str:
    """Host-side veth name (the kernel allows 15 characters)."""
    prefix = f"nflab{instance()}" if instance() else "nflab"
    return f"{prefix}-v{index}"

"""The lab as a pyinfra target (NIXFLEET_TARGET=lab): same hosts, lab addresses and keys.

`lab up --extra N` adds N clones of the inventory's hosts (group lab_extra) for fan-out
measurements; their count is kept in the lab's state file so every command sees them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from nixfleet.inventory import ConnectionFn, HostEntry
from nixfleet.lab.config import host_address, lab_paths
from nixfleet.model import Host


def extra_count() -> int:
    state = lab_paths().state_file
    if not state.is_file():
        return 0
    return int(json.loads(state.read_text()).get("extra", 0))


def extra_entries(entries: Sequence[HostEntry], count: int) -> list[HostEntry]:
    """Clones of the inventory's hosts, cycling through them: p620-x1, razer-x2, ..."""
    clones = []
    for i in range(count):
        base_name, base = entries[i % len(entries)]
        clones.append((f"{base_name}-x{i + 1}", copy.deepcopy(base)))
    return clones


def lab_entries(entries: Sequence[HostEntry]) -> tuple[list[HostEntry], list[str]]:
    """The inventory's hosts plus the extra clones, and the names of the clones."""
    extras = extra_entries(entries, extra_count())
    return [*entries, *extras], [name for name, _ in extras]


def lab_connection(entries: Sequence[HostEntry]) -> ConnectionFn:
    """Connection data by position: host i answers at the lab's i-th address."""
    paths = lab_paths()
    index = {name: i for i, (name, _) in enumerate(entries)}

    def connect(host: Host) -> dict[str, Any]:
        return {
            "ssh_hostname": host_address(index[host.name]),
            "ssh_port": 22,
            "ssh_user": "root",
            "ssh_key": str(paths.key),
            "ssh_known_hosts_file": str(paths.known_hosts),
            "ssh_strict_host_key_checking": "yes",
            "ssh_connect_retries": 1,
        }

    return connect

"""From host entries to a validated fleet and pyinfra groups.

inventory.py hands its host entries to `fleet_groups`, which merges each host's group data
the way pyinfra will (all < groups < host), validates the model, derives the groups and returns
them as module-level pyinfra groups. Bad data raises InventoryError before any SSH.
"""

from __future__ import annotations

import ast
import difflib
import os
import runpy
import sys
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from nixfleet.errors import InventoryError, for_pyinfra
from nixfleet.model import Host, validate_host
from nixfleet.target import ConnectionFn, HostEntry, Target, current_target

ROLE_GROUPS = {
    "workstation": "workstations", "laptop": "laptops", "server": "servers", "sff": "sff",
}


@dataclass(frozen=True)
class Fleet:
    """Validated hosts in inventory order, with their derived groups."""

    hosts: dict[str, Host]
    groups: dict[str, list[str]]
    # Each host's pyinfra data as inventory.py hands it over (the model plus connection keys).
    host_data: dict[str, dict[str, Any]]

    def select(self, patterns: Sequence[str]) -> list[str]:
        """Hosts matching --limit patterns with pyinfra's rules (group name, else host glob).

        Unlike pyinfra, a pattern that matches nothing is an error, not an empty run.
        """
        if not patterns:
            return list(self.hosts)
        selected: set[str] = set()
        for pattern in patterns:
            matched = self.groups.get(pattern) or [h for h in self.hosts if fnmatch(h, pattern)]
            if not matched:
                raise InventoryError(self.unknown_limit_message(pattern))
            selected.update(matched)
        return [h for h in self.hosts if h in selected]

    def unknown_limit_message(self, pattern: str) -> str:
        groups = sorted(g for g, members in self.groups.items() if members)
        close = difflib.get_close_matches(pattern, [*self.hosts, *groups], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (
            f"--limit {pattern!r} matches no host or group{hint}; "
            f"hosts: {', '.join(self.hosts)}; groups: {', '.join(groups)}"
        )


def load_group_data(directory: Path) -> dict[str, dict[str, Any]]:
    """Read group_data/*.py like pyinfra does: public names, minus what the file imports."""
    result: dict[str, dict[str, Any]] = {}
    if not directory.is_dir():
        return result
    for path in sorted(directory.glob("*.py")):
        imported = _imported_names(path)
        values = runpy.run_path(str(path))
        keys = values.get("__all__") or [k for k in values if k not in imported]
        result[path.stem] = {k: values[k] for k in keys if not k.startswith("__")}
    return result


def _imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def derive_groups(host: Host) -> list[str]:
    """The groups a host belongs to, from its model alone (never listed by hand)."""
    groups = [host.hardware_class, *(ROLE_GROUPS[r] for r in host.roles)]
    monitoring = host.features.monitoring
    if monitoring.enable:
        groups.append("monitoring_server" if monitoring.mode == "server" else "monitoring_clients")
    if host.features.ai.enable and host.features.ai.ollama:
        groups.append("ollama")
    return groups


def _entry_groups(entry: dict[str, Any]) -> list[str]:
    roles = entry.get("roles")
    groups = [entry.get("hardware_class")]
    if isinstance(roles, list):
        groups += [ROLE_GROUPS.get(r) for r in roles if isinstance(r, str)]
    return [g for g in groups if isinstance(g, str)]


def _merge(
    name: str, entry: dict[str, Any], groups: Iterable[str], group_data: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """all < each group < host, shallow like pyinfra; two groups disagreeing is an error
    (pyinfra would silently pick one by group order)."""
    merged = dict(group_data.get("all", {}))
    set_by: dict[str, str] = {}
    for group in groups:
        for key, value in group_data.get(group, {}).items():
            if key in set_by and merged[key] != value and key not in entry:
                raise InventoryError(
                    f"host {name}: {key}: set differently by group_data/{set_by[key]}.py and "
                    f"group_data/{group}.py; set it in one place or on the host"
                )
            merged[key] = value
            set_by[key] = group
    merged.update(entry)
    return merged


def build_fleet(
    entries: Sequence[HostEntry],
    group_data: dict[str, dict[str, Any]],
    connection: ConnectionFn | None = None,
    extra_groups: dict[str, list[str]] | None = None,
) -> Fleet:
    """Validate every host and derive groups; raise InventoryError on the first bad datum."""
    hosts: dict[str, Host] = {}
    groups: dict[str, list[str]] = {}
    raw: dict[str, dict[str, Any]] = {}
    for item in entries:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict)):
            raise InventoryError(f"inventory entry {item!r}: expected (name, {{data}})")
        name, entry = item
        if name in hosts:
            raise InventoryError(f"host {name}: duplicate host (defined twice in inventory.py)")
        # Class and role groups come from the entry itself; feature groups (ollama, ...) need
        # the validated flags, so a host whose feature groups carry data is validated twice.
        merged = _merge(name, entry, _entry_groups(entry), group_data)
        host = validate_host(name, merged)
        if set(derive_groups(host)) - set(_entry_groups(entry)):
            merged = _merge(name, entry, derive_groups(host), group_data)
            host = validate_host(name, merged)
        hosts[name] = host
        raw[name] = merged
        for group in derive_groups(host):
            groups.setdefault(group, []).append(name)

    groups.update({g: list(members) for g, members in (extra_groups or {}).items() if members})
    _check_cross_host(hosts, groups)
    connect = connection or fleet_connection
    host_data = {
        name: {
            **{k: v for k, v in raw[name].items() if k not in Host.model_fields},
            **host.model_dump(mode="json", exclude={"name"}),
            **connect(host),
        }
        for name, host in hosts.items()
    }
    return Fleet(hosts=hosts, groups=groups, host_data=host_data)


def _check_cross_host(hosts: dict[str, Host], groups: dict[str, list[str]]) -> None:
    for group in groups:
        if group in hosts:
            raise InventoryError(f"host {group}: name clashes with the derived group {group!r}")
    servers = set(groups.get("monitoring_server", []))
    for name, host in hosts.items():
        _check_builder(name, host, hosts)
        monitoring = host.features.monitoring
        if not monitoring.enable or monitoring.mode == "standalone":
            continue
        server = monitoring.serverHost
        if monitoring.mode == "server":
            if server not in (None, name):
                raise InventoryError(
                    f"host {name}: features.monitoring.serverHost: a monitoring server must "
                    f"name itself or nothing, got {server!r}"
                )
        elif server is None:
            raise InventoryError(
                f"host {name}: features.monitoring.serverHost: a monitoring client needs one"
            )
        elif server not in servers:
            raise InventoryError(
                f"host {name}: features.monitoring.serverHost: {server!r} is not a monitoring "
                f"server (servers: {', '.join(sorted(servers)) or 'none'})"
            )


def _check_builder(name: str, host: Host, hosts: dict[str, Host]) -> None:
    """deploy.buildOn naming a host: a fleet member that builds its own system (one whose
    system is built elsewhere is not set up to build, e.g. a laptop). A builder may name
    itself (a class's data naming it reaches it too): its own system is then built with the
    others, in the same Nix invocation."""
    builder = host.deploy.buildOn
    if builder in ("target", "local", name):
        return
    if builder not in hosts:
        close = difflib.get_close_matches(builder, list(hosts), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InventoryError(f"host {name}: deploy.buildOn: {builder!r} is not a host of the "
                             f"fleet{hint}")
    if hosts[builder].deploy.buildOn not in ("target", builder):
        raise InventoryError(
            f"host {name}: deploy.buildOn: {builder!r} cannot build for others: its own system "
            f"is built elsewhere (its deploy.buildOn is {hosts[builder].deploy.buildOn!r})")


# --- how to connect ------------------------------------------------------------------------


def fleet_connection(host: Host) -> dict[str, Any]:
    """pyinfra connection data for a real host: host keys are always checked strictly."""
    data: dict[str, Any] = {
        "ssh_hostname": host.address,
        "ssh_port": host.ssh.port,
        "ssh_user": host.ssh.user,
        "ssh_strict_host_key_checking": "yes",
        "ssh_connect_retries": 1,
    }
    if host.ssh.hostKey:
        data["ssh_known_hosts_file"] = str(project_root() / "known_hosts")
    if host.ssh.user != "root":
        data["_sudo"] = True
    return data


def project_root() -> Path:
    """The directory holding inventory.py (the configuration repository)."""
    configured = os.environ.get("NIXFLEET_INVENTORY")
    if configured:
        return Path(configured).resolve().parent
    here = Path.cwd()
    if (here / "inventory.py").is_file():
        return here
    return Path(__file__).resolve().parent.parent


# --- pyinfra ------------------------------------------------------------------------------


def pyinfra_groups(fleet: Fleet) -> dict[str, Any]:
    """Module-level groups for inventory.py: `all` carries each host's data once."""
    groups: dict[str, Any] = {"all": ([(n, d) for n, d in fleet.host_data.items()], {})}
    groups.update({name: list(members) for name, members in fleet.groups.items()})
    return groups


def limit_patterns(argv: Sequence[str]) -> list[str]:
    """The --limit values of a pyinfra command line (`--limit X` or `--limit=X`)."""
    patterns = []
    for i, arg in enumerate(argv):
        if arg == "--limit" and i + 1 < len(argv):
            patterns.append(argv[i + 1])
        elif arg.startswith("--limit="):
            patterns.append(arg.split("=", 1)[1])
    return patterns


def running_under_pyinfra(argv: Sequence[str]) -> bool:
    program = Path(argv[0]).name if argv else ""
    return program == "pyinfra" or (program == "__main__.py" and "pyinfra" in argv[0])


# The target load_inventory_file was given, for the nixfleet_inventory call inside inventory.py.
_loading_for: ContextVar[Target | None] = ContextVar("nixfleet_inventory_target", default=None)


def load_inventory_file(path: Path, target: Target | None = None) -> Fleet:
    """Execute inventory.py (as pyinfra would) and return its fleet, as `target` sees it
    (default: current_target())."""
    token = _loading_for.set(target)
    try:
        values = runpy.run_path(str(path))
    finally:
        _loading_for.reset(token)
    fleet = values.get("fleet")
    if not isinstance(fleet, Fleet):
        raise InventoryError(f"{path}: defines no `fleet` (see inventory.py: fleet, _groups = "
                             "nixfleet_inventory(...))")
    return fleet


def nixfleet_inventory(entries: Sequence[HostEntry], inventory_file: str,
                       target: Target | None = None) -> tuple[Fleet, dict]:
    """What inventory.py calls: the fleet as the target sees it (default: the one
    load_inventory_file was given, else current_target()), and its pyinfra groups.

    Under pyinfra, a --limit that matches nothing fails here with the known hosts and groups,
    because pyinfra itself would run zero hosts and exit 0.
    """
    try:
        target = target or _loading_for.get() or current_target()
        fleet = _load_fleet(entries, Path(inventory_file).resolve().parent, target)
        if running_under_pyinfra(sys.argv):
            fleet.select(limit_patterns(sys.argv))
    except InventoryError as error:
        if running_under_pyinfra(sys.argv):
            raise for_pyinfra(error, sys._getframe(1)) from None
        raise
    return fleet, pyinfra_groups(fleet)


def _load_fleet(entries: Sequence[HostEntry], root: Path, target: Target) -> Fleet:
    entries, extra_groups = target.host_entries(entries)
    return build_fleet(entries, load_group_data(root / "group_data"),
                       connection=target.connection(entries), extra_groups=extra_groups)

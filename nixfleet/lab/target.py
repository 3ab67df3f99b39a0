"""The lab as a target (NIXFLEET_TARGET=lab): the same hosts at lab addresses with the lab's
keys, the lab flake, the lab's Nix settings and the lab's own secrets.

Found by its entry point (pyproject.toml, group nixfleet.targets), so production code never
imports the lab. `lab up --extra N` adds N clones of the inventory's hosts (group lab_extra)
for fan-out measurements; their count is kept in the lab's state file so every command sees
them.

The lab flake (nix/lab) is built as path:FLAKE_DIR with the lab fleet's host data beside it
(the same per-host JSON `nixfleet generate` writes) and the lab's secrets (nixfleet.lab.secrets:
dummy values encrypted to the lab hosts' keys, each host's list from secrets/rules.py). Its
lock file, nix/lab/flake.lock, pins its one input, labpkgs (the package versions, a stand-in
for nixpkgs), as nix/flake.lock pins nixpkgs: `nixfleet update` moves it.

The lab's secrets and monitoring modules (age files, YAML, the renderers) are imported by the
functions that use them, as the fleet target's secret store is: a command that only reaches
the hosts (`nixfleet status` before it asks them, ping) starts without them.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nixfleet.errors import NixfleetError
from nixfleet.flake import NIXOS_RELEASE_EXPRESSION, nix_system
from nixfleet.inventory import Fleet
from nixfleet.lab.config import BOOT_SCALE, LabPaths, host_address, lab_paths
from nixfleet.model import Host
from nixfleet.target import ConnectionFn, HostEntry, Target

if TYPE_CHECKING:
    from nixfleet.secrets.store import SecretStore

LAB_FLAKE_DIR = Path("nix") / "lab"
LAB_FLAKE_FILES = ("flake.nix", "toplevel.nix", "build-toplevel.py")
LAB_LOCK = "flake.lock"
# What the lab flake reads of the real flake's nix/lib, under lib/ as there: the fleet's ports
# and the function that renders /etc/ai-providers.json, so the lab's values are the real ones.
LAB_LIB_FILES = ("ports.json", "ai-providers.nix")
LAB_FLEET_FLAKE = "lib/fleet-flake.nix"  # the real nix/flake.nix (its inputs name the release)
LAB_NIXOS_RELEASE = "lib/nixos-release.nix"
# The monitoring server's rule_files, relative to its prometheus.yml (<server>/prometheus.yml):
# the lab's files are one store directory whose path is known only once built.
LAB_MONITORING_DIR = ".."
# On the lab's deployer (a plain Debian nix-bin as root, offline) Nix needs these.
LAB_NIX_CONFIG = "build-users-group =\nsandbox = false\nsubstituters =\n"
EXTRA_GROUP = "lab_extra"


class LabTarget(Target):
    name = "lab"
    boot_scale = BOOT_SCALE
    alert_settle = 10  # the demo's waves; a test that waits for an alert sets its own

    def __init__(self, paths: LabPaths | None = None):
        self._paths = paths

    @property
    def paths(self) -> LabPaths:
        """The given paths, else the lab NIXFLEET_LAB_INSTANCE selects (asked each time)."""
        return self._paths or lab_paths()

    def host_entries(self, entries: Sequence[HostEntry]
                     ) -> tuple[list[HostEntry], dict[str, list[str]]]:
        """The inventory's hosts plus the extra clones (group lab_extra)."""
        extras = extra_entries(entries, extra_count(self.paths))
        return [*entries, *extras], {EXTRA_GROUP: [name for name, _ in extras]}

    def connection(self, entries: Sequence[HostEntry]) -> ConnectionFn:
        return lab_connection(entries, self.paths)

    def flake_files(self, hosts: Iterable[Host], root: Path,
                    at: str | None = None) -> dict[str, bytes]:
        return lab_flake_files(hosts, root, self.paths, at)

    def lock_dir(self, root: Path) -> Path:
        return root / LAB_FLAKE_DIR

    def flake_ref(self, flake_dir: str) -> str:
        return f"path:{flake_dir}"

    def local_nix(self, root: Path) -> str:
        # Only where the deployer's Nix is used: nixfleet status, say, needs the files only.
        keep_inputs_in_store(root / LAB_FLAKE_DIR)
        return LAB_NIX_CONFIG

    def secrets_store(self, fleet: Fleet, root: Path,
                      identity_paths: Sequence[Path] = ()) -> SecretStore:
        """The lab's dummy secrets, decryptable with the lab admin key (identity_paths are the
        user's keys, which the lab's secrets are not encrypted to)."""
        from nixfleet.lab.secrets import lab_fleet, lab_store
        from nixfleet.secrets.rules import RULES_FILE

        paths = self.paths
        store = lab_store(lab_fleet(fleet.hosts.values(), paths, fleet.groups), root, paths)
        if store is None:
            raise NixfleetError(f"no {RULES_FILE}: no secrets to check")
        return store


    def binary_cache_public_key(self, fleet: Fleet, root: Path) -> str:
        """The public half of the lab's own signing key (the lab flake's binary-cache.pub)."""
        from nixfleet.lab.secrets import BINARY_CACHE_KEY, lab_fleet, lab_public_key, lab_rules

        paths = self.paths
        rules = lab_rules(lab_fleet(fleet.hosts.values(), paths, fleet.groups), root, paths)
        public = lab_public_key(rules, paths, BINARY_CACHE_KEY) if rules else None
        if public is None:
            raise NixfleetError("the lab's binary-cache-key is not a signing key yet: run "
                                "`nixfleet lab up`")
        return public

    def builder_login(self, builder: Host, root: Path) -> tuple[str, str, str] | None:
        """The lab's nix.sshServe: root with the fetch key's forced command (the lab hosts
        have no nix-daemon, through which NixOS's nix-ssh user reads the store) and the lab
        host key; None while the lab has no builder-ssh-key (`nixfleet lab up` makes it)."""
        from nixfleet.lab.secrets import BUILDER_SSH_KEY, host_key

        key = host_key(self.paths, builder.name)
        if key is None or not (self.paths.state / "secrets" / f"{BUILDER_SSH_KEY}.age").is_file():
            return None
        return "root", builder.name, key


# --- hosts ---------------------------------------------------------------------------------


def extra_count(paths: LabPaths) -> int:
    state = paths.state_file
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


def lab_connection(entries: Sequence[HostEntry], paths: LabPaths) -> ConnectionFn:
    """Connection data by position: host i answers at the lab's i-th address."""
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


# --- the lab flake -------------------------------------------------------------------------


def lab_flake_files(hosts: Iterable[Host], root: Path, paths: LabPaths,
                    at: str | None = None) -> dict[str, bytes]:
    """Relative path -> content of the lab flake directory for these hosts (paths: the lab's,
    where its secrets are; at: where it is written, if not the hosts' flakeDir: the lock names
    that place)."""
    from nixfleet.lab.secrets import lab_secret_files
    from nixfleet.render import host_data_json

    hosts = list(hosts)
    files = {name: (root / LAB_FLAKE_DIR / name).read_bytes() for name in LAB_FLAKE_FILES}
    files.update(lab_lock_files(root / LAB_FLAKE_DIR, at or flake_dir(hosts)))
    files["lab.json"] = (json.dumps({"system": nix_system()}, indent=2) + "\n").encode()
    for host in hosts:
        files[f"hosts/{host.name}.json"] = host_data_json(host.nix_data()).encode()
    files.update(lab_secret_files(hosts, root, paths))
    files.update(lab_lib_files(root))
    files.update(lab_monitoring_files(hosts, root))
    # Lab-only fault injection (tests put units that fail or cut SSH here, in a copy).
    for fault in sorted((root / "nix" / "lab" / "faults").glob("*.*")):  # .json, .build-gate
        files[f"faults/{fault.name}"] = fault.read_bytes()
    return files


def flake_dir(hosts: Sequence[Host]) -> str:
    """The lab hosts' one flake directory (system.paths.flakeDir, /etc/nixos by default)."""
    dirs = sorted({host.system.paths.flakeDir for host in hosts}) or ["/etc/nixos"]
    if len(dirs) > 1:
        raise NixfleetError(f"the lab's hosts need one system.paths.flakeDir, not "
                            f"{', '.join(dirs)}: the lab flake's lock names where they have "
                            "its inputs")
    return dirs[0].rstrip("/")


def lab_lock_files(lab: Path, host_flake_dir: str) -> dict[str, bytes]:
    """flake.lock and the local inputs it locks (labpkgs/), as the hosts get them.

    Nix 2.8 cannot fetch an input locked by a relative path ("because it uses a relative
    path") into a store that lacks it, so the hosts' copy of the lock names where each host has
    the input (FLAKE_DIR/labpkgs), by the same narHash: a host builds what the lock pins, and a
    source that differs from it fails with Nix's "NAR hash mismatch". lastModified is left out:
    for a path it is the files' mtime, which the upload does not keep. Without a lock file,
    nothing (the hosts would lock the flake themselves)."""
    try:
        lock = json.loads((lab / LAB_LOCK).read_text())
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise NixfleetError(f"{lab / LAB_LOCK}: not a lock file: {error}") from None
    files: dict[str, bytes] = {}
    for relative, locked in _local_inputs(lock):
        for path in sorted((lab / relative).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files[str(path.relative_to(lab))] = path.read_bytes()
        locked["path"] = f"{host_flake_dir}/{relative}"
        locked.pop("lastModified", None)
    files[LAB_LOCK] = (json.dumps(lock, indent=2) + "\n").encode()
    return files


def _local_inputs(lock: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(path relative to the flake, its node's `locked`) of each input locked as path:./..."""
    found = []
    for node in lock.get("nodes", {}).values():
        locked = node.get("locked") or {}
        path = str(locked.get("path", ""))
        if locked.get("type") == "path" and path.startswith("./"):
            found.append((path[2:].rstrip("/"), locked))
    return found


def keep_inputs_in_store(lab: Path) -> None:
    """Add the lab flake's local inputs to this machine's store, where Nix looks for an input
    locked by narHash before its path: the deployer evaluates and builds (--dry, buildOn local)
    from a copy of the hosts' files, whose lock names the hosts' paths. A source that differs
    from the lock adds a path the lock does not name: harmless."""
    try:
        lock = json.loads((lab / LAB_LOCK).read_text())
    except (OSError, ValueError):
        return
    for relative, _ in _local_inputs(lock):
        try:
            subprocess.run(["nix", "--extra-experimental-features", "nix-command", "store",
                            "add-path", "--name", "source", str(lab / relative)],
                           capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return  # no nix here: the deployer builds nothing of the lab's


def lab_lib_files(root: Path) -> dict[str, bytes]:
    """The real flake's nix/lib files that the lab flake reads, under lib/; and its flake.nix
    with the expression that reads the NixOS release from its nixpkgs input, so a lab host
    reports the release the real hosts run (nixfleet.flake.nixos_release)."""
    from nixfleet.monitoring import PORTS_FILE

    lib = lib_root(root) / PORTS_FILE.parent
    files = {f"lib/{name}": (lib / name).read_bytes() for name in LAB_LIB_FILES}
    files[LAB_FLEET_FLAKE] = (lib.parent / "flake.nix").read_bytes()
    files[LAB_NIXOS_RELEASE] = NIXOS_RELEASE_EXPRESSION.read_bytes()
    return files


def lib_root(root: Path) -> Path:
    """root, or this nixfleet checkout for a configuration without nix/lib (the lab tests'
    copies of inventory.py and nix/lab)."""
    from nixfleet.monitoring import PORTS_FILE

    lib = root / PORTS_FILE.parent
    if all((lib / name).is_file() for name in LAB_LIB_FILES):
        return root
    return Path(__file__).resolve().parents[2]


def lab_monitoring_files(hosts: Iterable[Host], root: Path) -> dict[str, bytes]:
    """The monitoring servers' files (nixfleet generate's nix/monitoring/), rendered by the same
    code for the lab's addresses (host i at the lab's i-th address), under monitoring/."""
    from nixfleet.monitoring import read_ports, render

    hosts = list(hosts)
    ports = read_ports(lib_root(root))
    fleet = Fleet(hosts={h.name: h for h in hosts}, groups={}, host_data={})
    addresses = {h.name: host_address(i) for i, h in enumerate(hosts)}
    return {f"monitoring/{path}": text.encode() for path, text in
            render(fleet, ports, addresses=addresses, config_dir=LAB_MONITORING_DIR).items()}

"""Files derived from the inventory and committed: nix/hosts/<host>.json, known_hosts, the
agenix rules and the monitoring server's configuration (nix/monitoring/, nixfleet.monitoring).

The flake reads nix/hosts/*.json with builtins.fromJSON, so Nix and Python cannot disagree;
`nixfleet generate --check` (run by the tests) fails when a committed file is stale.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from nixfleet import monitoring
from nixfleet.errors import NixfleetError
from nixfleet.files import write_atomic
from nixfleet.inventory import Fleet


def host_data_json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def known_hosts(fleet: Fleet) -> str:
    lines = []
    for host in fleet.hosts.values():
        if host.ssh.hostKey:
            address = host.address if host.ssh.port == 22 else f"[{host.address}]:{host.ssh.port}"
            key_type, key = host.ssh.hostKey.split()[:2]
            lines.append(f"{address} {key_type} {key}")
    return "".join(f"{line}\n" for line in lines)


def generated_files(fleet: Fleet, root: Path) -> dict[Path, str]:
    """Every file derived from the inventory: host data, known_hosts, agenix rules,
    monitoring configuration."""
    from nixfleet.secrets import rules as secret_rules

    files = {
        root / "nix" / "hosts" / f"{name}.json": host_data_json(host.nix_data())
        for name, host in fleet.hosts.items()
    }
    files[root / "known_hosts"] = known_hosts(fleet)
    files.update(secret_rules.generated_files(secret_rules.load_rules(fleet, root), root))
    files.update(monitoring.generated_files(fleet, root))
    return files


def orphaned_files(wanted: Mapping[Path, str], root: Path) -> list[Path]:
    """Generated files of hosts (or monitoring servers) that left the inventory."""
    candidates = [*(root / "nix" / "hosts").glob("*.json"), *monitoring.existing_files(root)]
    return sorted(p for p in candidates if p not in wanted)


def stale(wanted: Mapping[Path, str]) -> list[Path]:
    """Which of these files are missing or differ from what they should contain."""
    return [p for p, text in wanted.items() if not p.is_file() or p.read_text() != text]


def write_stale(wanted: Mapping[Path, str]) -> list[Path]:
    """Write the files that are not current (atomically); return them."""
    changed = stale(wanted)
    for path in changed:
        write_atomic(path, wanted[path])
    return changed


def stale_files(fleet: Fleet, root: Path) -> list[Path]:
    """Generated files that differ from what the inventory gives, plus orphaned host files."""
    wanted = generated_files(fleet, root)
    return stale(wanted) + orphaned_files(wanted, root)


def generate(fleet: Fleet, root: Path) -> list[Path]:
    """Write the generated files; remove those of hosts that left the inventory."""
    wanted = generated_files(fleet, root)
    orphans = orphaned_files(wanted, root)
    changed = write_stale(wanted)
    for path in orphans:
        path.unlink()
    return changed + orphans


def check_generated(fleet: Fleet, root: Path) -> None:
    stale_paths = stale_files(fleet, root)
    if stale_paths:
        names = ", ".join(str(p.relative_to(root)) for p in stale_paths)
        raise NixfleetError(f"generated files are stale: {names} (run `nixfleet generate`)")

"""Files derived from the inventory and committed: nix/hosts/<host>.json and known_hosts.

The flake reads nix/hosts/*.json with builtins.fromJSON, so Nix and Python cannot disagree;
`nixfleet generate --check` (run by the tests) fails when a committed file is stale.
"""

from __future__ import annotations

import json
from pathlib import Path

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
    files = {
        root / "nix" / "hosts" / f"{name}.json": host_data_json(host.nix_data())
        for name, host in fleet.hosts.items()
    }
    files[root / "known_hosts"] = known_hosts(fleet)
    return files


def stale_files(fleet: Fleet, root: Path) -> list[Path]:
    """Generated files that differ from what the inventory gives, plus orphaned host files."""
    wanted = generated_files(fleet, root)
    stale = [p for p, text in wanted.items() if not p.is_file() or p.read_text() != text]
    hosts_dir = root / "nix" / "hosts"
    stale += sorted(p for p in hosts_dir.glob("*.json") if p not in wanted)
    return stale


def generate(fleet: Fleet, root: Path) -> list[Path]:
    """Write the generated files; remove host files of hosts that left the inventory."""
    wanted = generated_files(fleet, root)
    changed = stale_files(fleet, root)
    for path in changed:
        if path in wanted:
            write_atomic(path, wanted[path])
        else:
            path.unlink()
    return changed


def check_generated(fleet: Fleet, root: Path) -> None:
    stale = stale_files(fleet, root)
    if stale:
        names = ", ".join(str(p.relative_to(root)) for p in stale)
        raise NixfleetError(f"generated files are stale: {names} (run `nixfleet generate`)")

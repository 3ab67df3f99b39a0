"""The flake a host receives in its flake directory (/etc/nixos by default).

For the real fleet that is nix/ (the NixOS flake and the generated host data). For the lab it
is the lab flake (nix/lab) with the lab fleet's host data beside it; both read the same
per-host JSON that `nixfleet generate` writes from the inventory.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from nixfleet.inventory import Fleet
from nixfleet.render import host_data_json

LAB_FLAKE_FILES = ("flake.nix", "toplevel.nix", "build-toplevel.py")


def nix_system() -> str:
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())
    return f"{machine}-linux"


def lab_flake_files(fleet: Fleet, root: Path) -> dict[str, bytes]:
    """Relative path -> content of the lab flake directory for every host of `fleet`."""
    files = {name: (root / "nix" / "lab" / name).read_bytes() for name in LAB_FLAKE_FILES}
    files["lab.json"] = (json.dumps({"system": nix_system()}, indent=2) + "\n").encode()
    for name, host in fleet.hosts.items():
        files[f"hosts/{name}.json"] = host_data_json(host.nix_data()).encode()
    return files

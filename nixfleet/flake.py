"""The flake a host receives in its flake directory (/etc/nixos by default).

Real fleet: the repository's nix/ (the NixOS flake, the generated host data) and secrets/
(agenix files the flake refers to as ../secrets), built as path:FLAKE_DIR?dir=nix.
Lab: the lab flake (nix/lab) with the lab fleet's host data beside it, built as
path:FLAKE_DIR, and the lab's own secrets (nixfleet.lab.secrets: dummy values encrypted to the
lab hosts' keys, with each host's list from secrets/rules.py). Both read the same per-host JSON
that `nixfleet generate` writes.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from nixfleet.lab.config import LabPaths, lab_paths
from nixfleet.model import Host
from nixfleet.render import host_data_json

LAB_FLAKE_FILES = ("flake.nix", "toplevel.nix", "build-toplevel.py")
MANIFEST = ".nixfleet-manifest"


def nix_system() -> str:
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())
    return f"{machine}-linux"


def lab_flake_files(hosts: Iterable[Host], root: Path,
                    paths: LabPaths | None = None) -> dict[str, bytes]:
    """Relative path -> content of the lab flake directory for these hosts (paths: the lab's,
    where its secrets are; default: the lab NIXFLEET_LAB_INSTANCE selects)."""
    from nixfleet.lab.secrets import lab_secret_files

    hosts = list(hosts)
    files = {name: (root / "nix" / "lab" / name).read_bytes() for name in LAB_FLAKE_FILES}
    files["lab.json"] = (json.dumps({"system": nix_system()}, indent=2) + "\n").encode()
    for host in hosts:
        files[f"hosts/{host.name}.json"] = host_data_json(host.nix_data()).encode()
    files.update(lab_secret_files(hosts, root, paths or lab_paths()))
    # Lab-only fault injection (tests put units that fail or cut SSH here, in a copy).
    for fault in sorted((root / "nix" / "lab" / "faults").glob("*.json")):
        files[f"faults/{fault.name}"] = fault.read_bytes()
    return files


def fleet_flake_files(root: Path) -> dict[str, bytes]:
    """nix/ (without the lab) and secrets/ of the configuration repository."""
    files: dict[str, bytes] = {}
    for top in ("nix", "secrets"):
        for path in sorted((root / top).rglob("*")):
            relative = path.relative_to(root)
            if path.is_file() and relative.parts[:2] != ("nix", "lab") \
                    and "__pycache__" not in relative.parts:
                files[str(relative)] = path.read_bytes()
    return files


def flake_ref(target: str, flake_dir: str) -> str:
    return f"path:{flake_dir}" if target == "lab" else f"path:{flake_dir}?dir=nix"


def file_hashes(files: Mapping[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha256(content).hexdigest() for path, content in files.items()}


def flake_hash(files: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256()
    for path, sha in sorted(file_hashes(files).items()):
        digest.update(f"{path}\0{sha}\n".encode())
    return digest.hexdigest()


def changed_paths(files: Mapping[str, bytes], remote: Mapping[str, str]) -> list[str]:
    """Paths whose content the host does not have yet."""
    return sorted(p for p, sha in file_hashes(files).items() if remote.get(p) != sha)


def delta_tarball(files: Mapping[str, bytes], paths: Iterable[str]) -> bytes:
    """A tar of the changed files plus the manifest of every wanted file (the host removes
    what the manifest does not list)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        manifest = "".join(f"{p}\n" for p in sorted(files)).encode()
        for path, content in [*((p, files[p]) for p in sorted(paths)), (MANIFEST, manifest)]:
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()

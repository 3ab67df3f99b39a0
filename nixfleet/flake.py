"""The flake a host receives in its flake directory (/etc/nixos by default), and how it
travels: hashes of its files, the changed ones, a delta tarball.

Which files make the flake is the target's answer (nixfleet.target): the real fleet's is the
repository's nix/ (the NixOS flake, the generated host data) and secrets/ (agenix files the
flake refers to as ../secrets), `fleet_flake_files` here.
"""

from __future__ import annotations

import hashlib
import io
import platform
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from nixfleet.nixcheck import EXPRESSIONS, evaluate

MANIFEST = ".nixfleet-manifest"
# Reads the NixOS release from a flake's nixpkgs input (also used by the lab flake).
NIXOS_RELEASE_EXPRESSION = EXPRESSIONS / "nixos-release.nix"


def nix_system() -> str:
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())
    return f"{machine}-linux"


def nixos_release(flake: Path) -> str:
    """The NixOS release ("26.05") a flake follows: its nixpkgs input's nixos-YY.MM branch.

    The one place the fleet's release is written is nix/flake.nix's inputs (system.stateVersion
    is not it: that is the release a host was first installed with). Raise NixError when the
    input names no such branch.
    """
    return str(evaluate(NIXOS_RELEASE_EXPRESSION, flake=str(flake.resolve())))


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


def file_hashes(files: Mapping[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha256(content).hexdigest() for path, content in files.items()}


def manifest(files: Mapping[str, bytes]) -> str:
    """Every file as `sha256sum` lists it ("SHA256  PATH"), sorted by path: what the host
    checks its flake directory against, and records as what nixfleet last wrote there."""
    return "".join(f"{sha}  {path}\n" for path, sha in sorted(file_hashes(files).items()))


def flake_hash(files: Mapping[str, bytes]) -> str:
    """The sha256 of the manifest (so a host can compute it with sha256sum alone)."""
    return hashlib.sha256(manifest(files).encode()).hexdigest()


def changed_paths(files: Mapping[str, bytes], remote: Mapping[str, str]) -> list[str]:
    """Paths whose content the host does not have yet."""
    return sorted(p for p, sha in file_hashes(files).items() if remote.get(p) != sha)


def delta_tarball(files: Mapping[str, bytes], paths: Iterable[str]) -> bytes:
    """A tar of the changed files plus the manifest of every wanted file (the host removes
    what the manifest does not list, and checks the result against it)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        listing = manifest(files).encode()
        for path, content in [*((p, files[p]) for p in sorted(paths)), (MANIFEST, listing)]:
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()

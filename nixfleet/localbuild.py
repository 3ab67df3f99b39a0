"""deploy.buildOn = "local": build a host's system on the deployer and copy its closure to
the host with `nix copy` (the host then only activates it), as colmena and deploy-rs can.
The default, "target", builds on the host itself as the original's --build-host did. Also
the evaluation (no build) that tells `--dry` whether a host's system would change.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nixfleet.flake import flake_hash
from nixfleet.ssh import ssh_argv

NIX = ["nix", "--extra-experimental-features", "nix-command flakes"]


def flake_checkout(files: Mapping[str, bytes], cache: Path) -> Path:
    """The flake's files in a directory named by their hash (written once)."""
    directory = cache / flake_hash(files)
    if not directory.is_dir():
        building = directory.with_name(directory.name + f".{os.getpid()}")
        for relative, content in files.items():
            path = building / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        os.replace(building, directory)
    return directory


def _env(nix_config: str) -> dict[str, str]:
    """This process's environment, with the target's NIX_CONFIG lines before the user's."""
    env = dict(os.environ)
    if nix_config:
        env["NIX_CONFIG"] = nix_config + env.get("NIX_CONFIG", "")
    return env


def _toplevel(files: Mapping[str, bytes], flake_ref: str, host_name: str, cache: Path) -> str:
    checkout = flake_checkout(files, cache)
    # flake_ref is how the host names its flake directory; here the checkout stands in.
    ref = "path:" + str(checkout) + flake_ref.partition("?")[1] + flake_ref.partition("?")[2]
    return f'{ref}#nixosConfigurations."{host_name}".config.system.build.toplevel'


def build(files: Mapping[str, bytes], flake_ref: str, host_name: str, nix_config: str,
          cache: Path) -> tuple[str | None, str]:
    """Build the host's toplevel here: (store path, "") or (None, the error's last line).
    nix_config: the target's extra NIX_CONFIG lines (Target.local_nix())."""
    attr = _toplevel(files, flake_ref, host_name, cache)
    result = subprocess.run([*NIX, "build", attr, "--no-link", "--json"], capture_output=True,
                            text=True, env=_env(nix_config))
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        return None, lines[-1] if lines else f"nix build exited {result.returncode}"
    return json.loads(result.stdout)[0]["outputs"]["out"], ""


def evaluate(files: Mapping[str, bytes], flake_ref: str, host_name: str, nix_config: str,
             cache: Path) -> tuple[str | None, str]:
    """The store path the host's toplevel would have, evaluated here without building (its
    derivation's output path): (store path, "") or (None, the error's last line). Equal to
    the running system's path exactly when a deploy would not change the system."""
    attr = _toplevel(files, flake_ref, host_name, cache)
    result = subprocess.run([*NIX, "eval", "--raw", f"{attr}.outPath"], capture_output=True,
                            text=True, env=_env(nix_config), stdin=subprocess.DEVNULL)
    if result.returncode != 0 or not result.stdout.startswith("/"):
        lines = result.stderr.strip().splitlines()
        return None, lines[-1] if lines else f"nix eval exited {result.returncode}"
    return result.stdout.strip(), ""


def copy_closure(data: Any, path: str, nix_config: str) -> str:
    """`nix copy` the closure to the host over SSH (host key checked); "" or the error."""
    ssh = ssh_argv(data)
    options = ssh[1:-1]  # everything between "ssh" and user@host
    env = {**_env(nix_config), "NIX_SSHOPTS": shlex.join(options)}
    result = subprocess.run([*NIX, "copy", "--to", f"ssh://{ssh[-1]}", path],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        return lines[-1] if lines else f"nix copy exited {result.returncode}"
    return ""

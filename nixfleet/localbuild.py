"""deploy.buildOn = "local": build a host's system on the deployer and copy its closure to
the host with `nix copy` (the host then only activates it), as colmena and deploy-rs can.
The default, "target", builds on the host itself as the original's --build-host did.
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


def build(files: Mapping[str, bytes], flake_ref: str, host_name: str, nix_config: str,
          cache: Path) -> tuple[str | None, str]:
    """Build the host's toplevel here: (store path, "") or (None, the error's last line).
    nix_config: the target's extra NIX_CONFIG lines (Target.nix_config())."""
    checkout = flake_checkout(files, cache)
    # flake_ref is how the host names its flake directory; here the checkout stands in.
    ref = "path:" + str(checkout) + flake_ref.partition("?")[1] + flake_ref.partition("?")[2]
    attr = f'{ref}#nixosConfigurations."{host_name}".config.system.build.toplevel'
    result = subprocess.run([*NIX, "build", attr, "--no-link", "--json"], capture_output=True,
                            text=True, env=_env(nix_config))
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        return None, lines[-1] if lines else f"nix build exited {result.returncode}"
    return json.loads(result.stdout)[0]["outputs"]["out"], ""


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

"""Operations that change a NixOS host: push its flake, rebuild it, roll it back.

Each runs as one remote command (nixfleet/remote/deploy.sh) under a per-host lock. The flake
files that changed travel inside that command (or, when large, in one upload before it), so
a deploy costs the host two SSH round trips: the flake fact and the command.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from importlib.resources import files
from typing import Literal

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation

from facts.deploy import FlakeDirectory
from nixfleet.flake import changed_paths, delta_tarball, flake_hash

INLINE_LIMIT = 48 * 1024
Action = Literal["push", "build", "dry-activate", "test", "boot", "switch"]
DEPLOY_SCRIPT = files("nixfleet.remote").joinpath("deploy.sh").read_text()


def _deploy_command(action: str, flake_dir: str, flake_ref: str, want: str, base: str,
                    tarball: str, deploy_id: str, owner: str, lock_ttl: int,
                    generation: int | None = None) -> StringCommand:
    args = [action, flake_dir, flake_ref, host.name, want, base, tarball, deploy_id, owner,
            str(lock_ttl), "" if generation is None else str(generation)]
    return StringCommand("bash", "-c", QuoteString(DEPLOY_SCRIPT), "nixfleet-deploy",
                         *(QuoteString(a) for a in args))


@operation(is_idempotent=False)
def rebuild(
    action: Action,
    flake_files: Mapping[str, bytes],
    flake_dir: str,
    flake_ref: str,
    deploy_id: str,
    owner: str,
    lock_ttl: int = 3600,
):
    """
    Send the flake (only the files that changed) and run ``nixos-rebuild ACTION`` semantics.

    + action: push (flake only), build, dry-activate, test, boot or switch
    + flake_files: relative path -> content of the flake directory
    + flake_dir: the host's flake directory, e.g. /etc/nixos
    + flake_ref: how Nix names it, e.g. path:/etc/nixos
    + deploy_id: this deploy's id (lock owner, upload name)
    + owner: who deploys (user@machine), shown to a second deploy that finds the lock
    + lock_ttl: seconds after which a lock is stale

    A second switch with nothing changed is a no-op on the host: no build, no new generation.
    The result is printed as ``NIXFLEET key=value`` lines that nixfleet.deploy summarises.

    **Example:**

    .. code:: python

        nixos.rebuild(name="nixos-rebuild switch", action="switch", flake_files=files,
                      flake_dir="/etc/nixos", flake_ref="path:/etc/nixos",
                      deploy_id=deploy_id, owner="root@laptop")
    """
    want = flake_hash(flake_files)
    remote = host.get_fact(FlakeDirectory, flake_dir=flake_dir)
    changed = changed_paths(flake_files, remote.files)
    tarball = "-"
    if changed or set(remote.files) != set(flake_files) or remote.flake_hash != want:
        delta = delta_tarball(flake_files, changed)
        if len(delta) <= INLINE_LIMIT:
            # Small deltas travel inside the command: one SSH round trip fewer.
            tarball = "base64:" + base64.b64encode(delta).decode()
        else:
            tarball = f"/tmp/nixfleet-{deploy_id}.tar"
            yield FileUploadCommand(io.BytesIO(delta), tarball)
    yield _deploy_command(action, flake_dir, flake_ref, want, remote.flake_hash, tarball,
                          deploy_id, owner, lock_ttl)


@operation(is_idempotent=False)
def rollback(deploy_id: str, owner: str, generation: int | None = None, lock_ttl: int = 3600):
    """
    Switch back to the generation before the current one, or to ``generation``.

    + generation: the system generation number to switch to (default: the previous one)
    """
    yield _deploy_command("rollback", "-", "-", "-", "-", "-", deploy_id, owner, lock_ttl,
                          generation)

"""Operations that change a NixOS host: push its flake, rebuild it, roll it back.

Each runs as one remote command (nixfleet/remote/deploy.sh) under a per-host lock. The flake
files that changed travel inside that command (or, when large, in one upload before it), so
a deploy costs the host two SSH round trips: the flake fact and the command.
"""

from __future__ import annotations

import base64
import io
import shlex
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Literal

from pyinfra import host
from pyinfra.api import (
    FileUploadCommand,
    FunctionCommand,
    Host,
    QuoteString,
    State,
    StringCommand,
    operation,
)
from pyinfra.api.operation import OperationMeta

from facts.deploy import FlakeDirectory
from nixfleet import localbuild, safety
from nixfleet.flake import changed_paths, delta_tarball, flake_hash
from nixfleet.inventory import project_root
from nixfleet.model import HealthCheck

INLINE_LIMIT = 48 * 1024
Action = Literal["push", "build", "dry-activate", "test", "boot", "switch"]
REMOTE = files("nixfleet.remote")
DEPLOY_SCRIPT = REMOTE.joinpath("health.sh").read_text() + REMOTE.joinpath("deploy.sh").read_text()


def deploy_command(**arguments: object) -> StringCommand:
    """deploy.sh with NAME=VALUE arguments (see its header), for this host."""
    pairs = {"hostname": host.name, **arguments}
    return StringCommand("bash", "-c", QuoteString(DEPLOY_SCRIPT), "nixfleet-deploy",
                         *(QuoteString(f"{k}={v}") for k, v in pairs.items() if v is not None))


def command_checks(checks: Sequence[HealthCheck]) -> str:
    """The health gate's command checks as deploy.sh takes them: NAME<TAB>TIMEOUT<TAB>COMMAND."""
    return "".join(f"{c.name}\t{c.timeout}\t{c.command}\n" for c in checks if c.command)


def health_command(checks: Sequence[HealthCheck], health_timeout: int) -> str:
    """The health gate alone, as a shell command line for a fresh SSH connection."""
    return shlex.join(["bash", "-c", DEPLOY_SCRIPT, "nixfleet-deploy", "action=health",
                       f"checks={command_checks(checks)}", f"health_timeout={health_timeout}"])


@operation(is_idempotent=False)
def rebuild(
    action: Action,
    flake_files: Mapping[str, bytes],
    flake_dir: str,
    flake_ref: str,
    deploy_id: str,
    owner: str,
    lock_ttl: int = 3600,
    rollback: bool = True,
    confirm_timeout: int = 0,
    health_timeout: int = 60,
    checks: Sequence[HealthCheck] = (),
    build_on: Literal["target", "local"] = "target",
    target: str = "fleet",
):
    """
    Send the flake (only the files that changed) and run ``nixos-rebuild ACTION`` semantics,
    with a health gate and rollback.

    + action: push (flake only), build, dry-activate, test, boot or switch
    + flake_files: relative path -> content of the flake directory
    + flake_dir: the host's flake directory, e.g. /etc/nixos
    + flake_ref: how Nix names it, e.g. path:/etc/nixos
    + deploy_id: this deploy's id (lock owner, upload name, watchdog unit)
    + owner: who deploys (user@machine), shown to a second deploy that finds the lock
    + lock_ttl: seconds after which a lock is stale
    + rollback: return to the previous system when activation or the health gate fails
    + confirm_timeout: seconds before an unconfirmed switch/test reverts by itself (0: no
      watchdog; confirm it with the ``confirm`` operation)
    + health_timeout: seconds the host-side health gate retries
    + checks: health checks; the command ones run in the host-side gate
    + build_on: target (the host builds, the default) or local (the deployer builds and copies
      the closure with nix copy; the host only activates)
    + target: fleet or lab (how the deployer's Nix is configured for a local build)

    A second switch with nothing changed is a no-op on the host: no build, no new generation.
    The result is printed as ``NIXFLEET key=value`` lines that nixfleet.deploy summarises.

    **Example:**

    .. code:: python

        nixos.rebuild(name="nixos-rebuild switch", action="switch", flake_files=files,
                      flake_dir="/etc/nixos", flake_ref="path:/etc/nixos",
                      deploy_id=deploy_id, owner="root@laptop", confirm_timeout=30)
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
    prebuilt = None
    if build_on == "local" and action != "push":
        prebuilt, error = localbuild.build(flake_files, flake_ref, host.name, target,
                                           project_root() / ".deploy-logs" / "flakes")
        if prebuilt is None:
            yield report_failure(f"local build failed: {error}")
            return
        yield FunctionCommand(_copy_closure, (prebuilt, target), {})
    yield deploy_command(
        action=action, flake_dir=flake_dir, flake_ref=flake_ref, want_hash=want, prebuilt=prebuilt,
        base_hash=remote.flake_hash, tarball=tarball, deploy_id=deploy_id, owner=owner,
        lock_ttl=lock_ttl, rollback=int(rollback), confirm_timeout=confirm_timeout,
        health_timeout=health_timeout, checks=command_checks(checks))


def report_failure(reason: str) -> StringCommand:
    """A command that fails with deploy.sh's result lines (for failures before it runs)."""
    lines = f"NIXFLEET result=failed\nNIXFLEET reason={reason}\n"
    return StringCommand("printf", "%s", QuoteString(lines), ";", "exit", "1")


def _copy_closure(state: State, host: Host, path: str, target: str) -> bool:
    error = localbuild.copy_closure(host.data, path, target)
    if error:
        safety.OUTCOMES[host.name] = safety.Outcome("failed", f"nix copy failed: {error}")
    return not error


@operation(is_idempotent=False)
def confirm(rebuilt: OperationMeta, deploy_id: str, confirm_timeout: int, health_timeout: int,
            checks: Sequence[HealthCheck] = ()):
    """
    Confirm a switch from the deployer: run the HTTP checks, then stop the host's rollback
    watchdog over a fresh SSH connection. A failed HTTP check rolls the host back now; a host
    that cannot be reached rolls back by itself when its watchdog fires.

    + rebuilt: the ``rebuild`` operation of this host
    """

    def run(state: State, host: Host) -> bool:
        return safety.confirm(host.name, host.data, safety.result_values(rebuilt.stdout_lines),
                              list(checks), confirm_timeout,
                              health_command(checks, health_timeout), deploy_id)

    yield FunctionCommand(run, (), {})


@operation(is_idempotent=False)
def reboot(rebuilt: OperationMeta, deploy_id: str, owner: str, health_timeout: int,
           checks: Sequence[HealthCheck] = (), only_if_required: bool = False,
           rollback: bool = True):
    """
    Reboot into the new generation, wait for a new boot id, check that the new generation
    runs and passes the health gate; otherwise switch back to the previous generation.

    + only_if_required: reboot only when the kernel, initrd or kernel modules changed
    """

    def run(state: State, host: Host) -> bool:
        values = safety.result_values(rebuilt.stdout_lines)
        back = None
        if rollback and values.get("generation_before"):
            back = shlex.join([
                "bash", "-c", DEPLOY_SCRIPT, "nixfleet-deploy", "action=rollback",
                f"hostname={host.name}", f"deploy_id={deploy_id}-back", f"owner={owner}",
                f"target_generation={values['generation_before']}"])
        return safety.reboot(host.name, host.data, values, health_command(checks, health_timeout),
                             back, only_if_required)

    yield FunctionCommand(run, (), {})


@operation(is_idempotent=False)
def rollback(deploy_id: str, owner: str, generation: int | None = None, lock_ttl: int = 3600):
    """
    Switch back to the generation before the current one, or to ``generation``.

    + generation: the system generation number to switch to (default: the previous one)
    """
    yield deploy_command(action="rollback", deploy_id=deploy_id, owner=owner, lock_ttl=lock_ttl,
                         target_generation=generation)

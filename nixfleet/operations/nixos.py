"""Operations that change a NixOS host: rebuild it (push its flake, build, activate), confirm a
switch from a fresh connection, reboot into the new generation, roll it back.

The rebuild runs as one remote command (nixfleet/remote/deploy.sh, its protocol in
nixfleet/remote/protocol.py) under the host's deploy lock. The flake files that changed travel
inside that command (or, when large, in one upload before it), so a deploy costs the host two
SSH round trips: the HostDeployState fact (read once, when the deploy is planned) and the
command. A host whose flake and system are already the deployed ones is a no-op decided from
that fact: no command at all.
"""

from __future__ import annotations

import base64
import io
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from paramiko import SSHException
from pyinfra import host, logger
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
from pyinfra.connectors.util import CommandOutput, OutputLine

from nixfleet import localbuild, safety
from nixfleet.builder import FleetBuild
from nixfleet.facts.deploy import DeployState, HostDeployState
from nixfleet.flake import changed_paths, delta_tarball, flake_hash
from nixfleet.inventory import project_root
from nixfleet.model import HealthCheck
from nixfleet.outcome import Action, Result, StepOutcome
from nixfleet.remote import protocol

INLINE_LIMIT = 48 * 1024
Record = Callable[[str, StepOutcome], None]  # (host name, what a step made of it)
Turn = Callable[[Host], str | None]  # waits for the host's wave; why it is not attempted


@dataclass(frozen=True)
class RebuildPlan:
    """What a rebuild has to do on a host, from its HostDeployState fact."""

    want_hash: str
    changed: list[str]  # files to send
    send: bool  # the flake directory differs (changed, extra or stray entries)
    noop: str | None  # why nothing is to be done, or None

    def preview(self, action: Action) -> str:
        flake = f"send {len(self.changed)} changed flake files, " if self.send else ""
        steps = {Action.PUSH: "write the flake", Action.BUILD: "build",
                 Action.DRY_ACTIVATE: "build, dry-activate", Action.TEST: "build, test",
                 Action.BOOT: "build, set as boot default", Action.SWITCH: "build, switch",
                 Action.ROLLBACK: "switch to an earlier generation"}[action]
        return f"would {flake}{steps}"


def plan_rebuild(action: Action, flake_files: Mapping[str, bytes],
                 state: DeployState) -> RebuildPlan:
    want = flake_hash(flake_files)
    changed = changed_paths(flake_files, state.files)
    send = bool(changed) or set(state.files) != set(flake_files) or bool(state.strays)
    noop = None
    if not send:
        if action is Action.PUSH:
            noop = "flake already there"
        elif state.last_hash == want == state.record_hash and action.satisfied_by(
                state.last_toplevel, state.current_system, state.profile_system):
            noop = action.already
    return RebuildPlan(want, changed, send, noop)


class _NotDeployed(logging.Filter):
    """Leaves out pyinfra's status line of the operation ("Success", "No changes") for a host
    this operation did not deploy: its deploy step found another deploy's lock (exit
    EXIT_LOCKED, which pyinfra takes as success so that it prints no errors), or its wave never
    came. The deploy says why in one line of its own (DeployRun.fail_locked_out, the summary)."""

    STATUS = re.compile(r"(Success|No changes)( on retry \d+)?")
    ANSI = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self) -> None:
        super().__init__()
        self.prefixes: set[str] = set()  # pyinfra's "[host] " of each such host

    def add(self, host: Host) -> None:
        if self not in logger.filters:
            logger.addFilter(self)
        self.prefixes.add(host.print_prefix)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for prefix in self.prefixes:
            if message.startswith(prefix) and self.STATUS.fullmatch(
                    self.ANSI.sub("", message[len(prefix):])):
                self.prefixes.discard(prefix)
                return False
        return True


_NOT_DEPLOYED = _NotDeployed()


class _KeepsOutput(StringCommand):
    """A StringCommand that keeps what it printed, for the step after it in the same
    operation."""

    output: CommandOutput | None = None

    def execute(self, state: State, host: Host, connector_arguments: Any) -> Any:
        status, self.output = super().execute(state, host, connector_arguments)
        return status, self.output


class _DeployStep(_KeepsOutput):
    """deploy.sh's command. When it ends without a result (the connection dropped mid-switch,
    or the step on the host was killed), the result comes from the host's journal of this
    deploy over a fresh connection (safety.recover), waiting up to `wait` seconds for a step
    that still runs."""

    def __init__(self, arguments: Mapping[str, object], wait: float,
                 fleet_build: FleetBuild | None = None, fallback: bool = False,
                 record: Record | None = None) -> None:
        super().__init__(*(QuoteString(a) for a in protocol.argv(arguments)))
        self.arguments = dict(arguments)
        self.deploy_id = str(arguments["deploy_id"])
        self.wait = wait
        self.fleet_build, self.fallback, self.record = fleet_build, fallback, record

    def _built_elsewhere(self, host: Host) -> CommandOutput | None:
        """The system its builder built (deploy.buildOn: HOST), waiting for that build, in
        this step's arguments; or the failure's protocol lines when there is none and the host
        does not build for itself instead (deploy.buildFallback)."""
        assert self.fleet_build is not None
        built = self.fleet_build.result(host.name)
        if built.path is not None:
            self.arguments.update(prebuilt=built.path, substituter=built.substituter,
                                  built_on=built.builder)
            self.bits = tuple(QuoteString(a) for a in protocol.argv(self.arguments))
            return None
        if self.fallback:
            if self.record is not None:
                self.record(host.name, StepOutcome(
                    f"{built.reason}; built on the host instead (deploy.buildFallback)", None))
            return None
        return CommandOutput([OutputLine("stdout", line)
                              for line in protocol.result_lines(Result.FAILED, built.reason)])

    def execute(self, state: State, host: Host, connector_arguments: Any) -> Any:
        if self.fleet_build is not None:
            failed = self._built_elsewhere(host)
            if failed is not None:  # nothing runs on the host
                self.output = failed
                return False, failed
        try:
            status, output = super().execute(state, host, connector_arguments)
        except (OSError, SSHException, TimeoutError, EOFError):
            status, output = False, CommandOutput([])
        result = protocol.values(output.stdout_lines).get("result")
        if result == Result.LOCKED:
            _NOT_DEPLOYED.add(host)
        if result is not None:
            return status, output
        recovered = safety.recover(host, self.deploy_id, self.wait)
        self.output = CommandOutput([*output.combined_lines,
                                     *(OutputLine("stdout", line) for line in recovered)])
        return Result(protocol.values(recovered)["result"]).ok, self.output


def _command(arguments: Mapping[str, object], wait: float = 30) -> _DeployStep:
    return _DeployStep(arguments, wait)


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
    build_on: str = "target",
    fleet_build: FleetBuild | None = None,
    build_fallback: bool = False,
    nix_config: str = "",
    record: Record | None = None,
    known: DeployState | None = None,
    strict_units: bool = False,
    turn: Turn | None = None,
):
    """
    Send the flake (only the files that changed) and run ``nixos-rebuild ACTION`` semantics,
    with a health gate and rollback.

    + action: an Action: push (flake only), build, dry-activate, test, boot or switch
    + flake_files: relative path -> content of the flake directory
    + flake_dir: the host's flake directory, e.g. /etc/nixos
    + flake_ref: how Nix names it, e.g. path:/etc/nixos
    + deploy_id: this deploy's id (lock holder, upload name, watchdog unit)
    + owner: who deploys (user@machine), shown to a second deploy that finds the lock
    + lock_ttl: seconds a build may hold the host's lock
    + rollback: return to the previous system when activation or the health gate fails
    + confirm_timeout: seconds before an unconfirmed switch/test reverts by itself (0: no
      watchdog); the operation confirms it over a fresh SSH connection once the host is done
      (with record: it receives the outcome)
    + health_timeout: seconds the host-side health gate retries
    + checks: health checks; the command ones run in the host-side gate
    + build_on: target (the host builds, the default), local (the deployer builds and copies
      the closure with nix copy; the host only activates) or a builder host's name
    + fleet_build: with a builder: its build of this deploy's targets (nixfleet.builder), whose
      result the host fetches from the builder's cache under its lock
    + build_fallback: when the builder fails, the host builds for itself instead of failing
    + nix_config: extra NIX_CONFIG lines for the deployer's own Nix (a local build)
    + record: called with a failure found on the deployer (a local build or copy)
    + known: the host's HostDeployState fact when the caller has just read it (one round trip
      fewer; deploy.sh checks it again under the lock, so a stale one changes nothing)
    + strict_units: any failed unit after activation fails it (default: only units that were
      not failed before; those that were are warnings)
    + turn: in a rollout, waits for this host's wave before anything runs here; returns why
      the host is not attempted (the rollout stopped), or None to go on

    A host whose flake and system already are the deployed ones is a no-op (from facts): no
    command runs. The result is printed as protocol lines (nixfleet/remote/protocol.py).

    **Example:**

    .. code:: python

        nixos.rebuild(name="nixos-rebuild switch", action=Action.SWITCH, flake_files=files,
                      flake_dir="/etc/nixos", flake_ref="path:/etc/nixos",
                      deploy_id=deploy_id, owner="root@laptop", confirm_timeout=30)
    """
    if turn is not None:
        not_attempted: list[str] = []
        yield FunctionCommand(_wait_for_turn, (turn, record, not_attempted), {})
        if not_attempted:
            host.noop(not_attempted[0])
            return
    state = known or host.get_fact(HostDeployState, flake_dir=flake_dir)
    plan = plan_rebuild(action, flake_files, state)
    if plan.noop:
        host.noop(plan.noop)
        return
    tarball = "-"
    if plan.send:
        delta = delta_tarball(flake_files, plan.changed)
        if len(delta) <= INLINE_LIMIT:
            # Small deltas travel inside the command: one SSH round trip fewer.
            tarball = "base64:" + base64.b64encode(delta).decode()
        else:
            tarball = f"/tmp/nixfleet-{deploy_id}.tar"
            yield FileUploadCommand(io.BytesIO(delta), tarball)
    prebuilt = None
    if build_on == "local" and action.builds:
        prebuilt, error = localbuild.build(flake_files, flake_ref, host.name, nix_config,
                                           project_root() / ".deploy-logs" / "flakes")
        if prebuilt is None:
            yield failure_command(f"local build failed: {error}")
            return
        yield FunctionCommand(_copy_closure, (prebuilt, nix_config, record), {})
    deploy = _DeployStep({
        "hostname": host.name, **protocol.action_flags(action), "flake_dir": flake_dir,
        "flake_ref": flake_ref, "want_hash": plan.want_hash, "prebuilt": prebuilt,
        "tarball": tarball, "deploy_id": deploy_id, "owner": owner, "lock_ttl": lock_ttl,
        "rollback": int(rollback), "watchdog": confirm_timeout if action.live else 0,
        "health_timeout": health_timeout, "checks": protocol.command_checks(checks),
        "strict_units": int(strict_units)},
        # A step cut off from the deployer finishes its activation and gate (or its watchdog
        # reverts it): wait for that, then read its result.
        wait=confirm_timeout + health_timeout + 30,
        fleet_build=fleet_build if action.builds else None, fallback=build_fallback,
        record=record)
    yield deploy
    if confirm_timeout and action.live and rollback and record is not None:
        # The confirmation belongs to this operation, not one after it: pyinfra waits for
        # every host between operations, so the slowest host's build would run down this
        # host's watchdog.
        output = deploy.output.stdout_lines if deploy.output else []
        values = protocol.values(output)
        health = protocol.shell_command(protocol.health_arguments(
            checks, health_timeout, protocol.failing_before(output), strict_units))
        yield _recorded(record, lambda host: safety.confirm(
            host, values, list(checks), confirm_timeout, health, deploy_id))


def _wait_for_turn(state: State, host: Host, turn: Turn, record: Record | None,
                   not_attempted: list[str]) -> bool:
    why = turn(host)
    if why is not None:
        not_attempted.append(why)
        _NOT_DEPLOYED.add(host)
        if record is not None:
            record(host.name, StepOutcome(why, Result.NOT_ATTEMPTED))
    return True


def failure_command(reason: str) -> StringCommand:
    """A command that fails with the protocol's result lines (for failures before deploy.sh)."""
    lines = "".join(f"{line}\n" for line in protocol.result_lines(Result.FAILED, reason))
    return StringCommand("printf", "%s", QuoteString(lines), ";", "exit", "1")


def _copy_closure(state: State, host: Host, path: str, nix_config: str,
                  record: Record | None) -> bool:
    error = localbuild.copy_closure(host.data, path, nix_config)
    if error and record:
        record(host.name, StepOutcome(f"nix copy failed: {error}", Result.FAILED))
    return not error


def _recorded(record: Record, step: Callable[[Host], StepOutcome | None]) -> FunctionCommand:
    """A deployer-side step whose outcome goes to `record`; it fails the host when the step
    changed the host's result (rolled back, failed)."""

    def run(state: State, host: Host) -> bool:
        outcome = step(host)
        if outcome is not None:
            record(host.name, outcome)
        return outcome is None or outcome.result is None

    return FunctionCommand(run, (), {})


@operation(is_idempotent=False)
def reboot(rebuilt: OperationMeta | None, deploy_id: str, owner: str, health_timeout: int,
           record: Record, checks: Sequence[HealthCheck] = (), only_if_required: bool = False,
           rollback: bool = True, strict_units: bool = False):
    """
    Reboot into the new generation, wait for a new boot id, check that the new generation
    runs and passes the health gate; otherwise switch back to the previous generation.

    + rebuilt: the ``rebuild`` operation of this host (None: it had nothing to do)
    + only_if_required: reboot only when the kernel, initrd or kernel modules changed
    + record: called with what came of it
    + strict_units: any failed unit fails the gate (default: not those failed before the deploy)
    """

    def step(host: Host) -> StepOutcome | None:
        output = rebuilt.stdout_lines if rebuilt else []
        values = protocol.values(output) if rebuilt else {"result": "unchanged"}
        health = protocol.shell_command(protocol.health_arguments(
            checks, health_timeout, protocol.failing_before(output), strict_units))
        back = None
        if rollback and values.get("generation_before"):
            back = protocol.shell_command({
                "mode": "rollback", "hostname": host.name, "deploy_id": f"{deploy_id}-back",
                "owner": owner, "target_generation": values["generation_before"]})
        return safety.reboot(host, values, health, back, only_if_required)

    yield _recorded(record, step)


@operation(is_idempotent=False)
def rollback(deploy_id: str, owner: str, generation: int | None = None):
    """
    Switch back to the generation before the current one, or to ``generation``.

    + generation: the system generation number to switch to (default: the previous one)
    """
    yield _command({"hostname": host.name, **protocol.action_flags(Action.ROLLBACK),
                    "deploy_id": deploy_id, "owner": owner, "target_generation": generation})


@operation(is_idempotent=False)
def refuse(reason: str):
    """
    Fail this host without running anything on it (a deploy's pre-flight found it cannot
    proceed: nixfleet.preflight).

    + reason: why, one line (the summary shows it)
    """

    def fail(state: State, host: Host) -> bool:
        return False

    yield FunctionCommand(fail, (), {})

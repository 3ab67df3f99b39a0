"""What deploy files call: one rebuild per host, and a summary when pyinfra is done.

    # deploys/switch.py
    from nixfleet.deploy import deploy
    deploy("switch")

The summary (a table, and summary.json under .deploy-logs/<deploy id>/) lists every selected
host: generation before -> after, changed or not, closure difference, duration, result and
reason. Hosts that could not be reached are listed too.
"""

from __future__ import annotations

import atexit
import getpass
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from pyinfra import host, inventory, state
from pyinfra.api.operation import OperationMeta

from nixfleet.files import write_atomic
from nixfleet.flake import flake_ref, fleet_flake_files, lab_flake_files
from nixfleet.inventory import current_target, project_root
from nixfleet.model import MODEL_KEYS, HealthCheck, Host
from nixfleet.safety import OUTCOMES, result_lines

if TYPE_CHECKING:
    from operations.nixos import Action

DEPLOY_ID = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
_operations: dict[str, tuple[str, OperationMeta]] = {}


@dataclass
class HostResult:
    host: str
    action: str
    result: str  # changed | unchanged | built | failed | rolled-back | locked | unreachable
    reason: str = ""
    generation_before: str = ""
    generation_after: str = ""
    toplevel: str = ""
    flake: str = ""
    duration: str = ""
    closure_before: str = ""
    closure_after: str = ""
    diff: list[str] = field(default_factory=list)
    would: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds: lock, flake, build, ...

    @property
    def closure_delta(self) -> str:
        if not (self.closure_before and self.closure_after):
            return ""
        delta = int(self.closure_after) - int(self.closure_before)
        return f"{delta / 2**20:+.1f} MiB" if abs(delta) >= 2**20 else f"{delta / 2**10:+.1f} KiB"


def parse_result(name: str, action: str, lines: list[str]) -> HostResult:
    """Read deploy.sh's `NIXFLEET key=value` lines."""
    result = HostResult(host=name, action=action, result="failed",
                        reason="no result from the host")
    for key, value in result_lines(lines):
        if key in ("diff", "would"):
            getattr(result, key).append(value)
        elif key.startswith("phase_"):
            result.phases[key[len("phase_"):]] = float(value)
        elif key == "system_before" or key == "system_after":
            continue
        elif hasattr(result, key):
            setattr(result, key, value)
    return result


@cache
def _fleet_hosts() -> tuple[Host, ...]:
    """Every host of the inventory pyinfra loaded, as the validated model."""
    return tuple(
        Host.model_validate({"name": h.name, **{k: v for k, v in h.data.dict().items()
                                                if k in MODEL_KEYS}})
        for h in inventory
    )


@cache
def _flake_files(target: str) -> dict[str, bytes]:
    root = project_root()
    if target == "lab":
        return lab_flake_files(_fleet_hosts(), root)
    return fleet_flake_files(root)


def _owner() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _flag(value: object) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def deploy(action: Action) -> None:
    """Queue this host's rebuild (called by deploy files, once per host), and what keeps it
    safe: the confirmation of a switch or test, and a reboot when asked for.

    `--data no_rollback=true` turns rollback off; `--data reboot=true` builds the new
    generation as the boot default and reboots into it (`deploy.reboot: auto` in data reboots
    after a switch only when the kernel, initrd or modules changed).
    """
    from operations import nixos

    if not _operations:
        atexit.register(print_summary)
    target = current_target()
    settings = host.data.deploy
    checks = [HealthCheck.model_validate(c) for c in settings["checks"]]
    rollback = settings["rollback"] and not _flag(host.data.get("no_rollback"))
    reboot_now = _flag(host.data.get("reboot"))
    if reboot_now and action == "switch":
        action = "boot"  # then the reboot activates it
    flake_dir = host.data.system["paths"]["flakeDir"]
    safety_args = {"deploy_id": DEPLOY_ID, "health_timeout": settings["healthTimeout"],
                   "checks": checks}
    rebuilt = nixos.rebuild(
        name=f"nixos-rebuild {action}",
        action=action,
        flake_files=_flake_files(target),
        flake_dir=flake_dir,
        flake_ref=flake_ref(target, flake_dir),
        owner=_owner(),
        lock_ttl=settings["lockTtl"],
        rollback=rollback,
        confirm_timeout=settings["confirmTimeout"] if rollback else 0,
        build_on=settings["buildOn"],
        target=target,
        **safety_args,
    )
    _operations[host.name] = (action, rebuilt)
    if rollback and action in ("switch", "test"):
        nixos.confirm(name="confirm from a fresh SSH connection", rebuilt=rebuilt,
                      confirm_timeout=settings["confirmTimeout"], **safety_args)
    auto = settings["reboot"] == "auto" and action == "switch"
    if reboot_now or auto:
        nixos.reboot(name="reboot into the new generation", rebuilt=rebuilt, owner=_owner(),
                     only_if_required=auto, rollback=rollback, **safety_args)


def rollback(generation: int | None = None) -> None:
    """Queue this host's rollback to the previous (or the given) generation."""
    from operations import nixos

    if not _operations:
        atexit.register(print_summary)
    meta = nixos.rollback(name="nixos-rebuild switch --rollback", deploy_id=DEPLOY_ID,
                          owner=_owner(), generation=generation,
                          lock_ttl=host.data.deploy["lockTtl"])
    _operations[host.name] = ("rollback", meta)


def collect() -> list[HostResult]:
    results = []
    for name, (action, meta) in _operations.items():
        if meta.is_complete():
            result = parse_result(name, action, meta.stdout_lines + meta.stderr_lines)
            outcome = OUTCOMES.get(name)
            if outcome and outcome.result in ("rolled-back", "failed"):
                result.result, result.reason = outcome.result, outcome.reason
                result.generation_after = outcome.generation_after or result.generation_after
            elif outcome:
                result.reason = f"{result.reason}; {outcome.reason}"
            results.append(result)
        else:
            results.append(HostResult(name, action, "failed",
                                      "not run (the host failed earlier; see above)"))
    reached = set(_operations)
    for pyinfra_host in state.failed_hosts:
        if pyinfra_host.name not in reached:
            results.append(HostResult(pyinfra_host.name, "-", "unreachable",
                                      "could not connect (see above)"))
    return results


def print_summary() -> None:
    results = collect()
    if not results:
        return
    log_dir = project_root() / ".deploy-logs" / DEPLOY_ID
    summary: list[dict[str, Any]] = [{**asdict(r), "closure_delta": r.closure_delta}
                                     for r in results]
    write_atomic(log_dir / "summary.json", json.dumps(summary, indent=2) + "\n")

    from rich.console import Console
    from rich.table import Table

    table = Table("host", "action", "generation", "result", "closure", "time", "reason",
                  title=f"nixfleet deploy {DEPLOY_ID}")
    colours = {"changed": "green", "unchanged": "cyan", "built": "green", "failed": "red",
               "locked": "red", "unreachable": "red", "rolled-back": "red"}
    for r in results:
        generation = f"{r.generation_before or '-'} -> {r.generation_after or '-'}"
        colour = colours.get(r.result, "white")
        table.add_row(r.host, r.action, generation, f"[{colour}]{r.result}[/{colour}]",
                      r.closure_delta or "-", f"{r.duration}s" if r.duration else "-", r.reason)
    # Without a terminal rich assumes 80 columns; reasons are long.
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    for r in results:
        for line in r.diff:
            console.print(f"  {r.host}: {line}", highlight=False)
        for line in r.would:
            console.print(f"  {r.host}: {line}", highlight=False)
    print(f"summary: {log_dir / 'summary.json'}", flush=True)  # plain: never wrapped

"""The deploy step's protocol, in one place: the command line that runs deploy.sh (with
health.sh) on a host, and the `NIXFLEET key=value` lines it prints.

Keys (one line each unless marked repeated):
  result              a Result: changed, unchanged, built, failed, rolled-back,
                      rollback-failed, locked
  reason              one line for the summary
  generation_before   the system profile's generation number before, and after
  generation_after
  toplevel            the store path built (or the one built by the deployer)
  built_on            target | deployer | the builder host's name (deploy.buildOn)
  fetched_bytes       bytes of the system's closure fetched from the builder's cache (NAR size)
  flake               changed | unchanged: whether the flake directory was rewritten
  drift (repeated)    "edited PATH", "deleted PATH", "added PATH": how the flake directory
                      differed from what nixfleet last wrote there; first "record damaged:
                      ..." when that record could not be read (then from what is wanted)
  backup              where the host kept the directory it replaced (when edited or added
                      files were in it)
  backup_removed (repeated)  an older backup removed (the newest 3 are kept)
  closure_before      closure sizes in bytes
  closure_after
  diff (repeated)     a line of `nix store diff-closures`
  would (repeated)    a line of `switch-to-configuration dry-activate`
  watchdog            the transient unit that reverts an unconfirmed switch or test
  regate              passed | failed: REASON, the gate on the previous system after a rollback
  failing_before (repeated)  "unit NAME", "service NAME", "check NAME": failing before the
                      activation, so they do not judge it (a later health gate takes them)
  warning (repeated)  one line: something that did not judge the deploy (failing before and after)
  gate                passed | failed (mode=health)
  phase_NAME          seconds spent in NAME: lock, flake, build, activate, gate
  started             "EPOCH USER@MACHINE": when the deploy took the lock, and whose it is
                      (for `nixfleet status`, which reads it from the host's journal)
  duration            seconds on the host
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib.resources import files

from nixfleet.model import HealthCheck
from nixfleet.outcome import Action, HostOutcome, Result

PREFIX = "NIXFLEET "
_REMOTE = files("nixfleet.remote")
SCRIPT = "".join(_REMOTE.joinpath(name).read_text()
                 for name in ("nix.sh", "health.sh", "deploy.sh"))
EXIT_LOCKED = 75


def action_flags(action: Action) -> dict[str, object]:
    """deploy.sh's flags for an action: what it builds, sets and activates."""
    if action is Action.ROLLBACK:
        return {"mode": "rollback"}
    return {"build": int(action.builds), "set_profile": int(action.sets_profile),
            "activate": action.activation, "live": int(action.live),
            "keep_root": int(action is Action.BUILD)}


def command_checks(checks: Iterable[HealthCheck]) -> str:
    """The health gate's command checks as deploy.sh takes them: NAME<TAB>TIMEOUT<TAB>COMMAND."""
    return "".join(f"{c.name}\t{c.timeout}\t{c.command}\n" for c in checks if c.command)


def argv(arguments: Mapping[str, object]) -> list[str]:
    """bash -c SCRIPT nixfleet-deploy NAME=VALUE ... (None values are left out)."""
    return ["bash", "-c", SCRIPT, "nixfleet-deploy",
            *(f"{k}={v}" for k, v in arguments.items() if v is not None)]


def shell_command(arguments: Mapping[str, object]) -> str:
    """The same, as one shell command line (for nixfleet's own SSH connections)."""
    return shlex.join(argv(arguments))


def health_arguments(checks: Iterable[HealthCheck], health_timeout: int,
                     failing_before: Iterable[str] = (), strict_units: bool = False,
                     ) -> dict[str, object]:
    """The health gate alone; `failing_before` ("KIND NAME", from the deploy's baseline) does
    not judge it."""
    return {"mode": "health", "checks": command_checks(checks), "health_timeout": health_timeout,
            "failing_before": "\n".join(failing_before) or None,
            "strict_units": int(strict_units)}


def result_lines(result: Result, reason: str) -> list[str]:
    """A result as deploy.sh prints it (for failures found before it runs)."""
    return [f"{PREFIX}result={result}", f"{PREFIX}reason={reason}"]


def lines(output: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(key, value) of each protocol line, in order; other output is ignored."""
    for line in output:
        if line.startswith(PREFIX):
            key, _, value = line[len(PREFIX):].partition("=")
            yield key, value


def values(output: Iterable[str]) -> dict[str, str]:
    """The protocol lines as a dict (the last value of a key wins)."""
    return dict(lines(output))


def _int(value: str) -> int | None:
    return int(value) if value.strip().isdigit() else None


def _float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


REPEATED = ("diff", "would", "drift")


def failing_before(output: Iterable[str]) -> list[str]:
    """What deploy.sh found failing before the activation ("KIND NAME"), for a later health
    gate (health_arguments)."""
    return [value for key, value in lines(output) if key == "failing_before"]
LISTS = {"backup_removed": "backups_removed"}  # repeated keys kept under another name
INTEGERS = ("generation_before", "generation_after", "closure_before", "closure_after",
            "fetched_bytes")


def parse(host: str, action: Action, output: Sequence[str]) -> HostOutcome:
    """The host's outcome from deploy.sh's lines (failed, if it printed no result)."""
    outcome = HostOutcome(host=host, action=action, result=Result.FAILED,
                          reason="no result from the host")
    for key, value in lines(output):
        if key in REPEATED:
            getattr(outcome, key).append(value)
        elif key == "warning":
            outcome.warnings.append(value)
        elif key in LISTS:
            getattr(outcome, LISTS[key]).append(value)
        elif key.startswith("phase_"):
            seconds = _float(value)
            if seconds is not None:
                outcome.phases[key.removeprefix("phase_")] = seconds
        elif key in INTEGERS:
            setattr(outcome, key, _int(value))
        elif key == "result":
            outcome.result = Result(value)
        elif key == "duration":
            outcome.duration = _float(value)
        elif key == "reason":
            outcome.reason = value
        elif key in ("toplevel", "flake", "backup", "built_on"):
            setattr(outcome, key, value or None)
    return outcome

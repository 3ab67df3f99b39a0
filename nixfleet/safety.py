"""After a host is switched: confirm it from a fresh SSH connection, run the HTTP checks from
the deployer, and reboot it when asked. These run inside pyinfra (as FunctionCommands) on the
deployer, all hosts at once (pyinfra's gevent makes sockets and sleep cooperative).

The host-side half (watchdog, health gate, rollback) is nixfleet/remote/{deploy,health}.sh.
Each step returns what it made of the host (a StepOutcome) for the deploy run to collect.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pyinfra.api import Host

from nixfleet.facts.nix import SYSTEM_LINKS_COMMAND, parse_system_links
from nixfleet.facts.parsers.nix import SYSTEM_PROFILE, generation_number
from nixfleet.model import HealthCheck
from nixfleet.outcome import Result, StepOutcome
from nixfleet.remote import protocol
from nixfleet.ssh import Answer, fresh_ssh

REBOOT_TIMEOUT = 180


def _generation(text: str | None) -> int | None:
    """A generation number from deploy.sh's "N" or from readlink's "system-N-link"."""
    return int(text) if text and text.isdigit() else generation_number(text)


def wait_for(predicate: Callable[[], bool], seconds: float, period: float = 1.0) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(period)


def http_failure(check: HealthCheck, address: str) -> str | None:
    """Poll the check's URL every period until it answers expectStatus or timeout passes."""
    import httpx  # here, not at the top: most deploys have no HTTP check (and it costs 40 ms)

    url = (check.http or "").replace("{address}", address)
    last = "no attempt"

    def answers() -> bool:
        nonlocal last
        try:
            status = httpx.get(url, timeout=min(check.timeout, 10)).status_code
        except httpx.HTTPError as error:
            last = f"{type(error).__name__}: {error}"
            return False
        last = f"HTTP {status}"
        return status == check.expectStatus

    if wait_for(answers, check.timeout, check.period):
        return None
    return f"check {check.name}: {url} gave {last}, expected HTTP {check.expectStatus}"


def confirm(host: Host, values: dict[str, str], checks: list[HealthCheck],
            confirm_timeout: int, health_command: str, deploy_id: str) -> StepOutcome | None:
    """The deployer's side of the watchdog deploy.sh armed: HTTP checks, then a fresh SSH
    connection stops the watchdog. If the checks fail, roll back now; if no connection can be
    made in time, the host rolls back by itself and this reports it."""
    watchdog = values.get("watchdog")
    if not watchdog:
        return None
    started = time.monotonic()
    address = str(host.data.get("ssh_hostname"))
    failures = [f for c in checks if c.http and (f := http_failure(c, address))]
    if failures:
        revert = fresh_ssh(host, f"systemctl start {watchdog}.service && "
                                 f"systemctl stop {watchdog}.timer; {health_command}")
        regate = "the old generation passes the gate again" if revert and revert.ok \
            else "the old generation fails the gate too"
        return StepOutcome(f"health check failed: {failures[0]}; rolled back ({regate})",
                           Result.ROLLED_BACK, _generation(values.get("generation_before")))

    confirmed = False

    def stop_the_watchdog() -> bool:
        nonlocal confirmed
        result = fresh_ssh(host, f"systemctl is-active --quiet {watchdog}.timer && "
                                 f"systemctl stop {watchdog}.timer && echo confirmed", 15)
        confirmed = result is not None and "confirmed" in result.stdout
        # Reached, but the timer is gone: the watchdog already fired.
        return result is not None

    # Stop trying shortly before the watchdog fires, so the two never race.
    wait_for(stop_the_watchdog, max(1.0, confirm_timeout - 2 - (time.monotonic() - started)))
    if confirmed:
        return StepOutcome("confirmed over a fresh SSH connection")
    back: Answer | None = None

    def reverted() -> bool:
        nonlocal back
        # The watchdog's note is read once and removed: nothing is left behind.
        marker = f"/var/lib/nixfleet/rolled-back-{deploy_id}"
        back = fresh_ssh(host, f"cat {marker} 2>/dev/null && rm -f {marker}; "
                               f"systemctl is-active {watchdog}.service; "
                               f"readlink {SYSTEM_PROFILE}", 15)
        # Reached while the watchdog's revert still runs (its switch may bring sshd back before
        # the revert ends and leaves its note): ask again.
        return back is not None and "activating" not in back.stdout.splitlines()

    unconfirmed = f"no confirmation over a fresh SSH connection within {confirm_timeout}s"
    if not wait_for(reverted, confirm_timeout + 60) or back is None:
        return StepOutcome(f"{unconfirmed}; its watchdog should have rolled it back, but it "
                           "is still unreachable", Result.FAILED)
    words = back.stdout.split()
    generation = _generation(words[-1] if words else None)
    if "no confirmation" not in back.stdout:
        return StepOutcome(f"{unconfirmed}; reachable again, but its watchdog did not roll it "
                           "back", Result.FAILED, generation)
    return StepOutcome(f"{unconfirmed}: the host rolled back by itself to generation "
                       f"{generation}", Result.ROLLED_BACK, generation)


STATE_DIR = "/var/lib/nixfleet"  # deploy.sh's state_dir
HOLDER = "/run/nixfleet/holder"  # deploy.sh's run_dir/holder: "SINCE DEPLOY_ID OWNER"


def recover(host: Host, deploy_id: str, wait: float) -> list[str]:
    """The deploy step's result after its command ended without one (the connection dropped,
    say a switch restarted the network, or the step was killed): over fresh connections, the
    host's journal of this deploy (deploy.sh writes every protocol line there too), waiting up
    to `wait` seconds while the step still runs (its holder is still this deploy). Protocol
    lines: the journal's, with a result saying what happened when it has none."""
    command = (f"cat {STATE_DIR}/result-{deploy_id} 2>/dev/null;"
               f" read -r _ id _ < {HOLDER} 2>/dev/null; echo \"holder=$id\";"
               f" echo \"profile=$(readlink {SYSTEM_PROFILE})\"")
    deadline = time.monotonic() + wait
    answer: Answer | None = None
    while True:
        answer = fresh_ssh(host, command, 15)
        if answer is not None:
            lines = answer.stdout.splitlines()
            journal = [line for line in lines if line.startswith(protocol.PREFIX)]
            if "result" in protocol.values(journal):
                return journal
            if f"holder={deploy_id}" not in lines:
                profile = next((line[8:] for line in lines if line.startswith("profile=")), "")
                generation = generation_number(profile)
                return journal + _lines(
                    result=Result.FAILED, reason=_ended_without_result(host.name, journal),
                    generation_after="" if generation is None else str(generation))
        if time.monotonic() >= deadline:
            break
        time.sleep(1)
    why = ("its deploy step was still running" if answer is not None else
           "it did not answer again")
    return _lines(result=Result.UNREACHABLE, reason=(
        f"the connection to {host.name} was lost and {why} {wait:.0f}s later; "
        "a switch not confirmed returns to the system before by itself (its watchdog)"))


def _ended_without_result(name: str, journal: list[str]) -> str:
    phases = [key.removeprefix("phase_") for key, _ in protocol.lines(journal)
              if key.startswith("phase_")]
    if not journal:
        return (f"the deploy step on {name} ended before it took the deploy lock "
                "(the connection dropped or it was killed); nothing was changed")
    return (f"the deploy step on {name} was killed"
            + (f" after its {phases[-1]} step" if phases else ""))


def _lines(**values: str) -> list[str]:
    return [f"{protocol.PREFIX}{key}={value}" for key, value in values.items()]


def reboot_required(host: Host) -> bool:
    result = fresh_ssh(host, SYSTEM_LINKS_COMMAND)
    return result is not None and parse_system_links(result.stdout).reboot_required


def reboot(host: Host, values: dict[str, str], health_command: str,
           rollback_command: str | None, only_if_required: bool) -> StepOutcome | None:
    """Reboot, wait for a new boot id, check the running generation is the new one, and run the
    health gate; roll back (where the host boots) when it does not come back healthy."""
    if values.get("result") not in (Result.CHANGED, Result.UNCHANGED):
        return None
    if only_if_required and not reboot_required(host):
        return None
    before = fresh_ssh(host, "cat /proc/sys/kernel/random/boot_id")
    if before is None:
        return StepOutcome("unreachable before the reboot", Result.FAILED)
    fresh_ssh(host, "systemctl reboot", 15)

    booted: list[str] = []  # the new boot's id, running system and default system

    def new_boot() -> bool:
        # Only a whole answer counts: a session that the old system's shutdown cut off
        # answers nothing, which is not a new boot id.
        answer = fresh_ssh(host, "cat /proc/sys/kernel/random/boot_id; "
                                 "systemctl is-system-running --wait >/dev/null; "
                                 "readlink -f /run/current-system; "
                                 f"readlink -f {SYSTEM_PROFILE}", 60)
        fields = answer.stdout.split() if answer is not None and answer.ok else []
        if len(fields) != 3 or fields[:1] == before.stdout.split()[:1]:
            return False
        booted[:] = fields
        return True

    if not wait_for(new_boot, REBOOT_TIMEOUT, 2):
        return StepOutcome(f"did not come back within {REBOOT_TIMEOUT}s of the reboot",
                           Result.FAILED)
    _, running, default = booted
    problem = None if running == default else f"after the reboot it runs {running}, not {default}"
    if problem is None:
        gate = fresh_ssh(host, health_command, 600)
        if gate is None or not gate.ok:
            problem = protocol.values(gate.stdout.splitlines()).get(
                "reason", "health gate failed") if gate else "unreachable after the reboot"
    if problem is None:
        return StepOutcome("rebooted into the new generation, healthy")
    if rollback_command:
        reverted = fresh_ssh(host, rollback_command, 600)
        generation = protocol.values(reverted.stdout.splitlines()).get("generation_after") \
            if reverted else None
        return StepOutcome(f"{problem}; rolled back", Result.ROLLED_BACK, _generation(generation))
    return StepOutcome(problem, Result.FAILED)

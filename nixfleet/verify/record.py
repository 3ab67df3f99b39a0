"""Verification is remembered on the host: after a run, each host it checked records which
system was verified, when, and the result (nixfleet.facts.parsers.status.VERIFIED), so that
`nixfleet status` can say whether the running system was ever checked and a deploy that finds
it unchecked verifies it."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nixfleet.facts.parsers.status import STATE_DIR, VERIFIED
from nixfleet.ssh import root_command, ssh_argv
from nixfleet.verify.report import HostVerification, Verification

UNREACHABLE = "unreachable over SSH: "


def record_command(passed: bool) -> str:
    """What the host runs: the running system's store path, the time and the result, written
    atomically."""
    result = "passed" if passed else "failed"
    return (f"t=$(readlink -f /run/current-system) && [ -n \"$t\" ] && mkdir -p {STATE_DIR}"
            f" && printf '%s %s {result}\\n' \"$t\" \"$(date +%s)\" > {VERIFIED}.new"
            f" && mv -f {VERIFIED}.new {VERIFIED}")


def checked(host: HostVerification) -> bool:
    """Did the run reach the host at all (a host that did not answer was not verified)?"""
    return host.passed > 0 or any(not f.line.startswith(UNREACHABLE) for f in host.failures)


def _record(data: dict[str, Any], passed: bool) -> str | None:
    command = root_command(data, record_command(passed))
    try:
        result = subprocess.run([*ssh_argv(data), command], capture_output=True, text=True,
                                timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "no answer within 30 s"
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit {result.returncode}"
    return None


def record_verification(inventory: Path, verification: Verification) -> list[str]:
    """Record each checked host's result on it; one line per host where that failed."""
    if verification.errors:
        return []  # the suite did not run: nothing was verified
    hosts = {name: h for name, h in verification.hosts.items() if checked(h)}
    if not hosts:
        return []
    from nixfleet.inventory import load_inventory_file

    fleet = load_inventory_file(inventory)
    known = [name for name in hosts if name in fleet.host_data]
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(known)))) as pool:
        errors = list(pool.map(lambda name: _record(fleet.host_data[name], hosts[name].ok),
                               known))
    return [f"nixfleet: {name}: the verification could not be recorded on the host: {error}"
            for name, error in zip(known, errors, strict=True) if error]

"""The lab for end-to-end tests: brought up once per session (root, systemd-nspawn).

If the lab was already running (say, the demo), it is left running afterwards.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ("p620", "razer", "p510", "dex5550")


def nixfleet(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "nixfleet", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"nixfleet {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@functools.cache
def _ssh_argv(host: str) -> tuple[str, ...]:
    """The ssh command line of `nixfleet lab exec HOST`, from the same code (Lab.ssh_argv),
    made here once per host: a lab exec per command started Python and read the inventory
    each time: about 0.3 s more per command (0.6 s at load 6), over several hundred."""
    from nixfleet.lab.cli import lab_from_args

    lab = lab_from_args(argparse.Namespace(inventory=str(ROOT / "inventory.py")))
    return tuple(lab.ssh_argv(lab.host(host)))


def on(
    host: str, command: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run a shell command on a lab host over SSH (strict host key checking), as
    `nixfleet lab exec HOST -- COMMAND` does."""
    result = subprocess.run([*_ssh_argv(host), "--", command], cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{host}: {command} -> {result.returncode}\n{result.stdout}"
                             f"\n{result.stderr}")
    return result


def lab_status() -> dict[str, dict]:
    rows = json.loads(nixfleet("lab", "status", "--json").stdout)
    return {row["host"]: row for row in rows}


def write_on(host: str, path: str, content: str) -> None:
    on(host, f"mkdir -p {shlex.quote(os.path.dirname(path))} && "
             f"printf %s {shlex.quote(content)} > {shlex.quote(path)}")


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def configuration_with_its_checks(directory: Path) -> Path:
    """A copy of the configuration in `directory` that deploys to the lab and verifies
    (tests/fleet): inventory, group data, secrets, the lab flake and what it reads of nix/."""
    for name in ("inventory.py", "known_hosts"):
        shutil.copy(ROOT / name, directory / name)
    for name in ("group_data", "secrets", "nix/lab", "nix/lib", "tests/fleet"):
        shutil.copytree(ROOT / name, directory / name)
    for name in ("binary-cache.pub", "flake.nix"):  # the cache's key; the release (lab flake)
        shutil.copy(ROOT / "nix" / name, directory / "nix" / name)
    shutil.copy(ROOT / "tests" / "__init__.py", directory / "tests" / "__init__.py")
    return directory


def reset_after_the_module(*hosts: str):
    """A module's fixture that returns `hosts` to first boot once the module's tests are done,
    for tests that each start from a state they make (the plain configuration deployed) rather
    than a reset after each: `reset_dex5550 = reset_after_the_module("dex5550")`."""

    @pytest.fixture(scope="module")
    def reset() -> Iterator[None]:
        yield
        nixfleet("lab", "reset", *hosts)

    return reset


@pytest.fixture(scope="session")
def lab() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (the README's test command runs as root)")
    was_running = all(r["state"] == "running" for r in lab_status().values())
    nixfleet("lab", "up", "--extra", "0")
    yield
    if not was_running:
        nixfleet("lab", "down")

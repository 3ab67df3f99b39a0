"""Shared fixtures: the repository root and the real inventory's host entries; and the check
that no test leaves a process running."""

from __future__ import annotations

import contextlib
import copy
import os
import runpy
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def host_entries() -> list[tuple[str, dict[str, Any]]]:
    """A private copy of inventory.py's host entries, to break in tests."""
    return copy.deepcopy(runpy.run_path(str(ROOT / "inventory.py"))["_HOSTS"])


# --- every test ends every process it starts -------------------------------------------------

GRACE = 3.0  # seconds a test's processes get to end after it (a background `sleep 1` loop's turn)
_CGROUP_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))  # hybrid, or cgroup2
_cgroup: list[Path] = []  # this process' own cgroup and the one it came from, once made


def _own_cgroup() -> Path | None:
    """A cgroup (v2) of this test process' own, which everything it starts inherits and stays
    in when its parent ends and it goes to PID 1: what a test leaves behind can be found
    however far it wandered. None where it cannot be made (not root, no cgroup2)."""
    if not _cgroup:
        root = next((r for r in _CGROUP_ROOTS if (r / "cgroup.procs").exists()
                     and (r / "cgroup.controllers").exists()), None)
        if root is None or os.geteuid() != 0:
            return None
        for stale in root.glob("nixfleet-tests-*"):  # of test runs that ended without a word
            if not Path(f"/proc/{stale.name.rpartition('-')[2]}").exists():
                with contextlib.suppress(OSError):
                    stale.rmdir()
        group = root / f"nixfleet-tests-{os.getpid()}"
        was = Path(f"/proc/{os.getpid()}/cgroup").read_text().splitlines()
        home = root / next(line[3:] for line in was if line.startswith("0::")).lstrip("/")
        try:
            group.mkdir(exist_ok=True)
            (group / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            return None
        _cgroup[:] = [group, home]
    return _cgroup[0]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Back to the cgroup this process came from, and its own one removed."""
    if _cgroup:
        group, home = _cgroup
        with contextlib.suppress(OSError):
            (home / "cgroup.procs").write_text(str(os.getpid()))
            group.rmdir()


def _members(group: Path) -> set[int]:
    """The cgroup's running processes (a process that exited leaves it, zombie or not)."""
    return {int(p) for p in (group / "cgroup.procs").read_text().split()} - {os.getpid()}


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += [int(child), *_descendants(int(child))]
    return found


def _command(pid: int) -> str:
    with contextlib.suppress(OSError, IndexError):
        words = [w.decode(errors="replace") for w in
                 Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if w]
        if words[1:2] == ["-c"]:
            words[2] = "SCRIPT"  # bash -c SCRIPT NAME ARGS: the script is long
        text = " ".join(" ".join(words).split())
        return f"{pid} {text[:120]}{'...' if len(text) > 120 else ''}"
    return str(pid)


@pytest.fixture(autouse=True)
def no_process_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a process running GRACE seconds after it, and kill what it left
    (so that it cannot disturb the next). Processes are found by cgroup (_own_cgroup), not by
    parentage: an orphan goes to PID 1. Lab tests are exempt: the lab's hosts outlive a test
    on purpose (`nixfleet lab reset` in a test starts new ones); so is the verification suite
    (tests/fleet): its multiplexed SSH connection to a host outlives each check on purpose."""
    parents = Path(str(request.node.path)).parents
    lab = ROOT / "tests" / "lab" in parents or ROOT / "tests" / "fleet" in parents
    group = None if lab else _own_cgroup()
    if group is None:
        yield
        return
    before = _members(group)
    yield
    deadline = time.monotonic() + GRACE
    while (left := sorted(_members(group) - before)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        described = [_command(pid) for pid in left]
        for pid in left:
            for process in [*_descendants(pid), pid]:
                with contextlib.suppress(OSError):
                    os.kill(process, signal.SIGKILL)
        pytest.fail(f"the test left {len(left)} process(es) running:\n  "
                    + "\n  ".join(described), pytrace=False)

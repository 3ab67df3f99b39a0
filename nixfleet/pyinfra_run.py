"""Running the pyinfra CLI for nixfleet's own commands.

nixfleet runs pyinfra as a subprocess: the CLI is gevent-patched (hosts in parallel) and its
--json output is stable, while importing it here would monkey-patch this process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# pyinfra's per-host log lines: "    [razer]   SSH error (Error reading SSH protocol banner)"
_HOST_LINE = re.compile(r"^\s*\[(?P<host>[^\]\s]+)\]\s+(?P<message>.+)$")
_FAILURE = re.compile(r"error|failed|could not|refused|timed out|no route", re.I)


def pyinfra_command() -> str:
    beside = Path(sys.executable).parent / "pyinfra"
    return str(beside) if beside.exists() else "pyinfra"


def run_pyinfra(inventory: Path, args: Sequence[str], limits: Sequence[str] = (),
                timeout: float = 3600) -> subprocess.CompletedProcess:
    """`pyinfra -y INVENTORY ARGS --limit ...` in the inventory's directory."""
    argv = [pyinfra_command(), "-y", inventory.name, *args]
    for limit in limits:
        argv += ["--limit", limit]
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [package_parent,
                                                        os.environ.get("PYTHONPATH")]))}
    return subprocess.run(argv, cwd=inventory.parent, capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def host_failures(stderr: str) -> dict[str, str]:
    """The last failure pyinfra logged for each host."""
    failures: dict[str, str] = {}
    for line in stderr.splitlines():
        match = _HOST_LINE.match(line)
        if match and _FAILURE.search(match["message"]):
            failures[match["host"]] = match["message"].strip()
    return failures


def pyinfra_error(stderr: str) -> str | None:
    """pyinfra's own one-line error (bad inventory, bad --limit), if it printed one."""
    for line in stderr.splitlines():
        if line.startswith("--> pyinfra error"):
            return line.split(": ", 1)[-1]
    return None

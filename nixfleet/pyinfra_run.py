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


def pyinfra_environment() -> dict[str, str]:
    """This process's environment, with a PYTHONPATH that finds nixfleet and what it imports.

    pyinfra imports inventory.py and the deploy files, which import nixfleet and its
    dependencies (pydantic, rich, httpx, ...). Installed in one virtualenv, pyinfra's interpreter
    finds them by itself. Installed by Nix (nix/pkgs/nixfleet.nix), pyinfra is a package of its
    own and each dependency a store path that only this process's sys.path names: those are the
    site-packages directories outside this interpreter's prefix, and the child gets them too.
    """
    prefix = Path(sys.prefix).resolve()
    package_parent = str(Path(__file__).resolve().parent.parent)
    beyond_prefix = [entry for entry in sys.path
                     if Path(entry).name in ("site-packages", "dist-packages")
                     and not Path(entry).resolve().is_relative_to(prefix)]
    inherited = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    path = dict.fromkeys(filter(None, [package_parent, *beyond_prefix, *inherited]))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def run_pyinfra(inventory: Path, args: Sequence[str], limits: Sequence[str] = (),
                timeout: float = 3600) -> subprocess.CompletedProcess:
    """`pyinfra -y INVENTORY ARGS --limit ...` in the inventory's directory."""
    argv = [pyinfra_command(), "-y", inventory.name, *args]
    for limit in limits:
        argv += ["--limit", limit]
    return subprocess.run(argv, cwd=inventory.parent, capture_output=True, text=True,
                          timeout=timeout, env=pyinfra_environment(), stdin=subprocess.DEVNULL)


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

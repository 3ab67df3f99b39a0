"""One way nixfleet opens its own SSH connections (outside pyinfra's): OpenSSH with the
host's pyinfra connection data, host keys checked strictly, never a password prompt."""

from __future__ import annotations

import shlex
import subprocess
from typing import Any

CONNECT_TIMEOUT = 5


def ssh_argv(data: Any) -> list[str]:
    """OpenSSH with the host's pyinfra connection data: a new connection, host key checked."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
            "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
            "-p", str(data.get("ssh_port") or 22)]
    if data.get("ssh_key"):
        argv += ["-i", str(data.get("ssh_key"))]
    if data.get("ssh_known_hosts_file"):
        argv += ["-o", f"UserKnownHostsFile={data.get('ssh_known_hosts_file')}"]
    user = data.get("ssh_user") or "root"
    return [*argv, f"{user}@{data.get('ssh_hostname')}"]


def fresh_ssh(data: Any, command: str, timeout: float = 60) -> subprocess.CompletedProcess | None:
    """Run `command` over a new SSH connection; None when the host cannot be reached."""
    if (data.get("ssh_user") or "root") != "root":
        command = f"sudo -n sh -c {shlex.quote(command)}"
    try:
        result = subprocess.run([*ssh_argv(data), command], capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None
    return None if result.returncode == 255 else result

"""How nixfleet opens SSH connections of its own, with the host's pyinfra connection data,
host keys checked strictly, never a password prompt:
- ssh_argv: an OpenSSH command line, for other processes (verification, the lab, benchmarks);
- fresh_ssh: inside a pyinfra run, one command over a new connection made the way pyinfra made
  the deploy's own (its connector), e.g. to prove a switched host still takes new connections.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from pyinfra.api import Host

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


def root_command(data: Any, command: str) -> str:
    """`command` run as root on the host: through `sudo -n` (never a password prompt) where the
    host's SSH user is not root."""
    if (data.get("ssh_user") or "root") == "root":
        return command
    return f"sudo -n sh -c {shlex.quote(command)}"


class Answer(NamedTuple):
    ok: bool  # the command exited 0
    stdout: str
    stderr: str


def fresh_ssh(host: Host, command: str, timeout: float = 60) -> Answer | None:
    """Run `command` over a new SSH connection (new TCP connection, key exchange, login and
    session), made by a second instance of the host's pyinfra connector: the same key,
    known_hosts and ssh config as the deploy's own connection. In-process, so no ssh client
    starts (on a busy deployer that is most of a connection's cost). None when the host cannot
    be reached or the command does not end within `timeout` seconds."""
    from paramiko import SSHException
    from pyinfra.api import StringCommand
    from pyinfra.api.exceptions import ConnectError

    command = root_command(host.data, command)
    connector = host.connector_cls(host.state, host)
    try:
        connector.connect()
        ok, output = connector.run_shell_command(StringCommand(command), print_output=False,
                                                 print_input=False, _timeout=max(1, int(timeout)))
    except (ConnectError, SSHException, OSError, TimeoutError, EOFError):
        return None
    finally:
        client = getattr(connector, "client", None)
        if client is not None:
            client.close()
    return Answer(ok, output.stdout, output.stderr)

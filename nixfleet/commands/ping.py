"""`nixfleet ping [--limit PATTERN] [--json]`: can every host be reached, as a table of host,
address, SSH, latency and NixOS version (the original's `ping-hosts`).

Per host, in parallel: the TCP round trip to its SSH port (latency, what ping would show,
without needing ICMP), then one command over a fresh OpenSSH connection with the host key
checked strictly (nixfleet.ssh), which reports `nixos-version`. Exit 1 when any selected host
cannot be reached. Under NIXFLEET_TARGET=lab it pings the lab's hosts.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from nixfleet import console
from nixfleet.commands.options import add_limit_option, load_fleet
from nixfleet.ssh import CONNECT_TIMEOUT, ssh_argv

# The version, or why there is none (a host that is not NixOS still answers SSH).
COMMAND = "nixos-version 2>/dev/null || echo 'not NixOS: no nixos-version'"


@dataclass(frozen=True)
class Reachability:
    host: str
    address: str
    port: int
    ssh_ok: bool
    latency_ms: float | None  # TCP connect to the SSH port
    ssh_seconds: float | None  # the SSH command, connection included
    nixos_version: str | None
    error: str | None

    @property
    def ssh_text(self) -> str:
        if self.ssh_ok:
            return f"ok ({self.ssh_seconds:.2f}s)"
        return f"no: {self.error}"


def tcp_latency(address: str, port: int, timeout: float = CONNECT_TIMEOUT) -> float:
    """Milliseconds to open a TCP connection (OSError when it cannot be opened)."""
    start = time.perf_counter()
    with socket.create_connection((address, port), timeout=timeout):
        return (time.perf_counter() - start) * 1000


def ping_host(name: str, data: dict[str, Any], timeout: float = 30) -> Reachability:
    address = str(data.get("ssh_hostname") or name)
    port = int(data.get("ssh_port") or 22)

    def unreachable(error: str, latency: float | None = None) -> Reachability:
        return Reachability(name, address, port, False, latency, None, None, error)

    try:
        latency = tcp_latency(address, port)
    except socket.gaierror as error:
        return unreachable(f"{address}: {error.strerror}")
    except TimeoutError:
        return unreachable(f"port {port}: no answer within {CONNECT_TIMEOUT} s")
    except OSError as error:
        return unreachable(f"port {port}: {error.strerror or error}")
    start = time.perf_counter()
    try:
        result = subprocess.run([*ssh_argv(data), COMMAND], capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return unreachable(f"ssh: no answer within {timeout:g} s", latency)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return unreachable(f"ssh: {lines[-1] if lines else f'exit {result.returncode}'}",
                           latency)
    version = result.stdout.strip().splitlines()[-1:] or ["-"]
    return Reachability(name, address, port, True, latency, seconds, version[0], None)


def ping(hosts: dict[str, dict[str, Any]]) -> list[Reachability]:
    """Every host at once (its own thread: each waits on the network)."""
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(hosts)))) as pool:
        return list(pool.map(lambda item: ping_host(*item), hosts.items()))


def print_table(rows: list[Reachability]) -> None:
    from rich.text import Text

    table = console.table("host", "address", "SSH", "latency", "NixOS")
    for row in rows:
        table.add_row(row.host, f"{row.address}:{row.port}",
                      Text(row.ssh_text, style="green" if row.ssh_ok else "red"),
                      f"{row.latency_ms:.1f} ms" if row.latency_ms is not None else "-",
                      row.nixos_version or "-")
    out = console.console()
    console.print_table(table, out)
    down = [row.host for row in rows if not row.ssh_ok]
    out.print(f"{len(rows) - len(down)} of {len(rows)} hosts answer over SSH"
              + (f"; not: {', '.join(down)}" if down else ""), highlight=False)


def cmd_ping(args: argparse.Namespace) -> int:
    fleet = load_fleet(args)
    selected = fleet.select(args.limit)
    rows = ping({name: fleet.host_data[name] for name in selected})
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    else:
        print_table(rows)
    return 0 if all(row.ssh_ok for row in rows) else 1


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "ping", help="can every host be reached: address, SSH, latency, NixOS version",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_limit_option(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_ping)

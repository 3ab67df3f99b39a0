"""`nixfleet lab up | down | status | ssh HOST | exec HOST -- CMD | reset [HOST...]`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from typing import Any

from nixfleet.errors import NixfleetError
from nixfleet.files import write_atomic
from nixfleet.lab.config import MAX_HOSTS, lab_paths


def lab_from_args(args: argparse.Namespace):
    """The inventory as the lab sees it (the lab target), with its extra hosts."""
    from nixfleet.commands.options import inventory_path
    from nixfleet.inventory import load_inventory_file
    from nixfleet.lab.machine import Lab
    from nixfleet.lab.target import LabTarget

    paths = lab_paths()
    path = inventory_path(args)
    return Lab(load_inventory_file(path, LabTarget(paths)), paths, path.parent, progress=print)


def cmd_up(args: argparse.Namespace) -> int:
    if args.extra is not None:
        if not 0 <= args.extra <= MAX_HOSTS - 8:
            raise NixfleetError(f"--extra must be between 0 and {MAX_HOSTS - 8}")
        paths = lab_paths()
        write_atomic(paths.state_file, json.dumps({"extra": args.extra}) + "\n")
    lab = lab_from_args(args)
    lab.up()
    return _print_status(lab.status(), as_json=False)


def cmd_down(args: argparse.Namespace) -> int:
    lab = lab_from_args(args)
    lab.down()
    print("lab: down (no host, mount, veth, bridge or cgroup left)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    return _print_status(lab_from_args(args).status(), as_json=args.json)


def cmd_reset(args: argparse.Namespace) -> int:
    lab = lab_from_args(args)
    hosts = [lab.host(n) for n in args.hosts] if args.hosts else lab.hosts
    lab.reset(hosts)
    return _print_status(lab.status(), as_json=False)


def cmd_ssh(args: argparse.Namespace) -> int:
    lab = lab_from_args(args)
    argv = lab.ssh_argv(lab.host(args.host))
    os.execvp(argv[0], argv)


def cmd_exec(args: argparse.Namespace) -> int:
    lab = lab_from_args(args)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise NixfleetError("exec needs a command: nixfleet lab exec HOST -- CMD ...")
    return subprocess.run(lab.ssh_argv(lab.host(args.host), command)).returncode


def _print_status(rows: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    from nixfleet import console

    table = console.table("host", "state", "address", "systemd", "generation", "memory (PSS)")
    for row in rows:
        memory = f"{row['memory_mib']} MiB" if row["memory_mib"] is not None else "-"
        table.add_row(row["host"], row["state"], row["address"], row["systemd"],
                      str(row["generation"] or "-"), memory)
    console.print_table(table)
    return 0


def register(commands: Any) -> None:
    lab = commands.add_parser("lab", help="the built-in lab fleet (systemd-nspawn hosts)",
                              description=__doc__)
    sub = lab.add_subparsers(dest="lab_command", required=True, parser_class=type(lab))
    up = sub.add_parser("up", help="build the rootfs once, boot every host (idempotent)")
    up.add_argument("--extra", type=int, help="also boot N clones of the inventory's hosts "
                    "(group lab_extra), for fan-out measurements")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop every host; leave nothing behind").set_defaults(
        func=cmd_down)
    status = sub.add_parser("status", help="each host's state, address, systemd state, memory")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    reset = sub.add_parser("reset", help="return hosts to first boot")
    reset.add_argument("hosts", nargs="*")
    reset.set_defaults(func=cmd_reset)
    ssh = sub.add_parser("ssh", help="interactive shell on a lab host")
    ssh.add_argument("host")
    ssh.set_defaults(func=cmd_ssh)
    run = sub.add_parser("exec", help="run a command on a lab host: exec HOST -- CMD ...")
    run.add_argument("host")
    run.add_argument("command", nargs=argparse.REMAINDER)
    run.set_defaults(func=cmd_exec)

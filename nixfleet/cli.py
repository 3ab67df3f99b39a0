"""The `nixfleet` command: inventory, generated files, the lab, facts.

Every failure the user can cause ends in one line `nixfleet: error: ...` and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from nixfleet.errors import NixfleetError
from nixfleet.inventory import Fleet, load_inventory_file
from nixfleet.pyinfra_run import pyinfra_error, run_pyinfra


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of argparse's usage block; --help still shows the usage.
        self.exit(2, f"nixfleet: error: {message} (see `{self.prog} --help`)\n")


def inventory_path(args: argparse.Namespace) -> Path:
    path = Path(args.inventory or os.environ.get("NIXFLEET_INVENTORY") or "inventory.py")
    if not path.is_file():
        raise NixfleetError(f"inventory file not found: {path} (use -i PATH or run from the "
                            "configuration repository)")
    return path.resolve()


def load_fleet(args: argparse.Namespace) -> Fleet:
    return load_inventory_file(inventory_path(args))


def pyinfra_view(path: Path) -> list[dict[str, Any]]:
    """Hosts, groups and merged data exactly as pyinfra sees them: its own debug-inventory
    (a subprocess: importing pyinfra_cli monkey-patches this process with gevent)."""
    result = run_pyinfra(path, ["debug-inventory", "--json"])
    if result.returncode != 0:
        raise NixfleetError(pyinfra_error(result.stderr) or f"pyinfra exited {result.returncode}")
    hosts = json.loads(result.stdout)
    return [{**h, "groups": sorted(h["groups"])} for h in hosts]


def cmd_inventory(args: argparse.Namespace) -> int:
    path = inventory_path(args)
    fleet = load_inventory_file(path)
    selected = fleet.select(args.limit)
    hosts = [h for h in pyinfra_view(path) if h["name"] in selected]
    if args.json:
        print(json.dumps(hosts, indent=2, sort_keys=True, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("host", "class", "roles", "groups", "address", "users", "monitoring")
    for entry in hosts:
        host = fleet.hosts[entry["name"]]
        monitoring = host.features.monitoring
        table.add_row(
            host.name,
            host.hardware_class,
            ",".join(host.roles),
            ",".join(g for g in entry["groups"] if g != path.stem),
            f"{entry['data'].get('ssh_hostname')}:{entry['data'].get('ssh_port')}",
            ",".join(u.name for u in host.users),
            f"{monitoring.mode} -> {monitoring.serverHost or host.name}"
            if monitoring.enable else "off",
        )
    Console().print(table)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from nixfleet import render

    path = inventory_path(args)
    fleet = load_inventory_file(path)
    if args.check:
        render.check_generated(fleet, path.parent)
        print("generated files are current")
        return 0
    changed = render.generate(fleet, path.parent)
    for changed_path in changed:
        print(f"wrote {changed_path.relative_to(path.parent)}")
    if not changed:
        print("generated files are current")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nixfleet", description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--inventory", help="inventory file (default: ./inventory.py, "
                        "or $NIXFLEET_INVENTORY)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    inventory = commands.add_parser("inventory", help="hosts with their groups and merged data")
    inventory.add_argument("--limit", action="append", default=[],
                           help="host name, glob or group (repeatable)")
    inventory.add_argument("--json", action="store_true", help="machine-readable output")
    inventory.set_defaults(func=cmd_inventory)

    generate = commands.add_parser(
        "generate", help="write nix/hosts/*.json and known_hosts from the inventory")
    generate.add_argument("--check", action="store_true",
                          help="only check that the committed files are current")
    generate.set_defaults(func=cmd_generate)

    for register in _extra_commands():
        register(commands)
    return parser


def _extra_commands() -> list[Callable[[Any], None]]:
    from nixfleet import deploy_cli, nixcli, overview
    from nixfleet.lab import cli as lab_cli
    from nixfleet.secrets import cli as secrets_cli

    return [deploy_cli.register, overview.register, nixcli.register, secrets_cli.register,
            lab_cli.register]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NixfleetError as error:
        print(f"nixfleet: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nixfleet: interrupted", file=sys.stderr)
        return 130

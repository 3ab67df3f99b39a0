"""`nixfleet inventory` (hosts, groups and merged data as pyinfra sees them) and
`nixfleet generate` (the files derived from the inventory)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nixfleet import console, render
from nixfleet.commands.options import add_limit_option, inventory_path
from nixfleet.errors import NixfleetError
from nixfleet.inventory import load_inventory_file
from nixfleet.pyinfra_run import pyinfra_error, run_pyinfra


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
    table = console.table("host", "class", "roles", "groups", "address", "users", "monitoring")
    for entry in hosts:
        host = fleet.hosts[entry["name"]]
        monitoring = host.features.monitoring
        table.add_row(
            host.name,
            host.hardware_class,
            ", ".join(host.roles),
            ", ".join(g for g in entry["groups"] if g != path.stem),
            f"{entry['data'].get('ssh_hostname')}:{entry['data'].get('ssh_port')}",
            ", ".join(u.name for u in host.users),
            f"{monitoring.mode} -> {monitoring.serverHost or host.name}"
            if monitoring.enable else "off",
        )
    console.print_table(table)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
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


def register(commands: Any) -> None:
    inventory = commands.add_parser("inventory", help="hosts with their groups and merged data")
    add_limit_option(inventory)
    inventory.add_argument("--json", action="store_true", help="machine-readable output")
    inventory.set_defaults(func=cmd_inventory)

    generate = commands.add_parser(
        "generate", help="write nix/hosts/*.json and known_hosts from the inventory")
    generate.add_argument("--check", action="store_true",
                          help="only check that the committed files are current")
    generate.set_defaults(func=cmd_generate)

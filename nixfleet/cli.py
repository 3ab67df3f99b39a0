"""The `nixfleet` command: inventory, validation, deploys, facts, secrets, the lab.

Each command is a module that registers its subparser: nixfleet/commands/ (inventory and
generate, validate, deploy, facts, ping, status, monitoring, check-syntax, check-nix,
check-flake, update-flake, update and import), nixfleet/secrets/cli.py and
nixfleet/verify/cli.py; what they share (--inventory, --limit) is nixfleet/commands/options.py.
Commands from outside the production code, the lab's (nixfleet/lab/cli.py), are found by their
entry points (group `nixfleet.commands` in pyproject.toml), as targets are (nixfleet/target.py).

Every failure the user can cause ends in one line `nixfleet: error: ...` and a non-zero exit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import NoReturn

from nixfleet.commands import (
    deploy,
    facts,
    gc,
    import_flake,
    inventory,
    monitoring,
    nix,
    ping,
    status,
    update,
    validate,
)
from nixfleet.commands.options import add_inventory_option
from nixfleet.errors import NixfleetError
from nixfleet.secrets import cli as secrets_cli
from nixfleet.verify import cli as verify_cli

COMMANDS = (inventory, validate, deploy, facts, ping, status, gc, monitoring, nix, update,
            import_flake, secrets_cli, verify_cli)
ENTRY_POINT_GROUP = "nixfleet.commands"  # name = "module:register"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of argparse's usage block; --help still shows the usage.
        self.exit(2, f"nixfleet: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nixfleet", description=__doc__.splitlines()[0])
    add_inventory_option(parser)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.register(commands)
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()(commands)
    return parser


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

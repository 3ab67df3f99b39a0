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
import gc
import sys
from collections.abc import Sequence
from importlib import import_module
from importlib.metadata import entry_points
from typing import NoReturn

from nixfleet.commands.options import add_inventory_option
from nixfleet.errors import NixfleetError

# Each command's module, by the command's name, in the order --help lists them. A command line
# that names one imports only its module (a command's start is mostly Python importing what
# it uses: pyinfra, httpx, jinja2...); --help, no command or an unknown one imports them all.
COMMANDS = {
    "inventory": "nixfleet.commands.inventory", "generate": "nixfleet.commands.inventory",
    "validate": "nixfleet.commands.validate", "deploy": "nixfleet.commands.deploy",
    "facts": "nixfleet.commands.facts", "ping": "nixfleet.commands.ping",
    "status": "nixfleet.commands.status", "gc": "nixfleet.commands.gc",
    "monitoring": "nixfleet.commands.monitoring", "check-syntax": "nixfleet.commands.nix",
    "check-nix": "nixfleet.commands.nix", "check-flake": "nixfleet.commands.nix",
    "update-flake": "nixfleet.commands.nix", "update": "nixfleet.commands.update",
    "import": "nixfleet.commands.import_flake", "secrets": "nixfleet.secrets.cli",
    "verify": "nixfleet.verify.cli",
}
ENTRY_POINT_GROUP = "nixfleet.commands"  # name = "module:register"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of argparse's usage block; --help still shows the usage.
        self.exit(2, f"nixfleet: error: {message} (see `{self.prog} --help`)\n")


def _named_command(argv: Sequence[str]) -> str | None:
    """The command a command line names: its first word after the --inventory option, if any
    (None for anything else, which then meets the whole parser)."""
    rest = list(argv)
    if rest and rest[0].startswith("--inventory"):
        rest = rest[1:] if "=" in rest[0] else rest[2:]
    return rest[0] if rest and not rest[0].startswith("-") else None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of nixfleet's commands; given the command line, of the command it names
    only (every command where it names none)."""
    parser = _Parser(prog="nixfleet", description=__doc__.splitlines()[0])
    add_inventory_option(parser)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    named = _named_command(argv) if argv is not None else None
    if named in COMMANDS:
        import_module(COMMANDS[named]).register(commands)
        return parser
    found = entry_points(group=ENTRY_POINT_GROUP)
    chosen = [entry_point for entry_point in found if entry_point.name == named]
    if not chosen:
        for module in dict.fromkeys(COMMANDS.values()):
            import_module(module).register(commands)
    for entry_point in chosen or found:
        entry_point.load()(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line's exit code; without argv (the process's own command line) the process
    ends after it."""
    process = argv is None
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NixfleetError as error:
        print(f"nixfleet: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nixfleet: interrupted", file=sys.stderr)
        return 130
    finally:
        if process:
            # What the command made is left out of the garbage collector's last walks over
            # every object when the interpreter exits: after `nixfleet status` on 16 lab hosts
            # the exit took 50-115 ms, now 11-15 ms. Exit handlers still run.
            gc.freeze()

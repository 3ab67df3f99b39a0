"""What every `nixfleet` command shares: the inventory it acts on and the host selection."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nixfleet.errors import NixfleetError

if TYPE_CHECKING:  # the inventory (pydantic) is imported by the commands that load it
    from nixfleet.inventory import Fleet


class _InventoryIsLongOnly(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        parser.error("-i is an identity (`nixfleet secrets -i KEY`); the inventory is "
                     "--inventory PATH")


def add_inventory_option(parser: argparse.ArgumentParser) -> None:
    # Long only: -i is an identity, as in age, agenix and ssh (`nixfleet secrets -i KEY`); a
    # -i before the command (once short for --inventory) gets an error that says so.
    parser.add_argument("--inventory", metavar="PATH", help="inventory file (default: "
                        "./inventory.py, or $NIXFLEET_INVENTORY)")
    parser.add_argument("-i", nargs="?", action=_InventoryIsLongOnly, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)


def add_limit_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", action="append", default=[], metavar="PATTERN",
                        help="host name, glob or group (repeatable)")


def inventory_path(args: argparse.Namespace) -> Path:
    path = Path(args.inventory or os.environ.get("NIXFLEET_INVENTORY") or "inventory.py")
    if not path.is_file():
        raise NixfleetError(f"inventory file not found: {path} (use --inventory PATH, set "
                            "$NIXFLEET_INVENTORY or run from the configuration repository)")
    return path.resolve()


def load_fleet(args: argparse.Namespace) -> Fleet:
    from nixfleet.inventory import load_inventory_file

    return load_inventory_file(inventory_path(args))

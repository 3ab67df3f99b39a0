"""`nixfleet update [--input NAME] [--deploy] [--canary] [--limit P]`: move the flake's lock,
build every selected host with it and show what changes per host, deploy it when asked, then
commit the lock file; on any failure the previous lock file is back and nothing is committed
(nixfleet/update.py).

    nixfleet update                          # every input; build; commit
    nixfleet update --input nixpkgs --deploy --limit p620
    nixfleet update --deploy --canary

The builds and the deploy are `nixfleet deploy build` and `nixfleet deploy switch` (the same
parser and code), each host's changes read from the deploy's summary.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nixfleet.commands import deploy
from nixfleet.commands.options import add_inventory_option, add_limit_option, inventory_path
from nixfleet.errors import NixfleetError
from nixfleet.target import current_target
from nixfleet.update import DeployRun, Update, UpdateFailed

SUMMARY = "summary.json"


def deployer(inventory: Path) -> Any:
    """Runs `nixfleet deploy ACTION` for the configuration at `inventory` and reads the
    summaries it wrote (each pyinfra run writes .deploy-logs/<deploy id>/summary.json)."""
    logs = inventory.parent / ".deploy-logs"

    def run(action: str, limits: Sequence[str], canary: bool) -> DeployRun:
        before = _summaries(logs)
        argv = ["--inventory", str(inventory), "deploy", action,
                *[arg for limit in limits for arg in ("--limit", limit)],
                *(["--canary"] if canary else [])]
        parser = argparse.ArgumentParser(prog="nixfleet")
        add_inventory_option(parser)
        deploy.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(argv)
        print(f"nixfleet update: nixfleet {' '.join(argv[2:])}", flush=True)
        returncode = int(args.func(args) or 0)
        rows: dict[str, dict[str, Any]] = {}
        for path in sorted(set(_summaries(logs)) - set(before), key=_mtime):
            try:
                rows.update({row["host"]: row for row in json.loads(path.read_text())})
            except (OSError, ValueError, KeyError, TypeError):
                raise NixfleetError(f"{path}: cannot be read") from None
        return DeployRun(returncode, list(rows.values()))

    return run


def _summaries(logs: Path) -> list[Path]:
    return list(logs.glob(f"*/{SUMMARY}"))


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def cmd_update(args: argparse.Namespace) -> int:
    if args.canary and not args.deploy:
        raise NixfleetError("--canary is how --deploy rolls out: add --deploy")
    inventory = inventory_path(args)
    root = inventory.parent
    lock_dir = current_target().lock_dir(root)
    if not (lock_dir / "flake.nix").is_file():
        raise NixfleetError(f"no flake at {lock_dir / 'flake.nix'}")
    update = Update(root, lock_dir, deployer(inventory), inputs=args.input, limits=args.limit,
                    deploy=args.deploy, canary=args.canary)
    try:
        update.run()
    except UpdateFailed as error:
        print(f"nixfleet: error: {error}", file=sys.stderr)
        return error.returncode
    return 0


def register(commands: Any) -> None:
    update = commands.add_parser(
        "update", help="update flake.lock, build every host with it, deploy (--deploy), commit",
        description="Update the flake's inputs in its flake.lock (every input, or each "
                    "--input), build every selected host with it without activating it "
                    "(`nixfleet deploy build`) and show per host the packages added, removed "
                    "and upgraded and the closure's size; with --deploy, switch them "
                    "(`nixfleet deploy switch`: health gate, rollback, verification). Then "
                    "commit flake.lock with git, naming each input's revisions and the hosts. "
                    "On any failure the previous flake.lock is restored and nothing is "
                    "committed. Needs network for inputs from the internet; the lab's input "
                    "is local (NIXFLEET_TARGET=lab: nix/lab/flake.lock).")
    update.add_argument("--input", action="append", default=[], metavar="NAME",
                        help="update only this input (repeatable; default: every input)")
    add_limit_option(update)
    update.add_argument("--deploy", action="store_true",
                        help="switch the hosts after the build (then commit)")
    update.add_argument("--canary", action="store_true",
                        help="with --deploy: roll out in waves (nixfleet deploy --canary)")
    update.set_defaults(func=cmd_update)


"""`nixfleet verify`: post-deploy verification of the selected hosts (pytest-testinfra over
tests/fleet/, checks chosen per host from the inventory), a per-host table at the end naming
each failed check in one line. Exit 1 when a check fails.

    nixfleet verify [--limit PATTERN] [-n N] [--junit FILE] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from nixfleet.commands.options import add_limit_option, inventory_path, load_fleet
from nixfleet.errors import NixfleetError


def cmd_verify(args: argparse.Namespace) -> int:
    from nixfleet.verify.run import verify

    if args.workers is not None and args.workers < 1:
        raise NixfleetError(f"-n must be at least 1, got {args.workers}")
    if args.junit and not Path(args.junit).resolve().parent.is_dir():
        raise NixfleetError(f"--junit {args.junit}: its directory does not exist")
    hosts = load_fleet(args).select(args.limit)
    inventory = inventory_path(args)
    # pytest's output (and its report) beside the deploys' logs, where a failed, interrupted
    # or killed run's stays; nothing in /tmp. A passed run's goes.
    run_id = f"verify-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    logs = inventory.parent / ".deploy-logs" / run_id
    logs.mkdir(parents=True)
    log = logs / "verify.log"
    # SIGTERM ends pytest too (subprocess.run kills its child on the way out), as Ctrl-C does.
    signal.signal(signal.SIGTERM, _terminated)
    result = verify(inventory, hosts, args.workers,
                    Path(args.junit).resolve() if args.junit else None, args.identity, log)
    if result.ok:
        shutil.rmtree(logs)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print("\n".join(result.lines()))
        if not result.ok:
            print(f"pytest's output: {log}")
    return 0 if result.ok else 1


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def register(commands: Any) -> None:
    parser = commands.add_parser("verify", help="post-deploy verification (pytest-testinfra)",
                                 description=__doc__)
    add_limit_option(parser)
    parser.add_argument("-n", dest="workers", type=int, metavar="N",
                        help="hosts checked at once (default: every selected host, at most 32)")
    parser.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report")
    parser.add_argument("--json", action="store_true", help="the result as JSON")
    parser.add_argument("-i", "--identity", action="append", default=[], metavar="PATH",
                        help="SSH private key or age identity that decrypts the secrets, to "
                             "check /run/agenix by hash (repeatable)")
    parser.set_defaults(func=cmd_verify)

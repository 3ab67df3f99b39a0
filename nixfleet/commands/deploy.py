"""`nixfleet deploy ACTION`: the deploy files with the options pyinfra's CLI has no flag for.

    nixfleet deploy switch --limit nvidia --no-rollback
    nixfleet deploy switch --limit p620 --reboot
    nixfleet deploy switch --canary

It runs `pyinfra -y inventory.py deploys/ACTION.py` (so the output, summary and exit code are
the deploy's own) and passes --no-rollback, --reboot and --canary as pyinfra data.
"""

from __future__ import annotations

import argparse
import subprocess
from typing import Any

from nixfleet.commands.options import add_limit_option, inventory_path
from nixfleet.errors import NixfleetError
from nixfleet.pyinfra_run import pyinfra_command, pyinfra_environment

ACTIONS = {"switch": "switch", "boot": "boot", "test": "test", "build": "build",
           "dry-activate": "dry_activate", "push": "push", "rollback": "rollback"}


def cmd_deploy(args: argparse.Namespace) -> int:
    inventory = inventory_path(args)
    deploy_file = inventory.parent / "deploys" / f"{ACTIONS[args.action]}.py"
    if not deploy_file.is_file():
        raise NixfleetError(f"deploy file not found: {deploy_file}")
    argv = [pyinfra_command(), "-y", inventory.name, str(deploy_file)]
    for limit in args.limit:
        argv += ["--limit", limit]
    if args.fail_percent is not None:
        argv += ["--fail-percent", str(args.fail_percent)]
    if args.no_rollback:
        argv += ["--data", "no_rollback=true"]
    if args.reboot:
        argv += ["--data", "reboot=true"]
    if args.canary:
        argv += ["--data", "canary=true"]
    if args.generation is not None:
        argv += ["--data", f"generation={args.generation}"]
    return subprocess.run(argv, cwd=inventory.parent, env=pyinfra_environment()).returncode


def register(commands: Any) -> None:
    deploy = commands.add_parser("deploy", help="run a deploy file (switch, boot, test, build, "
                                 "dry-activate, push, rollback) on the selected hosts")
    deploy.add_argument("action", choices=sorted(ACTIONS))
    add_limit_option(deploy)
    deploy.add_argument("--no-rollback", action="store_true",
                        help="keep a generation that fails to activate or fails its health gate")
    deploy.add_argument("--reboot", action="store_true",
                        help="make the new generation the boot default and reboot into it")
    deploy.add_argument("--canary", action="store_true",
                        help="roll out in waves: one host per hardware class first, each wave "
                        "gated (health gate, verification, alerts), then the rest")
    deploy.add_argument("--fail-percent", type=int,
                        help="stop when more than this percentage of hosts failed")
    deploy.add_argument("--generation", type=int, help="rollback: the generation to go back to")
    deploy.set_defaults(func=cmd_deploy)

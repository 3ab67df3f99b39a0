"""The flake's checks and inputs: `nixfleet check-syntax [PATH...]` and `nixfleet check-nix`
(without nixpkgs), `nixfleet check-flake` (`nix flake check`, which needs the inputs) and
`nixfleet update-flake [INPUT...]` (nix/flake.lock, with what changed).

Each exits non-zero when anything is wrong and lists each problem on its own line (parse
errors as file:line:col); where the inputs cannot be fetched, one line says so. What needs a
machine with nixpkgs is in nix/README.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nixfleet import console, flake_inputs, nixcheck
from nixfleet.commands.options import inventory_path
from nixfleet.errors import NixfleetError
from nixfleet.inventory import load_inventory_file
from nixfleet.target import current_target


def cmd_check_syntax(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths] or [Path.cwd()]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise NixfleetError(f"no such file or directory: {', '.join(missing)}")
    files = nixcheck.nix_files(paths)
    if not files:
        raise NixfleetError(f"no .nix files under {', '.join(str(p) for p in paths)}")
    problems = nixcheck.check_syntax(files)
    return _report(problems, f"{len(files)} .nix files parse", as_json=args.json)


def cmd_check_nix(args: argparse.Namespace) -> int:
    path = inventory_path(args)
    fleet = load_inventory_file(path)
    nix_dir = path.parent / "nix"
    if not (nix_dir / "flake.nix").is_file():
        raise NixfleetError(f"no flake at {nix_dir / 'flake.nix'}")
    problems = nixcheck.check_all(nix_dir, fleet.hosts)
    return _report(problems, f"nix/ agrees with the inventory ({len(fleet.hosts)} hosts); "
                   "building it needs nixpkgs (see nix/README.md)", as_json=args.json)


def _nix_dir(args: argparse.Namespace) -> Path:
    nix_dir = inventory_path(args).parent / "nix"
    if not (nix_dir / "flake.nix").is_file():
        raise NixfleetError(f"no flake at {nix_dir / 'flake.nix'}")
    return nix_dir


def cmd_check_flake(args: argparse.Namespace) -> int:
    check = flake_inputs.flake_check(_nix_dir(args), build=not args.no_build)
    if check.state is not flake_inputs.CheckState.PASSED:
        raise NixfleetError(f"nix flake check: {check.line()}")
    print(check.message)
    return 0


def cmd_update_flake(args: argparse.Namespace) -> int:
    # The lock the hosts are built from: nix/flake.lock, the lab's nix/lab/flake.lock.
    root = inventory_path(args).parent
    nix_dir = current_target().lock_dir(root)
    if not (nix_dir / "flake.nix").is_file():
        raise NixfleetError(f"no flake at {nix_dir / 'flake.nix'}")
    changes = flake_inputs.update_lock(nix_dir, args.inputs, root=root)
    lock = (nix_dir / flake_inputs.LOCK_FILE).relative_to(root)
    changed = [c for c in changes if c.changed]
    table = console.table("input", "before", "after", title=f"{lock}")
    for change in changes:
        table.add_row(change.name, change.before.describe() if change.before else "-",
                      change.after.describe() if change.after else "-")
    console.print_table(table)
    if changed:
        print(f"{lock}: {len(changed)} input{'s' if len(changed) > 1 else ''} changed "
              f"({', '.join(c.name for c in changed)}); commit it to deploy them (`nixfleet "
              "update` builds, deploys and commits in one go)")
    else:
        print(f"{lock}: unchanged")
    return 0


def _report(problems: list[str], success: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": not problems, "problems": problems}, indent=2))
    elif problems:
        for problem in problems:
            print(problem)
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''}")
    else:
        print(success)
    return 1 if problems else 0


def register(commands: Any) -> None:
    syntax = commands.add_parser(
        "check-syntax", help="parse every .nix file (nix-instantiate --parse)",
        description="Parse every .nix file under PATHs (default: the current directory); "
                    "list each error as file:line:col and exit 1 if there is any.")
    syntax.add_argument("paths", nargs="*", metavar="PATH", help="file or directory")
    syntax.add_argument("--json", action="store_true", help="machine-readable output")
    syntax.set_defaults(func=cmd_check_syntax)

    check = commands.add_parser(
        "check-nix", help="check nix/ against the inventory without nixpkgs",
        description="Check the flake in nix/ against the inventory without nixpkgs: syntax, "
                    "host data round trip, feature options, module imports, no host names in "
                    "modules, home files, the flake's host list, nix/secrets.json. Exit 1 and "
                    "list each problem if anything is wrong.")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(func=cmd_check_nix)

    flake = commands.add_parser(
        "check-flake", help="nix flake check ./nix (needs the flake's inputs: network)",
        description="Run `nix flake check` on nix/ (every host's system evaluated, checks "
                    "built). Needs nixpkgs, home-manager and agenix from GitHub; where they "
                    "cannot be fetched it says so in one line and exits 1. Never writes "
                    "nix/flake.lock.")
    flake.add_argument("--no-build", action="store_true", help="evaluate only (as validate)")
    flake.set_defaults(func=cmd_check_flake)

    update = commands.add_parser(
        "update-flake", help="update nix/flake.lock (every input, or those named)",
        description="Update the flake's inputs in nix/flake.lock: every input, or only the "
                    "INPUTs named (nix flake update / nix flake lock --update-input), then "
                    "show each input's locked revision before and after. Needs network.")
    update.add_argument("inputs", nargs="*", metavar="INPUT", help="e.g. nixpkgs")
    update.set_defaults(func=cmd_update_flake)

"""`nixfleet check-syntax [PATH...]` and `nixfleet check-nix`: the flake's checks without nixpkgs.

Both exit non-zero when anything is wrong and list each problem on its own line (parse errors
as file:line:col). What still needs a machine with nixpkgs is in nix/README.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nixfleet import nixcheck
from nixfleet.commands.options import inventory_path
from nixfleet.errors import NixfleetError
from nixfleet.inventory import load_inventory_file


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

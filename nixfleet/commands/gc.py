"""`nixfleet gc [--limit P] [--keep N] [--older-than DAYS] [--boot] [--dry] [-y] [--json]`:
delete old system generations, rewrite the boot entries, collect garbage, on every selected
host in parallel; one table: generations before -> after, boot partition free before -> after,
store bytes freed.

Never deleted: the current generation (the profile's and the running one), the booted one and
the rollback target (the one before the current). Of the rest the newest --keep stay (default:
the host's boot.configurationLimit); --older-than DAYS deletes only generations older than
that. --boot makes room on the boot partition for the next deploy: it keeps only what must stay
unless --keep says more (the boot entries of the current generation and the rollback target
are then all the loader needs). --dry changes nothing and prints the same table as "would".
Without -y it shows what it would do and asks; with no terminal to ask on it changes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nixfleet import console
from nixfleet.commands.options import add_limit_option, load_fleet
from nixfleet.errors import NixfleetError
from nixfleet.gc import GcPlan, HostGc, HostGenerations, collect, plan, read_host
from nixfleet.preflight import mib


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--keep must be a whole number of at least 1, got "
                                         f"{text!r}")
    return int(text)


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"--older-than must be a number of days (0 or more), "
                                         f"got {text!r}")
    return value


def print_table(rows: list[HostGc], dry: bool) -> None:
    title = "nixfleet gc --dry: what would happen (nothing was changed)" if dry else "nixfleet gc"
    table = console.table("host", "generations", "boot free", "store freed", "result",
                          title=title)
    for row in rows:
        arrow = "->" if not dry else "-> (would)"
        table.add_row(
            row.host, f"{_dash(row.generations_before)} {arrow} {_dash(row.generations_after)}",
            f"{_size(row.boot_free_before)} {arrow} {_size(row.boot_free_after)}",
            _size(row.store_freed) if not dry else "-",
            ("[green]ok[/green] " if row.ok else "[red]failed[/red] ") + row.reason)
    out = console.console(piped_width=160)
    console.print_table(table, out)


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _size(value: int | None) -> str:
    return "-" if value is None else mib(value)


def cmd_gc(args: argparse.Namespace) -> int:
    fleet = load_fleet(args)
    names = fleet.select(args.limit)
    if not names:
        raise NixfleetError("no hosts selected")

    def read(name: str) -> tuple[str, HostGenerations | None, str]:
        found, error = read_host(name, fleet.host_data[name])
        return name, found, error

    with ThreadPoolExecutor(max_workers=max(1, min(32, len(names)))) as pool:
        answers = list(pool.map(read, names))
    rows: dict[str, HostGc] = {}
    plans: dict[str, tuple[HostGenerations, GcPlan]] = {}
    for name, found, error in answers:
        if found is None:
            rows[name] = HostGc(name, ok=False, reason=error)
            continue
        boot = fleet.hosts[name].boot
        keep = args.keep or (2 if args.boot else boot.configurationLimit)
        plans[name] = (found, plan(found, keep, args.older_than))
    dry = args.dry
    if not dry and not args.yes:
        preview = [collect(name, fleet.host_data[name], found, chosen, fleet.hosts[name].boot,
                           dry=True) for name, (found, chosen) in plans.items()]
        print_table([*preview, *rows.values()], dry=True)
        if not sys.stdin.isatty():
            print("nixfleet gc: nothing was deleted (no terminal to confirm on; pass -y)",
                  file=sys.stderr)
            return 1
        answer = input("Delete these generations and collect garbage? [y/N] ").strip().lower()
        if answer != "y":
            print("nixfleet gc: nothing was deleted", file=sys.stderr)
            return 1

    def act(item: tuple[str, tuple[HostGenerations, GcPlan]]) -> HostGc:
        name, (found, chosen) = item
        return collect(name, fleet.host_data[name], found, chosen, fleet.hosts[name].boot, dry)

    with ThreadPoolExecutor(max_workers=max(1, min(32, len(plans)))) as pool:
        for row in pool.map(act, plans.items()):
            rows[row.host] = row
    ordered = [rows[name] for name in names]
    if args.json:
        print(json.dumps([row.to_json() for row in ordered], indent=2))
    else:
        print_table(ordered, dry)
    return 0 if all(row.ok for row in ordered) else 1


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "gc", help="delete old generations, rewrite boot entries, collect garbage",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_limit_option(parser)
    parser.add_argument("--keep", type=_positive, metavar="N",
                        help="newest generations to keep (default: boot.configurationLimit; "
                             "2 with --boot)")
    parser.add_argument("--older-than", type=_days, metavar="DAYS",
                        help="delete only generations older than DAYS")
    parser.add_argument("--boot", action="store_true",
                        help="make room on the boot partition for the next deploy")
    parser.add_argument("--dry", action="store_true", help="change nothing; say what would go")
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_gc)

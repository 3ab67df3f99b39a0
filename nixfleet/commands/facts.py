"""`nixfleet facts`: one row per host from the HostOverview fact (one SSH round trip each).

A host whose GPU state differs from its inventory entry gets a warning: an nvidia-class host
without the NVIDIA driver loaded is a real fault. Unreachable hosts are rows with the error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nixfleet import console
from nixfleet.commands.options import add_limit_option, inventory_path
from nixfleet.errors import NixfleetError
from nixfleet.inventory import Fleet, load_inventory_file
from nixfleet.model import Host
from nixfleet.pyinfra_run import host_failures, pyinfra_error, run_pyinfra

FACT = "nixfleet.facts.host.HostOverview"


def expected_gpu_class(host: Host) -> str:
    vendors = {gpu.vendor for gpu in host.gpus}
    return "hybrid" if len(vendors) > 1 else host.hardware_class


def gpu_warnings(host: Host, gpu: dict[str, Any]) -> list[str]:
    """What differs between the inventory's hardware and what the host shows."""
    warnings = []
    expected = expected_gpu_class(host)
    if gpu["hardware_class"] != expected:
        warnings.append(f"{host.name}: the inventory says {expected} GPU, the host shows "
                        f"{gpu['hardware_class']}")
    wanted = host.graphics.compute
    if wanted != "none" and gpu["compute"] != wanted:
        vendor = {"cuda": "NVIDIA", "rocm": "AMD (amdgpu)"}[wanted]
        primary = gpu.get("primary") or {}
        driver = primary.get("driver") or "none"
        warnings.append(f"{host.name}: {host.hardware_class}-class host without {wanted}: "
                        f"{vendor} driver not loaded (driver in use: {driver})")
    return warnings


def host_row(host: Host, overview: dict[str, Any]) -> dict[str, Any]:
    current = next((g for g in overview["generations"] if g["current"]), None)
    system = overview.get("system") or {}
    gpu = overview["gpu"]
    primary = gpu.get("primary") or {}
    gpu_summary = f"{gpu['hardware_class']}: {primary.get('model') or '-'} " \
                  f"({primary.get('driver') or 'no driver'}, {gpu['compute']})"
    return {
        "host": host.name,
        "reachable": True,
        "generation": current["generation"] if current else None,
        "generation_date": current["date"] if current else None,
        "nixos_version": (system.get("current") or {}).get("nixos_version"),
        "reboot_required": system.get("reboot_required", False),
        "gpu": gpu_summary,
        "gpu_state": gpu,
        "system_state": overview.get("state"),
        "failed_units": [u["name"] for u in overview.get("failed", [])],
        "errors": overview.get("errors", {}),
        "warnings": gpu_warnings(host, gpu),
    }


def gather(fleet: Fleet, inventory: Path, limits: list[str]) -> list[dict[str, Any]]:
    selected = fleet.select(limits)
    result = run_pyinfra(inventory, ["fact", FACT, "--json"], limits)
    problem = pyinfra_error(result.stderr)
    if problem:
        raise NixfleetError(problem)
    try:
        answers = json.loads(result.stdout).get(FACT, {}) if result.stdout else {}
    except json.JSONDecodeError:
        answers = {}
    failures = host_failures(result.stderr)
    rows = []
    for name in selected:
        overview = answers.get(name)
        if overview is None:
            rows.append({"host": name, "reachable": False,
                         "error": failures.get(name, "no answer (see pyinfra's output)")})
        else:
            rows.append(host_row(fleet.hosts[name], overview))
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    table = console.table("host", "generation", "NixOS", "reboot", "GPU", "systemd",
                          "failed units")
    for row in rows:
        if not row["reachable"]:
            table.add_row(row["host"], f"[red]unreachable: {row['error']}[/red]", "", "", "",
                          "", "")
            continue
        table.add_row(
            row["host"], f"{row['generation']} ({row['generation_date']})",
            row["nixos_version"] or "-", "yes" if row["reboot_required"] else "no", row["gpu"],
            row["system_state"] or "-", ", ".join(row["failed_units"]) or "-")
    out = console.console()
    console.print_table(table, out)
    for row in rows:
        for warning in row.get("warnings", []):
            out.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
        for part, error in row.get("errors", {}).items():
            out.print(f"[yellow]warning:[/yellow] {row['host']}: {part}: {error}",
                      highlight=False)


def cmd_facts(args: argparse.Namespace) -> int:
    path = inventory_path(args)
    rows = gather(load_inventory_file(path), path, args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows)
    return 0 if all(r["reachable"] for r in rows) else 1


def register(commands: Any) -> None:
    facts = commands.add_parser("facts", help="what each host runs: generation, NixOS version, "
                                "reboot required, GPU, failed units")
    add_limit_option(facts)
    facts.add_argument("--json", action="store_true", help="machine-readable output")
    facts.set_defaults(func=cmd_facts)

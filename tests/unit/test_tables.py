"""Every nixfleet table, printed without a terminal (piped), keeps every cell whole: no "…",
every word of every cell in the output, no line wider than the width. At 80 columns (the
default when piped) and at 50 (a table that cannot fit is one block per row)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest

from nixfleet import console
from nixfleet.commands import facts, monitoring, ping
from nixfleet.deploy import DeployRun
from nixfleet.outcome import Action, HostOutcome, Result
from tests.unit.repo_support import ROOT, env

WIDTHS = ["", "50"]  # "": $COLUMNS unset, so console.PIPED_WIDTH


def words(*cells: object) -> set[str]:
    return {word for cell in cells for word in str(cell).split()}


def assert_whole(out: str, cells: set[str], width: int) -> None:
    assert "…" not in out, out
    missing = sorted(word for word in cells if word not in out)
    assert not missing, f"cut or missing: {missing}\n{out}"
    wide = [line for line in out.splitlines() if len(line) > width]
    assert not wide, f"wider than {width}: {wide}"


def width_of(columns: str) -> int:
    return int(columns) if columns else console.PIPED_WIDTH


@cache
def piped(*args: str, columns: str) -> str:
    """`nixfleet ARGS` in this repository with stdout a pipe (once per test process)."""
    extra = {"COLUMNS": columns} if columns else {}
    result = subprocess.run([sys.executable, "-m", "nixfleet", *args], cwd=ROOT, text=True,
                            capture_output=True, env=env(**extra), timeout=120)
    assert result.returncode in (0, 1), result.stderr
    return result.stdout


@pytest.fixture(params=WIDTHS)
def columns(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """$COLUMNS for an in-process table (capsys: stdout is not a terminal)."""
    if request.param:
        monkeypatch.setenv("COLUMNS", request.param)
    else:
        monkeypatch.delenv("COLUMNS", raising=False)
    return request.param


@pytest.mark.parametrize("columns", WIDTHS)
def test_inventory(columns):
    hosts = json.loads(piped("inventory", "--json", columns=""))
    out = piped("inventory", columns=columns)
    cells = words(*[h["name"] for h in hosts],
                  *[g for h in hosts for g in h["groups"] if g != "inventory"],
                  "workstation", "laptop", "olafkfreund", "client", "server", "p620:22")
    assert_whole(out, cells, width_of(columns))
    assert "monitoring_clients," in out  # a list cell breaks between items, never inside one


@pytest.mark.parametrize("columns", WIDTHS)
def test_secrets_list(columns):
    rows = json.loads(piped("secrets", "list", "--json", columns=""))
    out = piped("secrets", "list", columns=columns)
    cells = words(*[r["name"] for r in rows], *[h for r in rows for h in r["hosts"]],
                  *[n for r in rows for n in r["recipients"]],
                  *[f"{r['owner']}:{r['group']}" for r in rows], *[r["mode"] for r in rows])
    assert_whole(out, cells, width_of(columns))


@pytest.mark.parametrize("columns", WIDTHS)
def test_validate(columns):
    report = json.loads(piped("validate", "--quick", "--json", columns=""))
    out = piped("validate", "--quick", columns=columns)
    cells = words(*[s["name"] for s in report["steps"]], *[s["status"] for s in report["steps"]],
                  *[s["summary"] for s in report["steps"]])
    table = out.split("\nsecrets: ")[0]  # the problem lines below are one line each
    assert_whole(table, cells, width_of(columns))


def test_facts(columns, capsys):
    rows = [{"host": "razer", "reachable": True, "generation": 42,
             "generation_date": "2026-11-28 10:01:02", "nixos_version": "26.05.20261101.abcdef0",
             "reboot_required": True, "gpu": "hybrid: TU106M GeForce RTX 2070 Mobile "
             "(nvidia, cuda)", "system_state": "degraded",
             "failed_units": ["nixos-upgrade.service", "ollama.service"], "warnings": []},
            {"host": "p510", "reachable": False,
             "error": "SSH error (Error connecting to host: No route to host)"}]
    facts.print_table(rows)
    assert_whole(capsys.readouterr().out, words(
        "razer", "42", "(2026-11-28", "10:01:02)", "26.05.20261101.abcdef0", "yes",
        rows[0]["gpu"], "degraded", "nixos-upgrade.service,", "ollama.service", "p510",
        "unreachable:", rows[1]["error"]), width_of(columns))


def test_facts_table_that_fits_keeps_its_right_edge(columns, capsys):
    """At 80 every word fits on a line, but rich's own shrinking left the table 90 wide and
    the console cut its last column ("ollama.servic") and right border."""
    row = {"host": "p620", "reachable": True, "generation": 42,
           "generation_date": "2026-11-28 10:01:02", "nixos_version": "26.05",
           "reboot_required": False, "gpu": "amd: Navi 31 [Radeon RX 7900 XT/7900 XTX] "
           "(amdgpu, rocm)", "system_state": "running", "failed_units": [], "warnings": []}
    rows = [row, dict(row, host="razer", reboot_required=True, gpu="hybrid: TU106M (nvidia, "
                      "cuda)", failed_units=["ollama.service"])]
    facts.print_table(rows)
    out = capsys.readouterr().out
    assert_whole(out, words("p620", "razer", "42", "(2026-11-28", "10:01:02)", "26.05", "no",
                            "yes", rows[0]["gpu"], rows[1]["gpu"], "running", "-",
                            "ollama.service", "failed", "units"), width_of(columns))
    if not columns:  # a table, with both edges
        assert all(line.startswith(("┏", "┃", "┡", "│", "└")) and
                   line.endswith(("┓", "┃", "┩", "│", "┘")) for line in out.splitlines()), out


def test_ping(columns, capsys):
    rows = [ping.Reachability("p620", "192.168.1.97", 22, True, 0.4, 0.31,
                              "26.05.20261101.abcdef0 (Yarara)", None),
            ping.Reachability("dex5550", "dex5550.home.arpa", 2222, False, None, None, None,
                              "ssh: Host key verification failed.")]
    ping.print_table(rows)
    assert_whole(capsys.readouterr().out, words(
        "p620", "192.168.1.97:22", "ok", "(0.31s)", "0.4 ms", rows[0].nixos_version, "dex5550",
        "dex5550.home.arpa:2222", "no:", rows[1].error), width_of(columns))


def test_monitoring_status(columns, capsys):
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    error = 'Get "http://razer:9101/metrics": dial tcp 192.168.1.97:9101: connection refused'
    status = monitoring.MonitoringStatus(
        [monitoring.TargetState("p620", "razer", "nixos-exporter", "razer:9101", "down",
                                now - timedelta(seconds=3), error)],
        [monitoring.FiringAlert("p620", "ExporterDown", "razer", "critical",
                                now - timedelta(minutes=2), "nixos-exporter on razer is down")],
        [monitoring.Component("p620", "Prometheus", "http://p620:9090/-/ready", True,
                              "ready")])
    monitoring.print_status(status, now)
    assert_whole(capsys.readouterr().out, words(
        "razer", "nixos-exporter", "down", error, "ExporterDown", "critical",
        "nixos-exporter on razer is down", "Prometheus", "ready", "(http://p620:9090/-/ready)"),
        width_of(columns))


def column_text(out: str, header: str) -> str:
    """The text of a table's last column `header`, its lines joined without spaces."""
    lines = out.splitlines()
    top = next(i for i, line in enumerate(lines) if f" {header}" in line)
    start = lines[top].index(f" {header}") + 1
    return "".join("".join(line[start:].split()) for line in lines[top:])


def test_monitoring_status_folds_a_long_error_instead_of_a_block_per_target(columns, capsys):
    """13 targets, one down with a long error (a URL longer than LONG_WORD): at 80 columns the
    table stays a table (one line per target) and the error folds; at 50 it cannot fit."""
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    error = ('Get "http://dex5550.home.arpa:9102/metrics": context deadline exceeded '
             "(Client.Timeout exceeded while awaiting headers)")
    targets = [monitoring.TargetState("p620", host, job, f"{host}:9100", "up",
                                      now - timedelta(seconds=3), "")
               for host in ("p620", "razer", "p510", "dex5550")
               for job in ("node-exporter", "nixos-exporter", "systemd-exporter")]
    targets.append(monitoring.TargetState("p620", "dex5550", "prometheus", "dex5550:9090",
                                          "down", now - timedelta(seconds=3), error))
    status = monitoring.MonitoringStatus(targets, [], [monitoring.Component(
        "p620", "Prometheus", "http://p620:9090/-/ready", True, "ready")])
    monitoring.print_status(status, now)
    out = capsys.readouterr().out
    width = width_of(columns)
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= width, out
    targets_part = out.split("firing alerts")[0]
    if not columns:
        assert len(targets_part.splitlines()) < 30, out  # not 5 lines per target
        assert "".join(error.split()) in column_text(targets_part, "error")
    else:
        assert "".join(error.split()) in "".join(targets_part.split())
    assert_whole(out, words("p620", "razer", "p510", "dex5550", "node-exporter",
                            "nixos-exporter", "systemd-exporter", "prometheus", "down",
                            "deadline", "(Client.Timeout", "headers)", "Prometheus",
                            "(http://p620:9090/-/ready)"), width)


def test_update_flake(columns, capsys, monkeypatch, tmp_path):
    from nixfleet.commands import nix
    from nixfleet.flake_inputs import InputChange, LockedInput

    old = LockedInput("nixpkgs", "0123456789abcdef", 1764000000, None)
    new = LockedInput("nixpkgs", "fedcba9876543210", 1764900000, None)
    home = LockedInput("home-manager", "aaaabbbbccccdddd", 1764000000, None)
    monkeypatch.setattr(nix.flake_inputs, "update_lock", lambda nix_dir, inputs, root: [
        InputChange("nixpkgs", old, new), InputChange("home-manager", home, home),
        InputChange("nixos-hardware", None, LockedInput("nixos-hardware", "1111222233334444",
                                                        1764900000, None))])
    (tmp_path / "nix").mkdir()
    (tmp_path / "nix" / "flake.nix").write_text("{ outputs = _: { }; }\n")
    (tmp_path / "inventory.py").write_text("")
    monkeypatch.setenv("NIXFLEET_TARGET", "fleet")
    nix.cmd_update_flake(argparse.Namespace(inputs=[], inventory=str(tmp_path / "inventory.py")))
    table, summary = capsys.readouterr().out.rstrip("\n").rsplit("\n", 1)
    assert_whole(table, words(
        "nix/flake.lock", "input", "before", "after", "nixpkgs", old.describe(), new.describe(),
        "home-manager", home.describe(), "nixos-hardware", "-"), width_of(columns))
    assert summary.startswith("nix/flake.lock: 2 inputs changed (nixpkgs, nixos-hardware)")


def test_lab_status(columns, capsys):
    from nixfleet.lab import cli as lab_cli

    rows: list[dict[str, Any]] = [
        {"host": "p620", "state": "running", "address": "10.231.0.11", "systemd": "running",
         "generation": 3, "memory_mib": 212},
        {"host": "dex5550", "state": "stopped", "address": "10.231.0.14", "systemd": "-",
         "generation": None, "memory_mib": None}]
    lab_cli._print_status(rows, as_json=False)
    assert_whole(capsys.readouterr().out, words(
        "state", "address", "systemd", "generation", "memory", "(PSS)", "p620",
        "running", "10.231.0.11", "3", "212 MiB", "dex5550", "stopped", "10.231.0.14", "-"),
        width_of(columns))


def test_deploy_summary(columns, capsys):
    """Wider when piped (console.console(piped_width=160)): still nothing cut at $COLUMNS."""
    results = [
        HostOutcome("razer", Action.SWITCH, Result.ROLLED_BACK, "health check failed: service "
                    "ollama: port 11434 does not answer; rolled back to generation 41",
                    generation_before=41, generation_after=41, duration=12.5),
        HostOutcome("p620", Action.SWITCH, Result.UNCHANGED, "already active",
                    generation_before=7, generation_after=7)]
    run = DeployRun.__new__(DeployRun)  # the summary alone: no pyinfra state
    run.verification, run.builds = None, {}
    run.print_summary(results, "nixfleet deploy switch", write=False)
    out = capsys.readouterr().out
    assert_whole(out, words("razer", "switch", "41 -> 41", "rolled-back", "12.50s",
                            results[0].reason, "p620", "7 -> 7", "unchanged", "already active"),
                 width_of(columns) if columns else 160)


def test_a_wide_table_becomes_one_block_per_row(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "40")
    rows = console.table("host", "groups", "address")
    rows.add_row("dex5550", "intel, monitoring_clients, servers, sff", "dex5550.home.arpa:22")
    console.print_table(rows)
    assert [line.rstrip() for line in capsys.readouterr().out.splitlines()] == [
        "dex5550",
        "  groups:  intel, monitoring_clients,",
        "           servers, sff",
        "  address: dex5550.home.arpa:22",
    ]


def test_on_a_terminal_the_terminals_width_is_used(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert console.output_width() is None
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    monkeypatch.setenv("COLUMNS", "132")
    assert console.output_width() == 132
    monkeypatch.delenv("COLUMNS")
    assert console.output_width() == console.PIPED_WIDTH == 80
    assert os.environ.get("COLUMNS") is None

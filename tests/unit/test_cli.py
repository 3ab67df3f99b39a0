"""The nixfleet command's own behaviour: help, bad arguments, generated files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def nixfleet(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nixfleet", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [["--help"], ["inventory", "--help"], ["generate", "--help"],
                                  ["lab", "--help"]])
def test_every_command_has_help(root, args):
    result = nixfleet(*args, cwd=root)
    assert result.returncode == 0
    assert "usage: nixfleet" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["frobnicate"], "nixfleet: error: argument command: invalid choice: 'frobnicate'"),
    ([], "nixfleet: error: the following arguments are required: command"),
    (["inventory", "--jsn"], "nixfleet: error: unrecognized arguments: --jsn"),
    (["--inventory", "missing.py", "inventory"],
     "nixfleet: error: inventory file not found: missing.py"),
    # -i is the age identity (`nixfleet secrets -i KEY`), never the inventory.
    (["-i", "inventory.py", "inventory"], "nixfleet: error: -i is an identity "
     "(`nixfleet secrets -i KEY`); the inventory is --inventory PATH"),
])
def test_bad_arguments_are_one_line(root, args, message):
    result = nixfleet(*args, cwd=root)
    assert result.returncode != 0
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_inventory_is_given_with_inventory_or_its_variable(root, tmp_path):
    by_option = nixfleet("--inventory", str(root / "inventory.py"), "inventory", "--json",
                         cwd=tmp_path)
    assert by_option.returncode == 0, by_option.stderr
    assert {h["name"] for h in json.loads(by_option.stdout)} == {"p620", "razer", "p510",
                                                                 "dex5550"}
    env = {**os.environ, "NIXFLEET_INVENTORY": str(root / "inventory.py")}
    by_variable = subprocess.run([sys.executable, "-m", "nixfleet", "inventory", "--json"],
                                 cwd=tmp_path, capture_output=True, text=True, env=env)
    assert by_variable.stdout == by_option.stdout


def test_inventory_table_shows_every_host(root):
    result = nixfleet("inventory", cwd=root)
    assert result.returncode == 0, result.stderr
    for host in ("p620", "razer", "p510", "dex5550"):
        assert host in result.stdout


def test_generated_files_are_current(root):
    result = nixfleet("generate", "--check", cwd=root)
    assert result.returncode == 0, result.stderr


def test_generated_host_data_is_the_model(root):
    data = json.loads((root / "nix" / "hosts" / "razer.json").read_text())
    assert data["hardware_class"] == "nvidia"
    assert data["prime"]["nvidiaBusId"] == "PCI:1:0:0"
    assert data["features"]["monitoring"]["serverHost"] == "p620"
    assert "ssh" not in data


def test_stale_generated_files_are_found_and_rewritten(root, tmp_path):
    for name in ("inventory.py", "known_hosts"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "group_data", tmp_path / "group_data")
    shutil.copytree(root / "nix" / "hosts", tmp_path / "nix" / "hosts")
    shutil.copytree(root / "nix" / "monitoring", tmp_path / "nix" / "monitoring")
    (tmp_path / "nix" / "lib").mkdir()
    shutil.copy(root / "nix" / "lib" / "ports.json", tmp_path / "nix" / "lib" / "ports.json")
    shutil.copytree(root / "secrets", tmp_path / "secrets")
    shutil.copy(root / "nix" / "secrets.json", tmp_path / "nix" / "secrets.json")
    (tmp_path / "group_data" / "all.py").write_text(
        (tmp_path / "group_data" / "all.py").read_text().replace("Europe/London", "UTC"))
    (tmp_path / "nix" / "hosts" / "gone.json").write_text("{}\n")
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-m", "nixfleet", "generate", "--check"],
                            cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert result.stderr == (
        "nixfleet: error: generated files are stale: nix/hosts/p620.json, nix/hosts/razer.json, "
        "nix/hosts/p510.json, nix/hosts/dex5550.json, nix/hosts/gone.json "
        "(run `nixfleet generate`)\n")
    result = subprocess.run([sys.executable, "-m", "nixfleet", "generate"], cwd=tmp_path,
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "nix" / "hosts" / "gone.json").exists()
    assert json.loads((tmp_path / "nix/hosts/p620.json").read_text())["system"]["timezone"] == "UTC"


def test_each_command_is_found_by_its_name_alone():
    """A command line imports only the module its command names (nixfleet.cli.COMMANDS): each
    module registers exactly the commands listed for it, and a parser built for one command
    line parses it as the whole parser does."""
    import argparse
    from importlib import import_module

    from nixfleet.cli import COMMANDS, build_parser

    for module in set(COMMANDS.values()):
        commands = argparse.ArgumentParser().add_subparsers()
        import_module(module).register(commands)
        assert set(commands.choices) == {n for n, m in COMMANDS.items() if m == module}
    line = ["--inventory", "inventory.py", "status", "--limit", "razer", "--json"]
    assert build_parser(line).parse_args(line) == build_parser().parse_args(line)

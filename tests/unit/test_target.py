"""NIXFLEET_TARGET chosen once: a target object that answers what differs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nixfleet.errors import InventoryError
from nixfleet.fleet_target import FleetTarget
from nixfleet.inventory import fleet_connection, load_inventory_file
from nixfleet.lab.config import LabPaths, host_address
from nixfleet.lab.target import LAB_NIX_CONFIG, LabTarget
from nixfleet.target import Target, current_target, target_named

ROOT = Path(__file__).resolve().parents[2]


def test_the_fleet_is_the_default_and_each_target_is_made_once(monkeypatch):
    monkeypatch.delenv("NIXFLEET_TARGET", raising=False)
    assert isinstance(current_target(), FleetTarget)
    assert current_target() is current_target() is target_named("fleet")
    monkeypatch.setenv("NIXFLEET_TARGET", "lab")
    assert isinstance(current_target(), LabTarget) and current_target().name == "lab"


def test_an_unknown_target_names_the_known_ones(monkeypatch):
    monkeypatch.setenv("NIXFLEET_TARGET", "labb")
    with pytest.raises(InventoryError, match=r"^NIXFLEET_TARGET: unknown target 'labb' "
                                             r"\(known: fleet, lab\)$"):
        current_target()


def test_what_differs_between_the_fleet_and_the_lab(tmp_path):
    fleet, lab = FleetTarget(), LabTarget(LabPaths(tmp_path / "state", tmp_path / "cache"))
    assert isinstance(fleet, Target) and isinstance(lab, Target)
    assert fleet.flake_ref("/etc/nixos") == "path:/etc/nixos?dir=nix"
    assert lab.flake_ref("/etc/nixos") == "path:/etc/nixos"
    assert fleet.local_nix(tmp_path) == "" and lab.local_nix(tmp_path) == LAB_NIX_CONFIG
    entries = [("a", {"x": 1}), ("b", {"x": 2})]
    assert fleet.host_entries(entries) == (entries, {})
    assert fleet.connection(entries) is fleet_connection


def test_the_lab_adds_its_extra_hosts_from_its_state_file(tmp_path):
    paths = LabPaths(tmp_path / "state", tmp_path / "cache")
    lab = LabTarget(paths)
    entries = [("a", {"x": 1}), ("b", {"x": 2})]
    assert lab.host_entries(entries) == (entries, {"lab_extra": []})
    paths.state.mkdir(parents=True)
    paths.state_file.write_text(json.dumps({"extra": 3}))
    all_entries, groups = lab.host_entries(entries)
    assert [name for name, _ in all_entries] == ["a", "b", "a-x1", "b-x2", "a-x3"]
    assert groups == {"lab_extra": ["a-x1", "b-x2", "a-x3"]}


def test_an_inventory_loads_for_the_target_it_is_given(monkeypatch, tmp_path):
    monkeypatch.setenv("NIXFLEET_TARGET", "fleet")
    paths = LabPaths(tmp_path / "state", tmp_path / "cache")
    real = load_inventory_file(ROOT / "inventory.py")
    lab = load_inventory_file(ROOT / "inventory.py", LabTarget(paths))
    assert list(real.hosts) == list(lab.hosts)
    first = next(iter(lab.hosts))
    assert lab.host_data[first]["ssh_hostname"] == host_address(0)
    assert lab.host_data[first]["ssh_key"] == str(paths.key)
    assert real.host_data[first]["ssh_hostname"] == real.hosts[first].address
    # The target given is for that load only.
    assert load_inventory_file(ROOT / "inventory.py").host_data == real.host_data

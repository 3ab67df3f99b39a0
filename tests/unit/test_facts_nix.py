"""Generation parsers: nixos-rebuild's JSON and the profile-link fallback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nixfleet.facts.errors import FactParseError
from nixfleet.facts.nix import (
    PROFILE_LINKS_COMMAND,
    Generation,
    parse_list_generations_json,
    parse_profile_links,
    profile_links_command,
)


def test_list_generations_json_newest_first_with_the_current_one_marked(captured) -> None:
    generations = parse_list_generations_json(captured("nix/nixos-rebuild-list-generations.json"))

    assert [g.generation for g in generations] == [1689, 1688, 1687, 1686]
    assert generations[0] == Generation(
        generation=1689,
        date="2024-06-02 00:20:26",
        nixos_version="graphical-workstation-24.11.20240527.9ca3f64",
        kernel_version="6.9.1-xanmod1",
        configuration_revision="dirty",
        specialisations=(),
        current=True,
    )
    assert [g.current for g in generations] == [True, False, False, False]


def test_unknown_values_are_none(captured) -> None:
    generations = parse_list_generations_json(
        captured("nix/nixos-rebuild-list-generations-unknown.json")
    )

    assert [g.generation for g in generations] == [2, 1]
    assert {(g.nixos_version, g.kernel_version, g.configuration_revision) for g in generations} == {
        (None, None, None)
    }


def test_specialisations_are_kept() -> None:
    text = (
        '[{"generation": 7, "date": "2025-01-01 10:00:00", "nixosVersion": "25.05.1",'
        ' "kernelVersion": "6.12.1", "configurationRevision": "", "specialisations":'
        ' ["gaming", "on-the-go"], "current": true}]'
    )

    (generation,) = parse_list_generations_json(text)

    assert generation.specialisations == ("gaming", "on-the-go")
    assert generation.configuration_revision is None


@pytest.mark.parametrize(
    "text", ["error: unknown action", "{}", '[{"generation": 1}]', '[{"generation": "x"}]']
)
def test_list_generations_garbage_raises(text: str) -> None:
    with pytest.raises(FactParseError, match="nixos-rebuild list-generations --json"):
        parse_list_generations_json(text)


def test_profile_links_after_a_rollback(captured) -> None:
    generations = parse_profile_links(captured("nix/profile-links-razer.txt"))

    assert [(g.generation, g.current) for g in generations] == [
        (42, False),
        (41, True),
        (40, False),
    ]
    assert generations[1] == Generation(
        generation=41,
        date="2025-06-14 18:02:47",
        nixos_version="25.05.20250612.fd48720",
        kernel_version=None,
        configuration_revision=None,
        specialisations=(),
        current=True,
        store_path="/nix/store/7ffsm2bby8xa4hb9m60vq3a8j1ayjfx1-nixos-system-razer-25.05.20250612.fd48720",
    )


def test_no_profiles_means_no_generations() -> None:
    assert parse_profile_links("") == []


def test_profile_links_garbage_raises() -> None:
    with pytest.raises(FactParseError, match="expected NAME MTIME TARGET"):
        parse_profile_links("find: '/nix/var/nix/profiles': No such file or directory\n")
    with pytest.raises(FactParseError, match="bad mtime"):
        parse_profile_links("system-1-link\tyesterday\t/nix/store/x\n")


def test_the_profile_command_on_real_links(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for number, stamp in ((1, 1_700_000_000), (2, 1_700_000_600), (10, 1_700_001_200)):
        link = profiles / f"system-{number}-link"
        link.symlink_to(f"/nix/store/{number:032d}-nixos-system-dex5550-25.05.2025061{number % 10}")
        os.utime(link, (stamp, stamp), follow_symlinks=False)
    (profiles / "system").symlink_to("system-10-link")
    (profiles / "per-user").mkdir()
    (profiles / "system-profiles").mkdir()

    command = profile_links_command(str(profiles / "system")).get_raw_value()
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)

    generations = parse_profile_links(output.stdout)
    assert [(g.generation, g.current, g.date) for g in generations] == [
        (10, True, "2023-11-14 22:33:20"),
        (2, False, "2023-11-14 22:23:20"),
        (1, False, "2023-11-14 22:13:20"),
    ]


def test_the_default_profile_command() -> None:
    assert PROFILE_LINKS_COMMAND == (
        "find /nix/var/nix/profiles -maxdepth 1 \\( -name system -o -name 'system-*-link' \\)"
        " -printf '%f\\t%T@\\t%l\\n'"
    )


def _toplevel(store: Path, name: str, kernel: str) -> Path:
    top = store / f"{name}-nixos-system-razer-26.05"
    (store / kernel).mkdir(parents=True, exist_ok=True)
    (store / kernel / "bzImage").write_text("k")
    (store / f"initrd-{name}").write_text("i")
    top.mkdir()
    (top / "kernel").symlink_to(store / kernel / "bzImage")
    (top / "initrd").symlink_to(store / f"initrd-{name}")
    (top / "kernel-modules").symlink_to(store / f"modules-{kernel}")  # dangling: still named
    (top / "nixos-version").write_text("26.05.lab")
    return top


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_the_system_links_command_on_real_links(tmp_path: Path, shell: str) -> None:
    """current and booted with their kernel, initrd and modules, read by one readlink each;
    a kernel whose link points into a missing directory reads as unknown, the others keep
    their own fields."""
    from nixfleet.facts.parsers.nix import parse_system_links, system_links_command

    store, run = tmp_path / "store", tmp_path / "run"
    run.mkdir()
    current = _toplevel(store, "new", "linux-6.12")
    booted = _toplevel(store, "old", "linux-6.6")
    (run / "current-system").symlink_to(current)
    (run / "booted-system").symlink_to(booted)
    output = subprocess.run([shell, "-c", system_links_command(str(run))], capture_output=True,
                            text=True, check=True)
    system = parse_system_links(output.stdout)
    assert system.current is not None and system.booted is not None
    assert (system.current.store_path, system.current.kernel, system.current.initrd,
            system.current.kernel_modules, system.current.nixos_version) == (
        str(current), str(store / "linux-6.12" / "bzImage"), str(store / "initrd-new"),
        str(store / "modules-linux-6.12"), "26.05.lab")
    assert system.booted.kernel == str(store / "linux-6.6" / "bzImage")
    assert system.reboot_required

    (booted / "kernel").unlink()
    (booted / "kernel").symlink_to(store / "gone" / "bzImage")
    output = subprocess.run([shell, "-c", system_links_command(str(run))], capture_output=True,
                            text=True, check=True)
    again = parse_system_links(output.stdout).booted
    assert again is not None
    assert (again.store_path, again.kernel, again.initrd) == (
        str(booted), None, str(store / "initrd-old"))

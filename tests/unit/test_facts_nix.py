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

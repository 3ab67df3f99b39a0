"""`nixfleet gc`: which generations go (never the current, booted or rollback target), what
the boot partition would free, and bad input as one line."""

from __future__ import annotations

import pytest

from nixfleet.cli import main
from nixfleet.facts.parsers.boot import BootGeneration, BootSpace
from nixfleet.gc import Generation, HostGenerations, act_script, boot_free_after, parse_read, plan
from nixfleet.model import Boot

DAY = 86400.0
NOW = 1_000 * DAY


def host(numbers: range, profile: int, current: int | None = None, booted: int | None = None,
         space: BootSpace | None = None) -> HostGenerations:
    gens = tuple(Generation(n, NOW - (100 - n) * DAY, f"/nix/store/s{n}") for n in numbers)
    current_system = f"/nix/store/s{current or profile}"
    space = space or BootSpace(booted=f"/nix/store/s{booted or profile}")
    return HostGenerations(gens, profile, current_system, space)


def test_the_newest_keep_generations_stay_and_older_ones_go():
    chosen = plan(host(range(1, 11), profile=10), keep=3, now=NOW)

    assert chosen.delete == (1, 2, 3, 4, 5, 6, 7)
    assert chosen.keep == (8, 9, 10)


def test_never_the_current_booted_or_rollback_target_even_with_keep_one():
    # Running 5 after a `test` of it, profile at 7, booted from 2: all stay; 6 is the
    # rollback target (the newest before the profile's current).
    chosen = plan(host(range(1, 8), profile=7, current=5, booted=2), keep=1, now=NOW)

    assert chosen.protected == {2: "booted", 5: "current", 6: "rollback target",
                                7: "current"}
    assert chosen.delete == (1, 3, 4)


def test_after_a_rollback_the_current_and_the_one_before_it_stay():
    # The profile went back to 4 (a rollback); 5 is the newest (kept by --keep 1).
    chosen = plan(host(range(1, 6), profile=4, booted=4), keep=1, now=NOW)

    assert chosen.protected == {3: "rollback target", 4: "current"}
    assert chosen.delete == (1, 2)


def test_older_than_deletes_only_old_generations():
    chosen = plan(host(range(1, 11), profile=10), keep=1, older_than=95, now=NOW)

    # Generation n is 100 - n days old: 1-4 are older than 95 days.
    assert chosen.delete == (1, 2, 3, 4)


def test_keep_must_be_at_least_one():
    with pytest.raises(ValueError, match="keep must be at least 1"):
        plan(host(range(1, 3), profile=2), keep=0)


@pytest.mark.parametrize(("argv", "line"), [
    (["gc", "--keep", "0"],
     "nixfleet: error: argument --keep: --keep must be a whole number of at least 1, got '0' "
     "(see `nixfleet gc --help`)"),
    (["gc", "--keep", "two"],
     "nixfleet: error: argument --keep: --keep must be a whole number of at least 1, got "
     "'two' (see `nixfleet gc --help`)"),
    (["gc", "--older-than", "-3"],
     "nixfleet: error: argument --older-than: --older-than must be a number of days (0 or "
     "more), got '-3' (see `nixfleet gc --help`)"),
    (["gc", "--bogus"],
     "nixfleet: error: unrecognized arguments: --bogus (see `nixfleet --help`)"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, line, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)

    assert exit.value.code == 2
    assert capsys.readouterr().err.strip() == line


def test_a_limit_that_matches_nothing_is_one_line_and_exit_1(capsys):
    assert main(["--inventory", "inventory.py", "gc", "--limit", "nvidai", "--dry"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("nixfleet: error: --limit 'nvidai' matches no host or group")
    assert "\n" not in err


def test_boot_free_after_counts_files_the_loader_would_remove():
    old = BootGeneration(1, "/nix/store/k1-linux", "/nix/store/i1-initrd", 100, 1000)
    mid = BootGeneration(2, "/nix/store/k1-linux", "/nix/store/i2-initrd", 100, 1000)
    new = BootGeneration(3, "/nix/store/k1-linux", "/nix/store/i3-initrd", 100, 1000)
    files = {**old.efi_files(), **mid.efi_files(), **new.efi_files()}
    space = BootSpace(mount="/boot", size=10_000, free=7_000, files=files,
                      generations=(old, mid, new))
    found = host(range(1, 4), profile=3, space=space)

    # Generation 1 goes: its initrd goes with it, the kernel all three share stays.
    assert boot_free_after(found, (2, 3), Boot(configurationLimit=5)) == 8_000


def test_the_read_script_output_is_parsed():
    found = parse_read("\n".join([
        "profile system-3-link",
        "gen system-2-link 1700000000 /nix/store/aaa-nixos-system",
        "gen system-3-link 1700000100 /nix/store/bbb-nixos-system",
        "current /nix/store/bbb-nixos-system",
        "boot-fs /boot 8351744 5796864",
        "booted /nix/store/aaa-nixos-system",
    ]))

    assert [g.number for g in found.generations] == [2, 3]
    assert found.profile == 3 and found.rollback_target == 2
    assert found.space.free == 5796864 and found.space.booted == "/nix/store/aaa-nixos-system"


def test_the_deletion_runs_under_the_deploy_lock_and_rewrites_the_boot_entries():
    script = act_script((1, 2))

    assert script.index("flock -n 9") < script.index("--delete-generations 1 2")
    assert script.index("--delete-generations") < script.index("switch-to-configuration boot")
    assert script.index("switch-to-configuration boot") < script.index("nix-store --gc")

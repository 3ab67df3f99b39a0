"""The boot partition in the lab: razer's (511 "MiB", three generations' kernels and initrds)
fills as the real one did, the deploy's pre-flight refuses the next generation without
touching the host, `nixfleet gc --boot` makes room, and the deploy then works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.conftest import ROOT, nixfleet, on, wait_until
from tests.lab.test_deploys import DEX_DEVELOPMENT, copy_of_the_configuration, deploy, generation

pytestmark = pytest.mark.usefixtures("lab")
RAZER_BOOT = '"boot": {"configurationLimit": 2, "espSize": 511, "entrySize": 170},'


def razer_with(repo: Path, driver: str, dex_go: bool = False) -> None:
    """razer with a boot limit its ESP cannot hold (4: each generation here brings a kernel
    module set of its own, so a new initrd) and the given NVIDIA driver branch (and dex5550
    developing in Go: a change of its own)."""
    inventory = repo / "inventory.py"
    text = (ROOT / "inventory.py").read_text()
    if dex_go:
        assert DEX_DEVELOPMENT in text
        text = text.replace(DEX_DEVELOPMENT, DEX_DEVELOPMENT.replace('"nix": True',
                                                                     '"nix": True, "go": True'))
    start = text.index('("razer", {')
    entry = text.index(RAZER_BOOT, start)
    end = entry + len(RAZER_BOOT)
    inventory.write_text(
        text[:entry] + '"boot": {"configurationLimit": 4, "espSize": 511}, "graphics": '
        f'{{"videoDriver": "nvidia", "compute": "cuda", "nvidiaPackage": "{driver}", '
        '"nvidiaOpen": False},' + text[end:])


def host_state() -> dict[str, str]:
    """What a refused deploy must leave as it was: the system, the flake, the boot files."""
    return {
        "generation": on("razer", "readlink /nix/var/nix/profiles/system").stdout,
        "current": on("razer", "readlink -f /run/current-system").stdout,
        "flake": on("razer", "cd /etc/nixos && find . -type f | sort | xargs sha256sum").stdout,
        "boot": on("razer", "cd /boot && find . -type f -printf '%s %p\\n' | sort && "
                            "cat loader/loader.conf loader/entries/*").stdout,
    }


def reboot_razer() -> None:
    """Reboot razer and wait until it runs again (the boot partition survives it)."""
    before = on("razer", "cat /proc/sys/kernel/random/boot_id").stdout
    on("razer", "systemctl reboot", check=False)
    wait_until(lambda: on("razer", "cat /proc/sys/kernel/random/boot_id; systemctl "
                                   "is-system-running --wait", check=False).stdout.split()[:1]
               not in ([], before.split()[:1]), 120, "razer to come back from its reboot")
    booted = on("razer", "readlink -f /run/booted-system").stdout
    assert booted == on("razer", "readlink -f /nix/var/nix/profiles/system").stdout


def gc(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NIXFLEET_TARGET": "lab"}
    return subprocess.run([sys.executable, "-m", "nixfleet", "gc", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)


def test_a_full_boot_partition_fails_pre_flight_untouched_and_gc_boot_makes_room(tmp_path):
    nixfleet("lab", "reset", "razer")
    repo = copy_of_the_configuration(tmp_path)
    try:
        # Generation 2 (production driver), then 3 (legacy 580) booted: three generations'
        # boot files, about 7.2 MiB of the 8 MiB partition.
        razer_with(repo, "production")
        result, summary = deploy(repo, "switch", "--limit", "razer")
        assert summary["razer"]["result"] == "changed", result.stdout + result.stderr
        razer_with(repo, "legacy_580")
        result, summary = deploy(repo, "switch", "--limit", "razer")
        assert summary["razer"]["result"] == "changed", result.stdout + result.stderr
        assert generation("razer") == 3
        reboot_razer()
        assert on("razer", "ls /boot/EFI/nixos | grep -c initrd").stdout.strip() == "3"

        # The fourth does not fit: refused before anything on the host changes; dex5550, in
        # the same deploy, goes on.
        razer_with(repo, "beta", dex_go=True)
        before = host_state()
        result, summary = deploy(repo, "switch", "--limit", "razer", "--limit", "dex5550")
        assert result.returncode == 1
        assert summary["dex5550"]["result"] == "changed", result.stdout + result.stderr
        assert summary["razer"]["result"] == "failed"
        reason = summary["razer"]["reason"]
        assert reason.startswith("pre-flight: boot partition /boot: needs 2.7 MiB free for the "
                                 "new generation's boot files (configurationLimit 4; a new entry "
                                 "estimated at 2.4 MiB, 256 KiB guard), has "), reason
        assert reason.endswith("run `nixfleet gc --boot --limit razer`"), reason
        assert summary["razer"]["generation_before"] == summary["razer"]["generation_after"] == 3
        assert host_state() == before
        assert "pre-flight" in result.stdout

        # gc --boot: generation 1 goes (2 is the rollback target, 3 current and booted); the
        # boot entries are rewritten and its kernel and initrd leave the partition.
        dry = gc("--boot", "--limit", "razer", "--dry")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "would delete generation 1; keeps 2 (rollback target), 3 (current)" in dry.stdout
        assert host_state() == before
        cleaned = gc("--boot", "--limit", "razer", "-y", "--json")
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
        row = json.loads(cleaned.stdout)[0]
        assert (row["generations_before"], row["generations_after"], row["deleted"]) == (3, 2, [1])
        # Its initrd (2240 KiB): the kernel is the same one the others boot.
        assert row["boot_free_after"] - row["boot_free_before"] >= 2240 * 1024
        assert row["store_freed"] and row["store_freed"] > 0
        assert on("razer", "ls /nix/var/nix/profiles | grep -c 'system-.*-link'"
                  ).stdout.strip() == "2"

        # The deploy now fits.
        result, summary = deploy(repo, "switch", "--limit", "razer")
        assert summary["razer"]["result"] == "changed", result.stdout + result.stderr
        assert generation("razer") == 4
    finally:
        nixfleet("lab", "reset", "razer", "dex5550")

"""Old system generations out, boot entries rewritten, the store collected: `nixfleet gc`.

Per host, two SSH commands: READ_SCRIPT (generations with their dates and systems, the current,
booted and profile systems, the boot partition: nixfleet.facts.parsers.boot), then, unless
--dry, the deletion under the host's deploy lock (a deploy and a gc never run at once):

    nix-env -p /nix/var/nix/profiles/system --delete-generations N...
    /nix/var/nix/profiles/system/bin/switch-to-configuration boot    # the boot entries again
    nix-store --gc

`plan` decides which generations go. Never one that is current (the profile's, or the one
running), booted, or the rollback target (the newest one before the profile's current, which
a deploy's rollback returns to). Of the others, the newest `keep` stay, and with `older_than`
only those older than that many days go.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from nixfleet.facts.parsers.boot import BOOT_SPACE_SCRIPT, BootSpace, parse_boot_space
from nixfleet.model import Boot
from nixfleet.ssh import ssh_argv

PROFILE = "/nix/var/nix/profiles/system"
STATE_DIR = "/var/lib/nixfleet"  # deploy.sh's lock (flock on the directory)
HOLDER = "/run/nixfleet/holder"

READ_SCRIPT = (
    "export LC_ALL=C;"
    f' echo "profile $(readlink {PROFILE})";'
    f" for l in {PROFILE}-*-link; do [ -L \"$l\" ] || continue;"
    ' echo "gen ${l##*/} $(stat -c %Y "$l") $(readlink -f "$l")"; done;'
    ' echo "current $(readlink -f /run/current-system)";'
    f" {BOOT_SPACE_SCRIPT}"
)
FREED = re.compile(r"(\d+) store paths deleted, ([\d.]+) (bytes|KiB|MiB|GiB|TiB) freed")
UNITS = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


@dataclass(frozen=True)
class Generation:
    number: int
    date: float  # seconds since the epoch (its profile link's)
    system: str


@dataclass(frozen=True)
class HostGenerations:
    """What READ_SCRIPT found on a host."""

    generations: tuple[Generation, ...]
    profile: int | None  # the profile's current generation
    current: str | None  # the running system
    space: BootSpace

    @property
    def rollback_target(self) -> int | None:
        if self.profile is None:
            return None
        older = [g.number for g in self.generations if g.number < self.profile]
        return max(older) if older else None


def parse_read(text: str) -> HostGenerations:
    generations, boot, values = [], [], {}
    for line in text.splitlines():
        key, _, rest = line.partition(" ")
        if key == "gen":
            link, date, system = [*rest.split(" ", 2), "", ""][:3]
            number = link.removeprefix("system-").removesuffix("-link")
            if number.isdigit() and date.isdigit():
                generations.append(Generation(int(number), float(date), system.strip()))
        elif key in ("profile", "current"):
            values[key] = rest.strip()
        elif line.strip():
            boot.append(line)
    profile = values.get("profile", "").removeprefix("system-").removesuffix("-link")
    return HostGenerations(tuple(sorted(generations, key=lambda g: g.number)),
                           int(profile) if profile.isdigit() else None,
                           values.get("current") or None, parse_boot_space(boot))


@dataclass(frozen=True)
class GcPlan:
    delete: tuple[int, ...]
    keep: tuple[int, ...]
    protected: dict[int, str] = field(default_factory=dict)  # number -> why it stays


def plan(host: HostGenerations, keep: int, older_than: float | None = None,
         now: float | None = None) -> GcPlan:
    """Which generations to delete.

    + host: what READ_SCRIPT found
    + keep: how many of the newest generations stay in any case (at least 1)
    + older_than: days; only generations older than that go (None: any age)
    + now: the time to measure age from (seconds since the epoch; default now)
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    protected: dict[int, str] = {}
    booted = host.space.booted
    for g in host.generations:
        if g.number == host.profile or (host.current and g.system == host.current):
            protected[g.number] = "current"
        elif booted and g.system == booted:
            protected[g.number] = "booted"
        elif g.number == host.rollback_target:
            protected[g.number] = "rollback target"
    newest = {g.number for g in host.generations[-keep:]}
    cutoff = None if older_than is None else (now or time.time()) - older_than * 86400
    delete = tuple(g.number for g in host.generations
                   if g.number not in protected and g.number not in newest
                   and (cutoff is None or g.date < cutoff))
    return GcPlan(delete, tuple(g.number for g in host.generations if g.number not in delete),
                  protected)


def boot_free_after(host: HostGenerations, kept: tuple[int, ...], boot: Boot) -> int | None:
    """The boot partition's free bytes once the loader has rewritten its entries for the
    generations left (what --dry reports as would-be)."""
    space = host.space
    if space.free is None:
        return None
    left = [g for g in space.generations if g.number in kept][-boot.configurationLimit:]
    if boot.loader == "lanzaboote":
        wanted_images = {g.number for g in left}
        freed = sum(size for name, size in space.files.items()
                    if name.startswith("EFI/Linux/nixos-generation-")
                    and _image_generation(name) not in wanted_images)
        missing = sum(g.size for g in left if not g.has_image(space.files))
        return space.free + freed - missing
    wanted: dict[str, int] = {}
    for g in left:
        wanted.update(g.efi_files())
    freed = sum(size for name, size in space.files.items()
                if name.startswith("EFI/nixos/") and name not in wanted)
    missing = sum(size for name, size in wanted.items() if name not in space.files)
    return space.free + freed - missing


def _image_generation(name: str) -> int | None:
    number = name.removeprefix("EFI/Linux/nixos-generation-").split("-", 1)[0]
    return int(number) if number.isdigit() else None


def act_script(delete: tuple[int, ...]) -> str:
    """Delete the generations, rewrite the boot entries, collect garbage, under the deploy
    lock; it prints `freed BYTES`-style lines nix-store --gc gives, and `boot-fs` after."""
    numbers = " ".join(str(n) for n in delete)
    return (
        "export LC_ALL=C;"
        f" mkdir -p {STATE_DIR}; exec 9<{STATE_DIR};"
        f' flock -n 9 || {{ echo "locked by a deploy: $(cat {HOLDER} 2>/dev/null)" >&2;'
        " exit 75; };"
        + (f" nix-env -p {PROFILE} --delete-generations {numbers} >&2 || exit 1;"
           if numbers else "")
        + f" {PROFILE}/bin/switch-to-configuration boot >&2"
        " || { echo 'rewriting the boot entries failed' >&2; exit 1; };"
        " nix-store --gc 2>&1 | tail -n 1;"
        " esp=/boot; for m in /boot/efi /efi; do mountpoint -q $m 2>/dev/null && esp=$m && break;"
        ' done; [ -d "$esp" ] && echo "boot-fs $esp $(df -B1 --output=size,avail "$esp"'
        ' | tail -n 1)"; true'
    )


@dataclass
class HostGc:
    """One host's row: generations before and after, boot space, what the store freed."""

    host: str
    generations_before: int | None = None
    generations_after: int | None = None
    deleted: tuple[int, ...] = ()
    boot_free_before: int | None = None
    boot_free_after: int | None = None
    store_freed: int | None = None
    ok: bool = True
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "generations_before": self.generations_before,
                "generations_after": self.generations_after, "deleted": list(self.deleted),
                "boot_free_before": self.boot_free_before,
                "boot_free_after": self.boot_free_after, "store_freed": self.store_freed,
                "ok": self.ok, "reason": self.reason}


def _ssh(data: dict[str, Any], script: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([*ssh_argv(data), "sh", "-c", shlex.quote(script)],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _failure(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit {result.returncode}"


def read_host(name: str, data: dict[str, Any], timeout: float = 60
              ) -> tuple[HostGenerations | None, str]:
    try:
        result = _ssh(data, READ_SCRIPT, timeout)
    except subprocess.TimeoutExpired:
        return None, f"no answer within {timeout:g} s"
    if result.returncode != 0:
        return None, f"ssh: {_failure(result)}"
    return parse_read(result.stdout), ""


def collect(name: str, data: dict[str, Any], host: HostGenerations, chosen: GcPlan,
            boot: Boot, dry: bool, timeout: float = 600) -> HostGc:
    """Carry out (or, dry, only describe) one host's plan."""
    row = HostGc(name, len(host.generations), len(chosen.keep), chosen.delete,
                 host.space.free, boot_free_after(host, chosen.keep, boot))
    if dry:
        row.reason = _would(chosen)
        return row
    try:
        result = _ssh(data, act_script(chosen.delete), timeout)
    except subprocess.TimeoutExpired:
        row.ok, row.reason = False, f"no answer within {timeout:g} s"
        return row
    if result.returncode != 0:
        row.ok = False
        row.generations_after = row.boot_free_after = None
        row.reason = (_failure(result) if result.returncode != 255
                      else f"ssh: {_failure(result)}")
        return row
    after = parse_boot_space([line for line in result.stdout.splitlines()
                              if line.startswith("boot-fs ")])
    row.boot_free_after = after.free
    found = FREED.search(result.stdout)
    if found:
        row.store_freed = int(float(found[2]) * UNITS[found[3]])
    row.reason = (f"deleted {_numbers(chosen.delete)}" if chosen.delete
                  else "nothing to delete") + "; boot entries rewritten"
    return row


def _numbers(numbers: tuple[int, ...]) -> str:
    return "generation" + ("s " if len(numbers) > 1 else " ") + ", ".join(map(str, numbers))


def _would(chosen: GcPlan) -> str:
    kept = ", ".join(f"{n} ({why})" for n, why in sorted(chosen.protected.items()))
    text = f"would delete {_numbers(chosen.delete)}" if chosen.delete else "nothing to delete"
    return text + (f"; keeps {kept}" if kept else "")

"""What a host's boot partition and Nix store hold, for a deploy's pre-flight and `nixfleet gc`.

BOOT_ROOM_SCRIPT prints the partition's and the store's room and the booted system (what
`nixfleet status` shows), BOOT_FILES_SCRIPT after it what the boot partition holds, and
CLOSURE_SCRIPT after both the current system's closure (the pre-flight's alone):

    boot-fs MOUNT SIZE FREE          the boot partition (ESP: /boot/efi, /efi or /boot), bytes
    booted PATH                      the booted system
    store-free BYTES                 free bytes where /nix/store is
    boot-file SIZE PATH              each file of EFI/nixos and EFI/Linux, relative to MOUNT
    boot-gen N KERNEL INITRD KSIZE ISIZE   each system generation's kernel and initrd
    closure BYTES                    the current system's closure (NAR bytes)

BOOT_SPACE_SCRIPT is the first two, what a deploy's pre-flight (with CLOSURE_SCRIPT, in the
HostDeployState fact's command) and `nixfleet gc` read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from nixfleet.facts.parsers.errors import FactParseError
from nixfleet.facts.results import FactResult

# One df for the partition and the store: after its header, FILE SIZE AVAIL for each argument
# it could read, taken apart by the shell itself (processes are most of this script's cost;
# exec: bash starts a second process for a command substitution with a redirection).
BOOT_ROOM_SCRIPT = (
    "esp=/boot; for m in /boot/efi /efi; do [ -d $m ] && mountpoint -q $m 2>/dev/null && esp=$m"
    ' && break; done; [ -d "$esp" ] || esp=; bf=; sf=;'
    ' set -- $(exec df -B1 --output=file,size,avail ${esp:+"$esp"} /nix/store 2>/dev/null);'
    ' while [ $# -ge 3 ]; do case $1 in /nix/store) sf=$3;; "$esp") bf="$2 $3";; esac; shift 3;'
    ' done; [ -n "$esp" ] && echo "boot-fs $esp $bf";'
    ' echo "booted $(readlink -f /run/booted-system)"; echo "store-free $sf";'
)
# sh (dash on Debian, bash on NixOS): two forks per generation. After BOOT_ROOM_SCRIPT, which
# sets $esp.
BOOT_FILES_SCRIPT = (
    '[ -d "$esp" ] && (cd "$esp" && find EFI/nixos EFI/Linux -maxdepth 1 -type f'
    " -printf 'boot-file %s %p\\n' 2>/dev/null);"
    " for l in /nix/var/nix/profiles/system-*-link; do [ -e \"$l/kernel\" ] || continue;"
    ' n=${l##*/system-}; n=${n%-link};'
    ' echo "boot-gen $n" $(readlink -f "$l/kernel" "$l/initrd")'
    ' $(stat -L -c %s "$l/kernel" "$l/initrd" 2>/dev/null); done; true;'
)
BOOT_SPACE_SCRIPT = f"{BOOT_ROOM_SCRIPT} {BOOT_FILES_SCRIPT}"
# The current system's closure, for a deploy's pre-flight only (after BOOT_ROOM_SCRIPT, which
# sets $sf): a nix process (30-80 ms of a host's CPU), so asked only where the store has less
# than STORE_ROOM free: with more, no closure comes near it (the real fleet's NixStoreSize
# alert is at 50 GiB for the store).
STORE_ROOM = 64 * 2**30
CLOSURE_SCRIPT = (
    f'[ "${{sf:-0}}" -lt {STORE_ROOM} ] 2>/dev/null && echo "closure $(nix'
    " --extra-experimental-features nix-command path-info -S /run/current-system 2>/dev/null"
    " | awk '{print $NF}')\"; true;"
)
BOOT_KEYS = ("boot-fs", "boot-file", "boot-gen", "booted", "store-free", "closure")


@dataclass(frozen=True)
class BootGeneration:
    number: int
    kernel: str
    initrd: str
    kernel_size: int
    initrd_size: int

    @property
    def size(self) -> int:
        """Its boot files' bytes: kernel and initrd (a unified image holds both)."""
        return self.kernel_size + self.initrd_size

    def efi_files(self) -> dict[str, int]:
        """systemd-boot's copies of its kernel and initrd: EFI/nixos/<name>.efi, one per
        store file, shared by every generation that boots it."""
        return {efi_name(self.kernel): self.kernel_size, efi_name(self.initrd): self.initrd_size}

    def has_image(self, files: dict[str, int]) -> bool:
        """lanzaboote: its unified image EFI/Linux/nixos-generation-N-*.efi is there."""
        prefix = f"EFI/Linux/nixos-generation-{self.number}-"
        return any(name.startswith(prefix) for name in files)


def efi_name(store_file: str) -> str:
    """Where systemd-boot-builder.py copies a store file: a file right in the store keeps its
    name, one inside a store path gets the path's name before it (`<hash>-linux-6.6-bzImage`)."""
    parent, name = os.path.split(store_file)
    if parent != "/nix/store":
        name = f"{os.path.basename(parent)}-{name}"
    return f"EFI/nixos/{name}.efi"


@dataclass(frozen=True)
class BootSpace(FactResult):
    """A host's boot partition, its system generations' boot files and its store's room."""

    mount: str | None = None
    size: int | None = None
    free: int | None = None
    files: dict[str, int] = field(default_factory=dict)
    generations: tuple[BootGeneration, ...] = ()
    booted: str | None = None
    store_free: int | None = None
    closure: int | None = None

    def generation(self, number: int | None) -> BootGeneration | None:
        return next((g for g in self.generations if g.number == number), None)

    @property
    def used(self) -> int:
        """Bytes of boot files (EFI/nixos and EFI/Linux)."""
        return sum(self.files.values())


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def parse_boot_space(lines: list[str]) -> BootSpace:
    """Parse BOOT_SPACE_SCRIPT's lines (other lines are not given to it).

    + lines: the script's output lines, each starting with one of BOOT_KEYS
    """
    values: dict[str, str] = {}
    files: dict[str, int] = {}
    generations = []
    for line in lines:
        key, _, rest = line.partition(" ")
        parts = rest.split()
        if key == "boot-file" and len(parts) >= 2 and parts[0].isdigit():
            files[rest.split(" ", 1)[1]] = int(parts[0])
        elif key == "boot-gen":
            if len(parts) != 5 or not all(p.isdigit() for p in (parts[0], *parts[3:])):
                continue  # a generation whose kernel or initrd is gone from the store
            generations.append(BootGeneration(int(parts[0]), parts[1], parts[2],
                                              int(parts[3]), int(parts[4])))
        elif key in BOOT_KEYS:
            values[key] = rest.strip()
        else:
            raise FactParseError("boot space", "unexpected line", "\n".join(lines))
    mount = size = free = None
    fs = values.get("boot-fs", "").split()
    if len(fs) == 3:
        mount, size, free = fs[0], _int(fs[1]), _int(fs[2])
    return BootSpace(mount=mount, size=size, free=free, files=files,
                     generations=tuple(sorted(generations, key=lambda g: g.number)),
                     booted=values.get("booted") or None,
                     store_free=_int(values.get("store-free")),
                     closure=_int(values.get("closure")))

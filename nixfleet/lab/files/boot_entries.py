#!/usr/bin/python3
"""STAND-IN for NixOS's boot loader installer (systemd-boot's systemd-boot-builder.py, or
lanzaboote's `lzbt install`), used inside nixfleet lab hosts.

Real NixOS runs the installer of the new toplevel from switch-to-configuration switch/boot;
the lab's switch-to-configuration calls `install(toplevel)` here. The lab host's /boot is a
small filesystem of its own (an image file per host, `nixfleet lab up`), so a full boot
partition fails here as on the real ESP: with ENOSPC, partway, and switch-to-configuration
exits 1 ("Failed to install bootloader"), as the real one does.

What is installed: the newest `boot.configurationLimit` generations of the system profile
(the generation's host data, host.json, says the limit and the loader):
  systemd-boot  each generation's kernel and initrd copied to /boot/EFI/nixos/<store name>.efi
                (one file per store path, shared by the generations that boot it), an entry
                /boot/loader/entries/nixos-generation-N.conf each, loader.conf's default.
                As systemd-boot-builder.py: obsolete entries and files are removed first,
                then the missing files copied (peak: the kept generations' files).
  lanzaboote    one image per generation, /boot/EFI/Linux/nixos-generation-N-<hash>.efi
                (kernel and initrd in one file, like lanzaboote's signed stub with both).
                As `lzbt install`: the new images are written first and the obsolete ones
                removed afterwards (peak: configurationLimit + 1 images).
A file is written beside its final name and renamed into place, so a failed copy leaves no
half-written file that a later install would take for complete (the real systemd-boot-builder
copies in place); the partial file is removed.
"""

import json
import os
import re
import sys
from pathlib import Path

BOOT = Path("/boot")
PROFILES = Path("/nix/var/nix/profiles")
NIXOS_DIR = Path("EFI/nixos")
LINUX_DIR = Path("EFI/Linux")
ENTRIES_DIR = Path("loader/entries")
GENERATION_LINK = re.compile(r"^system-(\d+)-link$")
ENTRY = re.compile(r"^nixos-generation-(\d+)\.conf$")
DEFAULT_LIMIT = 100


class InstallError(Exception):
    pass


def log(message):
    print(message, file=sys.stderr, flush=True)


def generations(profiles=PROFILES):
    """[(number, toplevel)] of the system profile, oldest first."""
    found = []
    for link in profiles.iterdir() if profiles.is_dir() else ():
        match = GENERATION_LINK.match(link.name)
        if match:
            found.append((int(match[1]), link.resolve()))
    return sorted(found)


def boot_settings(toplevel):
    """(loader, configurationLimit) from the generation's host data."""
    try:
        boot = json.loads((toplevel / "host.json").read_text()).get("boot") or {}
    except (OSError, ValueError):
        boot = {}
    return boot.get("loader", "systemd-boot"), int(boot.get("configurationLimit",
                                                            DEFAULT_LIMIT))


def efi_name(path):
    """The name a store file gets under EFI/nixos: its store path's base name."""
    return f"{path.resolve().name}.efi"


def uki_name(number, toplevel):
    return f"nixos-generation-{number}-{toplevel.name[:32]}.efi"


def copy(sources, dest):
    """Write the sources' bytes, one after another, to dest through a temporary file."""
    temp = dest.with_name(f".{dest.name}.tmp")
    try:
        with temp.open("wb") as out:
            for source in sources:
                with source.open("rb") as data:
                    while chunk := data.read(1 << 20):
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, dest)
    except OSError:
        temp.unlink(missing_ok=True)
        raise


def remove(path):
    log(f"removing {path}")
    path.unlink(missing_ok=True)


def install(toplevel, boot=BOOT, profiles=PROFILES):
    """Install the boot entries of the newest generations; raise OSError (ENOSPC, ...)."""
    toplevel = Path(toplevel)
    loader, limit = boot_settings(toplevel)
    kept = generations(profiles)[-limit:]
    if not kept:
        raise InstallError("no system generations to install")
    for sub in (NIXOS_DIR, LINUX_DIR, ENTRIES_DIR):
        (boot / sub).mkdir(parents=True, exist_ok=True)
    if loader == "lanzaboote":
        install_images(kept, boot)
    else:
        install_entries(kept, toplevel, boot)


def install_entries(kept, default, boot):
    numbers = {n for n, _ in kept}
    wanted = {}
    for _, toplevel in kept:
        for part in ("kernel", "initrd"):
            wanted[efi_name(toplevel / part)] = (toplevel / part).resolve()
    # systemd-boot-builder.py's remove_old_entries: before anything is copied.
    for path in sorted((boot / ENTRIES_DIR).iterdir()):
        match = ENTRY.match(path.name)
        if match and int(match[1]) not in numbers:
            remove(path)
    for path in sorted((boot / NIXOS_DIR).iterdir()):
        if path.is_file() and path.name not in wanted:
            remove(path)
    for name, source in wanted.items():
        dest = boot / NIXOS_DIR / name
        if not dest.exists():
            log(f"copying {source} to {dest}")
            copy([source], dest)
    for number, toplevel in kept:
        write_entry(boot, number, toplevel)
        if toplevel == default:
            write_text(boot / "loader" / "loader.conf",
                       f"timeout 5\ndefault nixos-generation-{number}.conf\n")


def write_entry(boot, number, toplevel):
    version = (toplevel / "nixos-version").read_text().strip() if (
        toplevel / "nixos-version").exists() else "lab"
    write_text(boot / ENTRIES_DIR / f"nixos-generation-{number}.conf", (
        f"title NixOS\nversion Generation {number} NixOS {version}\n"
        f"linux /{NIXOS_DIR}/{efi_name(toplevel / 'kernel')}\n"
        f"initrd /{NIXOS_DIR}/{efi_name(toplevel / 'initrd')}\n"
        f"options init={toplevel}/init\n"))


def write_text(path, text):
    if path.exists() and path.read_text() == text:
        return
    temp = path.with_name(f".{path.name}.tmp")
    try:
        temp.write_text(text)
        os.replace(temp, path)
    except OSError:
        temp.unlink(missing_ok=True)
        raise


def install_images(kept, boot):
    wanted = {uki_name(n, t): t for n, t in kept}
    for name, toplevel in wanted.items():
        dest = boot / LINUX_DIR / name
        if not dest.exists():
            log(f"writing {dest}")
            copy([toplevel / "kernel", toplevel / "initrd"], dest)
    # lzbt's garbage collection: after every new image is in place.
    for path in sorted((boot / LINUX_DIR).iterdir()):
        if path.is_file() and path.name not in wanted:
            remove(path)


def main(argv):
    if len(argv) != 2:
        log("usage: boot_entries.py TOPLEVEL")
        return 1
    try:
        install(argv[1])
    except (OSError, InstallError) as error:
        log(f"installing the boot loader's entries failed: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

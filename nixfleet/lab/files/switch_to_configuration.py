#!/usr/bin/python3
"""STAND-IN for NixOS's switch-to-configuration, used inside nixfleet lab hosts.

Real NixOS builds this program into every system toplevel; the lab cannot build NixOS
(no nixpkgs), so each lab toplevel's bin/switch-to-configuration calls this file with its own
store path. It keeps the real semantics that deploys rely on:
  switch / test    install the generation's units, reload systemd, stop removed units,
                   restart changed ones, start new ones; exit 4 if a unit failed to start
  boot             make the generation the boot default (the profile is already set)
  dry-activate     print what switch would stop, restart and start; change nothing
  --boot           (lab only) what NixOS stage 2 does at boot: build generation 1 on first
                   boot, link /run/booted-system and /run/current-system, start the units
Units live in /run/systemd/system as links into the store, so a reboot activates the
profile's generation afresh, as NixOS does.
"""

import os
import subprocess
import sys
from pathlib import Path

PROFILE = Path("/nix/var/nix/profiles/system")
UNIT_DIR = Path("/run/systemd/system")
CURRENT = Path("/run/current-system")
BOOTED = Path("/run/booted-system")


def log(message):
    print(message, file=sys.stderr, flush=True)


def systemctl(*args):
    return subprocess.run(["systemctl", *args], capture_output=True, text=True)


def active_units():
    """Units installed by earlier activations: links from UNIT_DIR into the store."""
    if not UNIT_DIR.is_dir():
        return {}
    return {
        link.name: Path(os.readlink(link))
        for link in UNIT_DIR.iterdir()
        if link.is_symlink() and os.readlink(link).startswith("/nix/store/")
    }


def generation_units(toplevel):
    unit_dir = toplevel / "etc" / "systemd" / "system"
    return {p.name: p for p in sorted(unit_dir.iterdir())} if unit_dir.is_dir() else {}


def read(path):
    try:
        return path.read_bytes()
    except OSError:
        return None


def plan(toplevel):
    old, new = active_units(), generation_units(toplevel)
    stop = sorted(set(old) - set(new))
    start = sorted(set(new) - set(old))
    restart = sorted(u for u in set(old) & set(new) if read(old[u]) != read(new[u]))
    keep = sorted(set(old) & set(new) - set(restart))
    return old, new, stop, restart, start, keep


def link(target, path):
    """Point `path` at `target` atomically (a reader never sees it missing)."""
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, path)


def activate(toplevel, at_boot=False):
    _, new, stop, restart, start, keep = plan(toplevel)
    for unit in stop:
        log(f"stopping the following units: {unit}")
        systemctl("stop", unit)
        (UNIT_DIR / unit).unlink()
    UNIT_DIR.mkdir(parents=True, exist_ok=True)
    for unit, path in new.items():
        link(path, UNIT_DIR / unit)
    link(toplevel, CURRENT)
    if at_boot:
        link(toplevel, BOOTED)
    systemctl("daemon-reload")
    if at_boot:
        # During boot a blocking start could wait on the boot transaction itself.
        systemctl("start", "--no-block", *new)
        return 0
    if restart:
        log(f"restarting the following units: {', '.join(restart)}")
    if start:
        log(f"starting the following units: {', '.join(start)}")
    # One systemctl call per verb (each waits for its jobs); units kept from the last
    # generation are started too if they are not running, as NixOS starts every wanted unit.
    if restart:
        systemctl("restart", *restart)
    if start + keep:
        systemctl("start", *(start + keep))
    failed = failed_units(new)
    if failed:
        log(f"warning: the following units failed: {', '.join(sorted(failed))}")
        return 4
    return 0


def failed_units(units):
    """Which of these units are failed (or did not come up), from one systemctl call."""
    if not units:
        return []
    units = list(units)
    states = systemctl("is-active", *units).stdout.split()
    states += ["unknown"] * (len(units) - len(states))
    ok = ("active", "activating", "reloading")
    return [u for u, state in zip(units, states, strict=True) if state not in ok]


def dry_activate(toplevel):
    _, _, stop, restart, start, _ = plan(toplevel)
    for verb, units in (("stop", stop), ("restart", restart), ("start", start)):
        if units:
            print(f"would {verb} the following units: {', '.join(units)}")
    return 0


def stage2():
    if not PROFILE.exists():
        hostname = Path("/etc/hostname").read_text().strip()
        log(f"first boot: building generation 1 of {hostname} from /etc/nixos")
        result = subprocess.run(["/usr/local/sbin/nixos-rebuild", "boot"])
        if result.returncode != 0:
            return result.returncode
    return activate(PROFILE.resolve(), at_boot=True)


def main(argv):
    if argv[1:] == ["--boot"]:
        return stage2()
    if len(argv) != 3:
        log("usage: switch-to-configuration {switch|boot|test|dry-activate}")
        return 1
    toplevel, action = Path(argv[1]), argv[2]
    if action in ("switch", "test"):
        return activate(toplevel)
    if action == "boot":
        return 0
    if action == "dry-activate":
        return dry_activate(toplevel)
    log(f"switch-to-configuration: unknown action {action!r}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""A deploy's pre-flight: will the boot loader's install and the build fit, before anything on
the host changes? Decided from the HostDeployState fact (its `boot` part), which the deploy
reads anyway: no extra round trip.

The new generation does not exist before it is built, so its boot files are estimated:

- one new entry is the running generation's kernel + initrd (the current profile
  generation's), assumed to be new files: a deploy may change the kernel or initrd, and
  nothing on the deployer says whether it does;
- the generations the loader keeps besides the new one (the newest configurationLimit - 1)
  need only their files that are not on the boot partition already (an entry already there
  is reused, as the installers do);
- systemd-boot removes the files no kept generation boots *before* it copies (its
  systemd-boot-builder.py), so those count as freed; lanzaboote writes the new images first
  and removes the old ones after, so at its peak every image is there: configurationLimit + 1;
- `boot.espGuard` MiB must stay free on top (a new initrd may be larger than the running one).

The store must have room for the current system's closure (its NAR size): an upper bound of
what a build (or `nix copy`) adds, reached when every path changes (a nixpkgs update).
"""

from __future__ import annotations

from dataclasses import dataclass

from nixfleet.facts.parsers.boot import BootGeneration, BootSpace
from nixfleet.model import Boot
from nixfleet.outcome import Action

MIB = 2**20


@dataclass(frozen=True)
class BootNeed:
    """What installing the boot entries of a new generation takes, at its peak."""

    write: int  # bytes to copy: missing files of kept generations + the new entry (estimated)
    freed_first: int  # bytes the loader removes before it copies (systemd-boot)
    entry: int  # the estimated new entry (kernel + initrd of the running generation)
    guard: int  # bytes to keep free on top

    @property
    def required(self) -> int:
        """Free bytes the boot partition needs now."""
        return max(0, self.write - self.freed_first) + self.guard


def boot_need(space: BootSpace, boot: Boot, current: int | None, guard: int) -> BootNeed:
    """The boot partition's need for one more generation (see the module's docstring).

    + space: the host's boot space (HostDeployState's `boot`)
    + boot: the host's boot settings (loader, configurationLimit)
    + current: the profile's current generation (its kernel + initrd size the new entry's)
    + guard: bytes that must stay free beyond the estimate
    """
    generations = space.generations
    running = space.generation(current) or (generations[-1] if generations else None)
    entry = running.size if running else 0
    kept = list(generations[-(boot.configurationLimit - 1):]) if boot.configurationLimit > 1 \
        else []
    if boot.loader == "lanzaboote":
        missing = sum(g.size for g in kept if not g.has_image(space.files))
        return BootNeed(write=missing + entry, freed_first=0, entry=entry, guard=guard)
    wanted: dict[str, int] = {}
    for generation in kept:
        wanted.update(generation.efi_files())
    missing = sum(size for name, size in wanted.items() if name not in space.files)
    freed = sum(size for name, size in space.files.items()
                if name.startswith("EFI/nixos/") and name not in wanted)
    return BootNeed(write=missing + entry, freed_first=freed, entry=entry, guard=guard)


def rollback_target_bootable(space: BootSpace, boot: Boot, target: BootGeneration) -> bool:
    """The generation a rollback returns to still has its boot files on the partition."""
    if boot.loader == "lanzaboote":
        return target.has_image(space.files)
    return all(name in space.files for name in target.efi_files())


def mib(size: int) -> str:
    """Bytes as MiB with one decimal ("2.4 MiB"); KiB below one MiB (the lab is small)."""
    return f"{size / MIB:.1f} MiB" if size >= MIB else f"{size / 1024:.0f} KiB"


def check(action: Action, space: BootSpace, boot: Boot, current: int | None, host: str,
          scale: float = 1.0) -> list[str]:
    """One line per reason the deploy must not start on this host (empty: it may).

    + action: what the deploy does (boot and switch install boot entries; every action that
      builds needs room in the store)
    + space: the host's boot space (HostDeployState's `boot`)
    + boot: the host's boot settings
    + current: the profile's current generation: this deploy's rollback target
    + host: the host's name (for the command that makes room)
    + scale: the target's boot scale (the lab's boot partitions are the real sizes scaled)
    """
    problems = []
    if action.sets_profile and space.mount and space.free is not None:
        need = boot_need(space, boot, current, int(boot.espGuard * MIB * scale))
        if need.required > space.free:
            peak = (f"configurationLimit {boot.configurationLimit} + 1 images at the peak"
                    if boot.loader == "lanzaboote" else
                    f"configurationLimit {boot.configurationLimit}")
            problems.append(
                f"boot partition {space.mount}: needs {mib(need.required)} free for the new "
                f"generation's boot files ({peak}; a new entry estimated at {mib(need.entry)}, "
                f"{mib(need.guard)} guard), has {mib(space.free)}: short "
                f"{mib(need.required - space.free)}; run `nixfleet gc --boot --limit {host}`")
        target = space.generation(current)
        if target is not None and not rollback_target_bootable(space, boot, target):
            problems.append(
                f"boot partition {space.mount}: the rollback target, generation {current}, has "
                f"no boot files there (it could not be booted); run `nixfleet gc --boot "
                f"--limit {host}` to rewrite the boot entries")
    store_free = space.store_free
    if action.builds and store_free is not None and space.closure and \
            space.closure > store_free:
        problems.append(
            f"/nix/store: needs up to {mib(space.closure)} free for the new closure (the "
            f"current one's size), has {mib(store_free)}: short "
            f"{mib(space.closure - store_free)}; run `nixfleet gc --limit {host}`")
    return problems


def esp_warning(host: str, boot: Boot) -> str | None:
    """Where the inventory knows the boot partition's size and a generation's kernel + initrd
    (boot.espSize, boot.entrySize): the install's peak must fit, guard included (`nixfleet
    validate`'s warning; each deploy's pre-flight checks the host's real numbers)."""
    if boot.espSize is None or boot.entrySize is None:
        return None
    extra = 1 if boot.loader == "lanzaboote" else 0  # images written before old ones go
    peak = boot.configurationLimit + extra
    need = peak * boot.entrySize + boot.espGuard
    if need <= boot.espSize:
        return None
    fitting = (boot.espSize - boot.espGuard) // boot.entrySize - extra
    advice = (f"set boot.configurationLimit to {fitting} or less" if fitting >= 1 else
              "not even one generation fits: a larger boot partition is needed")
    return (f"host {host}: boot.configurationLimit {boot.configurationLimit} ({boot.loader}): "
            f"{peak} entries of {boot.entrySize} MiB at the install's peak + "
            f"{boot.espGuard} MiB guard = {need} MiB, the boot partition has {boot.espSize} MiB; "
            f"{advice}")

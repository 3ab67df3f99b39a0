"""The NixOS exporter (:9101): the system profile's generations, the running system, the Nix
store, GC roots, channels, boot entries and the GPUs.

Every value is read in the background (nixfleet.exporters.sources): the cheap sources every
``--interval`` seconds, the store and its GC roots every ``--store-interval`` seconds, from
Nix's database (never a walk of /nix/store). Commands and parsers are the facts' own
(nixfleet.facts.parsers). Metric names: nixfleet/exporters/__init__.py.

    nixfleet-nixos-exporter [--port 9101] [--interval 30] [--store-interval 300] [--root DIR]
    python -m nixfleet.exporters.nixos --help
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from nixfleet.exporters import serve
from nixfleet.exporters.gpu import GPU_FAMILIES, gpu_sources
from nixfleet.exporters.sources import Family, Sample, Source, run, sample
from nixfleet.facts.parsers.deploy import LAST_DEPLOY as LAST_DEPLOY_FILE
from nixfleet.facts.parsers.deploy import LastDeploy, parse_last_deploy
from nixfleet.facts.parsers.nix import (
    LINK_DATE_FORMAT,
    SYSTEM_PROFILE,
    GcRoot,
    Generation,
    RunningSystem,
    StoreUsage,
    gc_roots_command,
    parse_gc_roots,
    parse_profile_links,
    parse_store_usage,
    parse_system_links,
    profile_links_command,
    store_usage_command,
    system_links_command,
)
from nixfleet.facts.parsers.status import (
    JOURNAL_PREFIX,
    STATE_DIR,
    VERIFIED,
    DeployJournal,
    VerifiedRecord,
    parse_journal,
    parse_verified,
)
from nixfleet.facts.parsers.systemd import UnitStatus, parse_unit_show, unit_show_command

PORT = 9101  # nix/lib/ports.json: nixosExporter
PREFIX = "nixos_exporter"
# root's channels profile: one entry per channel `nix-channel --update` installed.
CHANNELS_PROFILE = "/nix/var/nix/profiles/per-user/root/channels"
NIX_DAEMON_UNITS = ("nix-daemon.service", "nix-daemon.socket")
DEPLOY_SUCCESS = ("changed", "unchanged", "built")  # the last deploy's results that are no failure

GENERATIONS = Family("nixos_generations_total", "Generations of the system profile")
GENERATION_CURRENT = Family(
    "nixos_generation_current", "The system profile's current generation number"
)
LAST_REBUILD = Family(
    "nixos_last_rebuild_timestamp",
    "When the newest system generation was created (Unix time)",
)
REBOOT_REQUIRED = Family(
    "nixos_reboot_required",
    "1 when the running system's kernel, initrd or kernel modules differ from the booted one's",
)
SYSTEM_INFO = Family(
    "nixos_system_info", "The running system: NixOS version and configuration (flake) revision",
    ("nixos_version", "configuration_revision"),
)  # fmt: skip
DEPLOYED_FLAKE = Family(
    "nixos_deployed_flake_info",
    "The flake directory hash and system of the last nixfleet deploy that finished here",
    ("flake_hash", "toplevel"),
)
BOOTED_DIFFERS = Family(
    "nixos_booted_system_differs",
    "1 when the running system is not the booted one (switched since boot), else 0",
)
SYSTEM_VERIFIED = Family(
    "nixos_system_verified",
    "1 when nixfleet's last verification checked the running system and it passed, else 0",
)
LAST_VERIFICATION = Family(
    "nixos_last_verification_timestamp", "When nixfleet last verified this host (Unix time)"
)
LAST_DEPLOY = Family(
    "nixos_last_deploy_timestamp", "When the last nixfleet deploy here started (Unix time)"
)
LAST_DEPLOY_SUCCESS = Family(
    "nixos_last_deploy_success",
    "1 when the last nixfleet deploy here ended changed, unchanged or built, else 0",
)
LAST_DEPLOY_INFO = Family(
    "nixos_last_deploy_info", "The last nixfleet deploy here: its id and result",
    ("deploy_id", "result"),
)  # fmt: skip
STORE_SIZE = Family(
    "nixos_store_size_bytes", "Total NAR size of the store's valid paths (Nix's database)"
)
STORE_PATHS = Family("nixos_store_paths", "Valid paths in the Nix store")
STORE_DERIVATIONS = Family("nixos_store_derivations_total", "Derivations (.drv) in the Nix store")
GC_ROOTS = Family(
    "nixos_gc_roots_total",
    "Garbage collector roots (links: profiles, result links, gcroots); processes' are left out",
)
NIX_DAEMON_ACTIVE = Family(
    "nixos_nix_daemon_active", "1 when nix-daemon's service or socket is active, else 0"
)
CHANNELS = Family("nixos_channels_total", "Channels installed for root (nix-channel)")
BOOT_ENTRIES = Family(
    "nixos_boot_entries_total", "Boot loader entries (systemd-boot entries, GRUB menu entries)"
)
FAMILIES = (
    GENERATIONS, GENERATION_CURRENT, LAST_REBUILD, REBOOT_REQUIRED, SYSTEM_INFO, DEPLOYED_FLAKE,
    BOOTED_DIFFERS, SYSTEM_VERIFIED, LAST_VERIFICATION, LAST_DEPLOY, LAST_DEPLOY_SUCCESS,
    LAST_DEPLOY_INFO, STORE_SIZE, STORE_PATHS, STORE_DERIVATIONS, GC_ROOTS, NIX_DAEMON_ACTIVE,
    CHANNELS, BOOT_ENTRIES, *GPU_FAMILIES,
)  # fmt: skip


@dataclass(frozen=True)
class Host:
    """Where the sources read: the host itself (root ``/``), or a directory laid out like one,
    whose Nix store is a chroot store (``nix --store DIR``) — for tests and benchmarks.

    + root: the directory that stands for ``/``
    """

    root: str = "/"

    def path(self, absolute: str) -> str:
        return str(Path(self.root, absolute.lstrip("/")))

    @property
    def store(self) -> str | None:
        return None if self.root == "/" else self.root


# The running and booted system (a few readlinks) is read this often at most, so a switch or a
# reboot shows within seconds (post-deploy verification compares reboot_required with them).
SYSTEM_INTERVAL = 5.0


def sources(host: Host, interval: float, store_interval: float) -> list[Source]:
    """Every source of the NixOS exporter.

    + host: where to read
    + interval: seconds between reads of the cheap sources
    + store_interval: seconds between reads of the store and its GC roots
    """
    profile = host.path(SYSTEM_PROFILE)
    profile_name = PurePosixPath(profile).name
    return [
        Source("generations",
               lambda: parse_profile_links(
                   run("find", profile_links_command(profile)), profile_name),
               generation_samples, interval),
        Source("system",
               lambda: parse_system_links(run("readlink", system_links_command(host.path("/run")))),
               system_samples, min(interval, SYSTEM_INTERVAL)),
        Source("deploy", lambda: read_last_deploy(host.path(LAST_DEPLOY_FILE)), deploy_samples,
               interval),
        Source("last_deploy", lambda: read_journal(host.path(STATE_DIR)), journal_samples,
               interval),
        Source("verification",
               lambda: read_verification(host.path(VERIFIED), host.path("/run/current-system")),
               verification_samples, min(interval, SYSTEM_INTERVAL)),
        Source("nix_daemon",
               lambda: parse_unit_show(run("systemctl", unit_show_command(NIX_DAEMON_UNITS))),
               daemon_samples, interval),
        Source("channels", lambda: count_channels(host.path(CHANNELS_PROFILE)),
               lambda count: [sample(CHANNELS, count)], interval),
        Source("boot", lambda: count_boot_entries(host.path("/boot")),
               lambda count: [sample(BOOT_ENTRIES, count)], interval),
        Source("store",
               lambda: parse_store_usage(run("nix path-info", store_usage_command(host.store))),
               store_samples, store_interval),
        Source("gc_roots",
               lambda: parse_gc_roots(run("nix-store --gc", gc_roots_command(host.store))),
               gc_root_samples, store_interval),
        *gpu_sources(interval),
    ]  # fmt: skip


def generation_samples(generations: list[Generation]) -> Iterator[Sample]:
    yield sample(GENERATIONS, len(generations))
    current = next((g.generation for g in generations if g.current), None)
    if current is not None:
        yield sample(GENERATION_CURRENT, current)
    if generations:
        newest = max(
            datetime.strptime(g.date, LINK_DATE_FORMAT).replace(tzinfo=UTC) for g in generations
        )
        yield sample(LAST_REBUILD, newest.timestamp())


def system_samples(system: RunningSystem) -> Iterator[Sample]:
    if system.current is None:
        raise FileNotFoundError("no current-system link: not a NixOS system")
    if system.booted is not None:
        yield sample(REBOOT_REQUIRED, float(system.reboot_required))
        yield sample(BOOTED_DIFFERS, float(system.booted.store_path != system.current.store_path))
    yield sample(
        SYSTEM_INFO, 1,
        system.current.nixos_version or "", system.current.configuration_revision or "",
    )  # fmt: skip


def read_last_deploy(path: str) -> LastDeploy | None:
    try:
        return parse_last_deploy(Path(path).read_text())
    except FileNotFoundError:
        return None  # no nixfleet deploy finished here yet


def deploy_samples(last: LastDeploy) -> Iterator[Sample]:
    if last.flake_hash:
        yield sample(DEPLOYED_FLAKE, 1, last.flake_hash, last.toplevel or "")


def read_journal(state_dir: str) -> DeployJournal | None:
    """The last deploy's journal (deploy.sh keeps one, result-<deploy id>); None: none yet."""
    try:
        names = sorted(n for n in os.listdir(state_dir) if n.startswith(JOURNAL_PREFIX))
    except FileNotFoundError:
        return None
    if not names:
        return None
    newest = names[-1]
    text = Path(state_dir, newest).read_text(errors="replace")
    return parse_journal(newest[len(JOURNAL_PREFIX):], text.splitlines())


def journal_samples(journal: DeployJournal) -> Iterator[Sample]:
    if journal.started is not None:
        yield sample(LAST_DEPLOY, journal.started)
    yield sample(LAST_DEPLOY_SUCCESS, float(journal.result in DEPLOY_SUCCESS))
    yield sample(LAST_DEPLOY_INFO, 1, journal.deploy_id, journal.result or "none")


@dataclass(frozen=True)
class Verification:
    running: str
    record: VerifiedRecord | None


def read_verification(record: str, current_system: str) -> Verification:
    running = os.path.realpath(current_system)
    if not os.path.exists(running):
        raise FileNotFoundError("no current-system link: not a NixOS system")
    try:
        text = Path(record).read_text()
    except FileNotFoundError:
        text = ""  # never verified
    return Verification(running, parse_verified(text))


def verification_samples(verification: Verification) -> Iterator[Sample]:
    record = verification.record
    yield sample(SYSTEM_VERIFIED, float(
        record is not None and record.passed and record.toplevel == verification.running))
    if record is not None:
        yield sample(LAST_VERIFICATION, record.time)


def daemon_samples(units: dict[str, UnitStatus]) -> Iterator[Sample]:
    active = any(units[name].active == "active" for name in NIX_DAEMON_UNITS if name in units)
    yield sample(NIX_DAEMON_ACTIVE, float(active))


def count_channels(profile: str) -> int:
    """The channels root's channels profile holds (its manifest.nix is not one).

    + profile: the channels profile link
    """
    if not os.path.lexists(profile):
        return 0  # never a `nix-channel --update`: no channels
    return sum(1 for entry in os.listdir(profile) if entry != "manifest.nix")


def count_boot_entries(boot: str) -> int | None:
    """systemd-boot's entries, else GRUB's menu entries; None without either (a container).

    + boot: the /boot directory
    """
    entries = Path(boot, "loader", "entries")
    if entries.is_dir():
        return sum(1 for entry in entries.iterdir() if entry.suffix == ".conf")
    grub = Path(boot, "grub", "grub.cfg")
    if grub.is_file():
        lines = grub.read_text(errors="replace").splitlines()
        return sum(1 for line in lines if line.lstrip().startswith("menuentry "))
    return None


def store_samples(usage: StoreUsage) -> Iterator[Sample]:
    yield sample(STORE_SIZE, usage.nar_bytes)
    yield sample(STORE_PATHS, usage.paths)
    if usage.derivations is not None:
        yield sample(STORE_DERIVATIONS, usage.derivations)


def gc_root_samples(roots: list[GcRoot]) -> Iterator[Sample]:
    yield sample(GC_ROOTS, sum(1 for root in roots if not root.is_runtime))


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store-interval", type=float, default=300, metavar="SECONDS",
        help="seconds between reads of the Nix store and its GC roots (default: 300)",
    )  # fmt: skip
    parser.add_argument(
        "--root", default="/", metavar="DIR",
        help="read a host laid out under DIR, with a chroot Nix store there (tests, benchmarks)",
    )  # fmt: skip


EXPORTER = serve.Exporter(
    name="nixfleet-nixos-exporter",
    description="Prometheus exporter of a NixOS host: generations, store, GC roots, boot "
    "entries, GPUs.",
    port=PORT,
    interval=30,
    prefix=PREFIX,
    families=FAMILIES,
    sources=lambda args: sources(Host(args.root), args.interval, args.store_interval),
    options=_options,
)


def main(argv: Sequence[str] | None = None) -> int:
    return serve.main(EXPORTER, argv)


if __name__ == "__main__":
    sys.exit(main())

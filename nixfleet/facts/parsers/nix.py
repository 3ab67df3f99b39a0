"""
Parsers for a NixOS host's system generations, running system, store and GC roots, and the
commands whose output they read.

``nixos-rebuild list-generations --json`` gives the full picture where nixos-rebuild-ng
(or the older nixos-rebuild with --json) exists; the profile links under
/nix/var/nix/profiles are the fallback that any NixOS host has.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

from nixfleet.facts.parsers.errors import FactParseError
from nixfleet.facts.results import FactResult

SYSTEM_PROFILE = "/nix/var/nix/profiles/system"


@dataclass(frozen=True)
class Generation(FactResult):
    """One system generation, with the fields of ``nixos-rebuild list-generations --json``.

    Values nixos-rebuild prints as "Unknown" (or empty) are None here.
    """

    generation: int
    date: str  # "2024-06-02 00:20:26": host local time from nixos-rebuild, UTC from the links
    nixos_version: str | None
    kernel_version: str | None
    configuration_revision: str | None
    specialisations: tuple[str, ...]
    current: bool
    store_path: str | None = None  # only known from the profile links


def parse_list_generations_json(text: str) -> list[Generation]:
    """Parse ``nixos-rebuild list-generations --json``, newest generation first.

    The JSON is a list of objects with the keys generation, date, nixosVersion,
    kernelVersion, configurationRevision, specialisations and current
    (nixos-rebuild-ng: models.GenerationJson).

    + text: the command's whole output
    """
    try:
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise TypeError("expected a JSON list of generations")
        generations = [
            Generation(
                generation=int(row["generation"]),
                date=str(row["date"]),
                nixos_version=_known(row.get("nixosVersion")),
                kernel_version=_known(row.get("kernelVersion")),
                configuration_revision=_known(row.get("configurationRevision")),
                specialisations=tuple(row.get("specialisations") or ()),
                current=bool(row["current"]),
            )
            for row in rows
        ]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise FactParseError(
            "nixos-rebuild list-generations --json", f"unexpected output ({error!r})", text
        ) from error
    return sorted(generations, key=lambda g: g.generation, reverse=True)


def _known(value: object) -> str | None:
    return None if value in (None, "", "Unknown") else str(value)


def profile_links_command(profile: str = SYSTEM_PROFILE) -> str:
    """The command whose output ``parse_profile_links`` reads.

    One ``find`` prints, per line, ``NAME<TAB>MTIME<TAB>TARGET`` for the profile link
    itself (its target names the current generation) and for every generation link;
    the mtime of a generation link is when it was created (what nix-env shows).

    + profile: the profile path, /nix/var/nix/profiles/system by default
    """
    path = PurePosixPath(profile)
    return " ".join([
        "find", shlex.quote(str(path.parent)), "-maxdepth", "1",
        "\\(", "-name", shlex.quote(path.name), "-o", "-name", shlex.quote(f"{path.name}-*-link"),
        "\\)", "-printf", shlex.quote("%f\\t%T@\\t%l\\n"),
    ])  # fmt: skip


PROFILE_LINKS_COMMAND = profile_links_command()

# /nix/store/<hash>-nixos-system-<hostname>-<nixos version>
_SYSTEM_STORE_PATH = re.compile(r"-nixos-system-.+?-(\d{2}\.\d{2}[^/]*)$")
# Generation.date of a generation read from the profile links, in UTC.
LINK_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def generation_number(link: str | None) -> int | None:
    """N of a system profile generation link's name, ``system-N-link`` (or of a path ending in
    one); None for anything else."""
    found = re.search(r"(?:^|/)system-(\d+)-link$", link or "")
    return int(found[1]) if found else None


def parse_profile_links(text: str, profile_name: str = "system") -> list[Generation]:
    """Parse the output of ``profile_links_command`` into generations, newest first.

    The NixOS version comes from the store path's name; kernel version, configuration
    revision and specialisations are unknown here.

    + text: the command's whole output
    + profile_name: the profile's file name (``system``)
    """
    link_name = re.compile(rf"^{re.escape(profile_name)}-(\d+)-link$")
    current_target = None
    links = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise FactParseError("find (nix profile links)", "expected NAME MTIME TARGET", text)
        name, mtime, target = fields
        if name == profile_name:
            current_target = PurePosixPath(target).name
            continue
        number = link_name.match(name)
        if not number:
            continue
        try:
            created = datetime.fromtimestamp(float(mtime), tz=UTC)
        except ValueError as error:
            raise FactParseError(
                "find (nix profile links)", f"bad mtime {mtime!r}", text
            ) from error
        links.append((int(number[1]), name, created, target))
    generations = [
        Generation(
            generation=number,
            date=created.strftime(LINK_DATE_FORMAT),
            nixos_version=_nixos_version(target),
            kernel_version=None,
            configuration_revision=None,
            specialisations=(),
            current=name == current_target,
            store_path=target,
        )
        for number, name, created, target in links
    ]
    return sorted(generations, key=lambda g: g.generation, reverse=True)



def _nixos_version(store_path: str) -> str | None:
    version = _SYSTEM_STORE_PATH.search(store_path)
    return version[1] if version else None


# --- /run/current-system, /run/booted-system -------------------------------------------------


@dataclass(frozen=True)
class SystemLink(FactResult):
    """What /run/current-system or /run/booted-system points at."""

    store_path: str
    kernel: str | None
    initrd: str | None
    kernel_modules: str | None
    nixos_version: str | None
    configuration_revision: str | None


@dataclass(frozen=True)
class RunningSystem(FactResult):
    """The running (current) and booted systems, and whether a reboot would change the
    kernel, initrd or kernel modules (what NixOS needs a reboot for)."""

    current: SystemLink | None
    booted: SystemLink | None

    @property
    def reboot_required(self) -> bool:
        if self.current is None or self.booted is None:
            return False
        return any(
            getattr(self.current, part) != getattr(self.booted, part)
            for part in ("kernel", "initrd", "kernel_modules")
        )

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "reboot_required": self.reboot_required}


def system_links_command(run_dir: str = "/run") -> str:
    """The command whose output ``parse_system_links`` reads: one line per link of
    RUN_DIR/current-system and RUN_DIR/booted-system that exists.

    + run_dir: where the links are, /run on a host
    """
    # One readlink for the link and its three files, not four: processes are most of this
    # command's cost on a host. Each has a parent that exists, so each gets its line; where
    # the lines are not four (a file whose link points into a missing directory), one each.
    # The NixOS version is the file's line, read by the shell; nixos-version (a program) is
    # asked for the configuration revision only where the system has it (exec: bash starts a
    # second process for a command substitution with a redirection).
    return (
        f"for name in current booted; do l={shlex.quote(run_dir)}/$name-system; "
        "[ -e $l ] || continue; "
        "set -- $(readlink -f $l $l/kernel $l/initrd $l/kernel-modules); "
        "[ $# = 4 ] || set -- \"$(readlink -f $l)\" \"$(readlink -f $l/kernel)\" "
        "\"$(readlink -f $l/initrd)\" \"$(readlink -f $l/kernel-modules)\"; "
        "v=; [ -r $l/nixos-version ] && IFS= read -r v < $l/nixos-version; "
        "c=; [ -x $l/sw/bin/nixos-version ] && "
        "c=$(exec $l/sw/bin/nixos-version --configuration-revision 2>/dev/null); "
        "printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' $name \"$1\" \"$2\" \"$3\" \"$4\" \"$v\" "
        "\"$c\"; done"
    )


SYSTEM_LINKS_COMMAND = system_links_command()


def parse_system_links(text: str) -> RunningSystem:
    """Parse SYSTEM_LINKS_COMMAND's lines: NAME, store path, kernel, initrd, modules,
    NixOS version, configuration revision (tab-separated; empty = unknown)."""
    links: dict[str, SystemLink] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 7 or fields[0] not in ("current", "booted") or not fields[1]:
            raise FactParseError("readlink /run/*-system", "unexpected line", text)
        name, path, kernel, initrd, modules, version, revision = (f or None for f in fields)
        links[str(name)] = SystemLink(str(path), kernel, initrd, modules, version, revision)
    return RunningSystem(current=links.get("current"), booted=links.get("booted"))


# --- the store -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreUsage(FactResult):
    """The store's valid paths, their total NAR size, and how many are derivations (.drv)."""

    paths: int
    nar_bytes: int
    derivations: int | None = None


def store_usage_command(store: str | None = None) -> str:
    """The command whose output ``parse_store_usage`` reads: ``COUNT BYTES DERIVATIONS``,
    summed on the host from Nix's database (``nix path-info --all``), never from a walk of
    /nix/store. It fails when nix does.

    + store: a Nix store URL or chroot store directory (``nix --store``); the host's own
      store when None
    """
    store_option = f" --store {shlex.quote(store)}" if store else ""
    return (
        "paths=\"$(nix --extra-experimental-features nix-command path-info --all --size"
        f"{store_option})\" && printf '%s\\n' \"$paths\" | "
        "awk 'NF {n++; s+=$2; if ($1 ~ /\\.drv$/) d++} END {print n+0, s+0, d+0}'"
    )


STORE_USAGE_COMMAND = store_usage_command()


def parse_store_usage(text: str) -> StoreUsage:
    """Parse ``COUNT BYTES [DERIVATIONS]`` (store_usage_command).

    + text: the command's whole output
    """
    try:
        paths, size, *derivations = (int(field) for field in text.split())
        if len(derivations) > 1:
            raise ValueError("too many fields")
    except ValueError as error:
        raise FactParseError(
            "nix path-info --all", "expected COUNT BYTES DERIVATIONS", text
        ) from error
    return StoreUsage(paths=paths, nar_bytes=size, derivations=next(iter(derivations), None))


@dataclass(frozen=True)
class GcRoot(FactResult):
    """One garbage collector root: the link (or ``{memory:N}``, ``/proc/...`` for a running
    process's) and the store path it keeps alive."""

    link: str
    store_path: str

    @property
    def is_runtime(self) -> bool:
        """Held by a running process (open file, mapping, environment), not by a link."""
        return self.link.startswith(("{", "/proc/"))


def gc_roots_command(store: str | None = None) -> str:
    """The command whose output ``parse_gc_roots`` reads (``nix-store --gc --print-roots``).

    + store: as for store_usage_command
    """
    store_option = f" --store {shlex.quote(store)}" if store else ""
    return f"nix-store{store_option} --gc --print-roots"


def parse_gc_roots(text: str) -> list[GcRoot]:
    """Parse ``nix-store --gc --print-roots``: one ``LINK -> STORE PATH`` line per root.

    + text: the command's whole output
    """
    roots = []
    for line in text.splitlines():
        if not line.strip():
            continue
        link, arrow, store_path = line.rpartition(" -> ")
        if not arrow or not link or not store_path.startswith("/"):
            raise FactParseError("nix-store --gc --print-roots", "expected LINK -> PATH", text)
        roots.append(GcRoot(link, store_path))
    return roots

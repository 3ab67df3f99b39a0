"""
Parsers for a NixOS host's system generations.

``nixos-rebuild list-generations --json`` gives the full picture where nixos-rebuild-ng
(or the older nixos-rebuild with --json) exists; the profile links under
/nix/var/nix/profiles are the fallback that any NixOS host has.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

from pyinfra.api import FactBase, QuoteString, StringCommand
from typing_extensions import override

from nixfleet.facts.errors import FactParseError
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


def profile_links_command(profile: str = SYSTEM_PROFILE) -> StringCommand:
    """The command whose output ``parse_profile_links`` reads.

    One ``find`` prints, per line, ``NAME<TAB>MTIME<TAB>TARGET`` for the profile link
    itself (its target names the current generation) and for every generation link;
    the mtime of a generation link is when it was created (what nix-env shows).

    + profile: the profile path, /nix/var/nix/profiles/system by default
    """
    path = PurePosixPath(profile)
    return StringCommand(
        "find",
        QuoteString(str(path.parent)),
        "-maxdepth",
        "1",
        "\\(",
        "-name",
        QuoteString(path.name),
        "-o",
        "-name",
        QuoteString(f"{path.name}-*-link"),
        "\\)",
        "-printf",
        QuoteString("%f\\t%T@\\t%l\\n"),
    )


PROFILE_LINKS_COMMAND = profile_links_command().get_raw_value()

# /nix/store/<hash>-nixos-system-<hostname>-<nixos version>
_SYSTEM_STORE_PATH = re.compile(r"-nixos-system-.+?-(\d{2}\.\d{2}[^/]*)$")


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
            date=created.strftime("%Y-%m-%d %H:%M:%S"),
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


# --- pyinfra facts ---------------------------------------------------------------------------

_LINKS_MARK = "#nixfleet:profile-links"


class NixGenerations(FactBase[list[Generation]]):
    """
    Returns every system generation, newest first, with the fields of
    ``nixos-rebuild list-generations --json``; where that command is missing or too old,
    read from the profile links (/nix/var/nix/profiles/system-*-link).

    **Example:**

    .. code:: python

        current = next(g for g in host.get_fact(NixGenerations) if g.current)
    """

    @override
    def command(self) -> str:
        return (
            "nixos-rebuild list-generations --json 2>/dev/null || "
            f"{{ echo '{_LINKS_MARK}'; {PROFILE_LINKS_COMMAND}; }}"
        )

    @staticmethod
    @override
    def default() -> list[Generation]:
        return []

    @override
    def process(self, output: list[str]) -> list[Generation]:
        if output and output[0] == _LINKS_MARK:
            return parse_profile_links("\n".join(output[1:]))
        return parse_list_generations_json("\n".join(output))


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


SYSTEM_LINKS_COMMAND = (
    "for name in current booted; do l=/run/$name-system; [ -e $l ] || continue; "
    "printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' $name \"$(readlink -f $l)\" "
    "\"$(readlink -f $l/kernel)\" \"$(readlink -f $l/initrd)\" "
    "\"$(readlink -f $l/kernel-modules)\" \"$(cat $l/nixos-version 2>/dev/null)\" "
    "\"$($l/sw/bin/nixos-version --configuration-revision 2>/dev/null)\"; done"
)


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


class CurrentSystem(FactBase[RunningSystem]):
    """
    Returns the running system (/run/current-system) and the booted one
    (/run/booted-system) with their NixOS version and configuration revision, and
    ``reboot_required`` when their kernel, initrd or kernel modules differ.
    """

    @override
    def command(self) -> str:
        return SYSTEM_LINKS_COMMAND

    @override
    def process(self, output: list[str]) -> RunningSystem:
        return parse_system_links("\n".join(output))


class BootedSystem(FactBase[SystemLink | None]):
    """Returns what the host booted (/run/booted-system), None where unknown."""

    @override
    def command(self) -> str:
        return SYSTEM_LINKS_COMMAND

    @override
    def process(self, output: list[str]) -> SystemLink | None:
        return parse_system_links("\n".join(output)).booted


@dataclass(frozen=True)
class StoreUsage(FactResult):
    paths: int
    nar_bytes: int


def parse_store_usage(text: str) -> StoreUsage:
    try:
        paths, size = text.split()
        return StoreUsage(paths=int(paths), nar_bytes=int(size))
    except ValueError as error:
        raise FactParseError("nix path-info --all", "expected COUNT BYTES", text) from error


class NixStore(FactBase[StoreUsage | None]):
    """
    Returns the store's valid path count and total NAR size, from Nix's database (one
    query, no walk of /nix/store).
    """

    @override
    def requires_command(self) -> str:
        return "nix"

    @override
    def command(self) -> str:
        return (
            "nix --extra-experimental-features nix-command path-info --all --size 2>/dev/null "
            "| awk '{n++; s+=$2} END {print n+0, s+0}'"
        )

    @override
    def process(self, output: list[str]) -> StoreUsage:
        return parse_store_usage("\n".join(output))

"""
Parsers for a NixOS host's system generations.

``nixos-rebuild list-generations --json`` gives the full picture where nixos-rebuild-ng
(or the older nixos-rebuild with --json) exists; the profile links under
/nix/var/nix/profiles are the fallback that any NixOS host has.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

from pyinfra.api import QuoteString, StringCommand

from facts.errors import FactParseError

SYSTEM_PROFILE = "/nix/var/nix/profiles/system"


@dataclass(frozen=True)
class Generation:
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

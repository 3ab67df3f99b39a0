"""What a deploy needs to know of a host before it sends anything, and what the last nixfleet
deploy that finished there left.

nixfleet/remote/deploy.sh writes LAST_DEPLOY when a deploy finishes: ``FLAKE_HASH TOPLEVEL``,
the hash of the flake directory it deployed and the system it built from it.
deploy_state_command prints the flake directory's files and the host's systems (read by
parse_deploy_state): the HostDeployState fact's command and a part of `nixfleet status`'s.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from nixfleet.facts.parsers.boot import (
    BOOT_KEYS,
    BOOT_ROOM_SCRIPT,
    BOOT_SPACE_SCRIPT,
    CLOSURE_SCRIPT,
    BootSpace,
    parse_boot_space,
)
from nixfleet.facts.parsers.errors import FactParseError
from nixfleet.facts.parsers.nix import SYSTEM_PROFILE, generation_number
from nixfleet.facts.parsers.status import RECORD, VERIFIED, VerifiedRecord, parse_verified
from nixfleet.facts.results import FactResult

LAST_DEPLOY = "/var/lib/nixfleet/last-deploy"


@dataclass(frozen=True)
class LastDeploy(FactResult):
    flake_hash: str | None
    toplevel: str | None


def parse_last_deploy(text: str) -> LastDeploy:
    """Parse LAST_DEPLOY's ``FLAKE_HASH TOPLEVEL`` (empty: never deployed).

    + text: the file's content
    """
    flake_hash, _, toplevel = text.strip().partition(" ")
    return LastDeploy(flake_hash or None, toplevel.strip() or None)


@dataclass(frozen=True)
class DeployState(FactResult):
    """The sha256 of every file in the flake directory (what counts is the files: someone may
    have edited them), anything else in it (links, empty directories), the system profile's
    generation, the current and profile systems, the flake hash and system of the last deploy
    that finished there, and the hash of nixfleet's record of the flake directory."""

    files: dict[str, str] = field(default_factory=dict)
    strays: tuple[str, ...] = ()
    generation: int | None = None
    current_system: str | None = None
    profile_system: str | None = None
    last_hash: str | None = None
    last_toplevel: str | None = None
    record_hash: str | None = None
    # What the last verification checked (nixfleet.verify records it), None: never.
    verified: VerifiedRecord | None = None
    # The boot partition, the generations' boot files and the store's room (pre-flight).
    boot: BootSpace = field(default_factory=BootSpace)


def deploy_state_command(flake_dir: str, preflight: bool = True) -> str:
    """The command whose output ``parse_deploy_state`` reads.

    + flake_dir: the flake directory (/etc/nixos by default)
    + preflight: also what only a deploy's pre-flight reads: the boot partition's files, each
      generation's boot files and the current system's closure size (a nix process); without
      it the boot partition's and the store's room only
    """
    # An assignment cannot take QuoteString's padding, so the value is shlex-quoted.
    # Processes are most of its cost on a host: the running and profile systems come from one
    # readlink (one each where it prints other than two lines), the files and the strays from
    # one find, which hands the files to one sha256sum (`./PATH`, which the parser reads as
    # PATH); a file is read where it exists (bash starts a second process for a command
    # substitution with a redirection). It does not exit: `nixfleet status` runs it in its
    # own shell, other parts after it.
    return (
        f"d={shlex.quote(flake_dir)}; export LC_ALL=C;"
        f' echo "generation $(readlink {SYSTEM_PROFILE})";'
        f" set -- $(readlink -f /run/current-system {SYSTEM_PROFILE});"
        f' [ $# = 2 ] || set -- "$(readlink -f /run/current-system)"'
        f' "$(readlink -f {SYSTEM_PROFILE})"; echo "current $1"; echo "profile $2";'
        f' l=; [ -f {LAST_DEPLOY} ] && l=$(cat {LAST_DEPLOY}); echo "last-deploy $l";'
        f' r=; [ -f {RECORD} ] && r=$(sha256sum {RECORD}); echo "record ${{r%% *}}";'
        f' v=; [ -f {VERIFIED} ] && v=$(cat {VERIFIED}); echo "verified $v";'
        + (f" {BOOT_SPACE_SCRIPT} {CLOSURE_SCRIPT}" if preflight else f" {BOOT_ROOM_SCRIPT}")
        + ' if cd "$d" 2>/dev/null; then'
        " find . -mindepth 1 \\( -type f -exec sha256sum -- {} + \\)"
        " -o \\( -type d -empty -o ! -type d \\) -printf 'stray %P\\n'; cd /; fi; true"
    )


def parse_deploy_state(text: str) -> DeployState:
    files: dict[str, str] = {}
    strays: list[str] = []
    values: dict[str, str] = {}
    boot: list[str] = []
    for line in text.splitlines():
        key, _, rest = line.partition(" ")
        if key in BOOT_KEYS:
            boot.append(line)
        elif key in ("generation", "current", "profile", "last-deploy", "record", "verified"):
            values[key] = rest.strip()
        elif key == "stray":
            strays.append(rest)
        elif len(key) == 64 and rest.startswith(" ./") and rest[3:]:
            files[rest[3:]] = key  # sha256sum: "SHA256  ./PATH"
        elif line.strip():
            raise FactParseError("deploy state", "unexpected line", text)
    last = parse_last_deploy(values.get("last-deploy", ""))
    return DeployState(
        files=dict(sorted(files.items())), strays=tuple(strays),
        generation=generation_number(values.get("generation")),
        current_system=values.get("current") or None,
        profile_system=values.get("profile") or None,
        last_hash=last.flake_hash, last_toplevel=last.toplevel,
        record_hash=values.get("record") or None, verified=_verified(values.get("verified", "")),
        boot=parse_boot_space(boot))


def _verified(text: str) -> VerifiedRecord | None:
    """A damaged verification record counts as none: the system is verified again."""
    try:
        return parse_verified(text)
    except FactParseError:
        return None

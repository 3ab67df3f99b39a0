"""What a deploy needs to know before it sends anything: the host's flake directory and the
system it runs, so that a host with nothing to do is a no-op decided from facts."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from pyinfra.api import FactBase, StringCommand
from typing_extensions import override

from nixfleet.facts.errors import FactParseError
from nixfleet.facts.parsers.boot import BOOT_KEYS, BOOT_SPACE_SCRIPT, BootSpace, parse_boot_space
from nixfleet.facts.parsers.deploy import LAST_DEPLOY, parse_last_deploy
from nixfleet.facts.parsers.nix import SYSTEM_PROFILE, generation_number
from nixfleet.facts.parsers.status import RECORD, VERIFIED, VerifiedRecord, parse_verified
from nixfleet.facts.results import FactResult

__all__ = ["RECORD", "DeployState", "HostDeployState", "parse_deploy_state"]


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
        elif len(key) == 64 and rest.startswith(" ") and rest[1:]:
            files[rest[1:]] = key  # sha256sum: "SHA256  PATH"
        elif line.strip():
            raise FactParseError("deploy state", "unexpected line", text)
    last = parse_last_deploy(values.get("last-deploy", ""))
    return DeployState(
        files=files, strays=tuple(strays),
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


class HostDeployState(FactBase[DeployState]):
    """
    Returns the host's flake directory (sha256 of each file, strays) and its system: profile
    generation, current and profile systems, what the last finished deploy left, and the
    boot partition's and store's room (nixfleet.facts.parsers.boot) for the pre-flight.

    + flake_dir: the flake directory (/etc/nixos by default)
    """

    @override
    def command(self, flake_dir: str) -> StringCommand:
        # An assignment cannot take QuoteString's padding, so the value is shlex-quoted.
        return StringCommand(
            f"d={shlex.quote(flake_dir)}; export LC_ALL=C;"
            f' echo "generation $(readlink {SYSTEM_PROFILE})";'
            f' echo "current $(readlink -f /run/current-system)";'
            f' echo "profile $(readlink -f {SYSTEM_PROFILE})";'
            f' echo "last-deploy $(cat {LAST_DEPLOY} 2>/dev/null)";'
            f' echo "record $([ -f {RECORD} ] && sha256sum < {RECORD} | cut -c1-64)";'
            f' echo "verified $(cat {VERIFIED} 2>/dev/null)";'
            f" {BOOT_SPACE_SCRIPT}"
            ' cd "$d" 2>/dev/null || exit 0;'
            " find . -type f -printf '%P\\0' | sort -z | xargs -0r sha256sum --;"
            " find . -mindepth 1 \\( -type d -empty -o ! -type d ! -type f \\)"
            " -printf 'stray %P\\n'; true"
        )

    @override
    def process(self, output: list[str]) -> DeployState:
        return parse_deploy_state("\n".join(output))

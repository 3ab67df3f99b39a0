"""What a deploy needs to know before it sends anything: the host's flake directory."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from pyinfra.api import FactBase, StringCommand
from typing_extensions import override

from facts.errors import FactParseError
from facts.results import FactResult

HASH_FILE = ".nixfleet-flake-hash"


@dataclass(frozen=True)
class FlakeState(FactResult):
    """The hash nixfleet last wrote into the flake directory ("none" if it never did) and,
    unless that already is the wanted hash, the sha256 of every file in it."""

    flake_hash: str
    files: dict[str, str] = field(default_factory=dict)


def parse_flake_state(text: str) -> FlakeState:
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise FactParseError("flake state", "no hash line", text)
    files = {}
    for line in lines[1:]:
        digest, _, path = line.partition("  ")
        if len(digest) != 64 or not path.startswith("./"):
            raise FactParseError("sha256sum", "unexpected line", text)
        files[path[2:]] = digest
    return FlakeState(flake_hash=lines[0].strip(), files=files)


class FlakeDirectory(FactBase[FlakeState]):
    """
    Returns the state of a host's flake directory: file hashes are listed only when the
    directory does not already hold the wanted flake, so an unchanged flake costs one line.

    + flake_dir: the directory (/etc/nixos by default)
    + want_hash: the hash of the flake the deployer is about to send
    """

    @override
    def command(self, flake_dir: str, want_hash: str) -> StringCommand:
        # Assignments cannot take QuoteString's padding, so the values are shlex-quoted.
        return StringCommand(
            f"d={shlex.quote(flake_dir)}; w={shlex.quote(want_hash)};"
            f' h=$(cat "$d/{HASH_FILE}" 2>/dev/null || echo none); echo "$h";'
            ' [ "$h" = "$w" ] || { cd "$d" 2>/dev/null && find . -type f'
            f" ! -name '.nixfleet-*' -exec sha256sum {{}} + ; }}; true"
        )

    @override
    def process(self, output: list[str]) -> FlakeState:
        return parse_flake_state("\n".join(output))

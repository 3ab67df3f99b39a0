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
    """The hash nixfleet last wrote into the flake directory ("none" if it never did) and
    the sha256 of every file in it (the files are what counts: someone may have edited
    them since)."""

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
    Returns the state of a host's flake directory: the hash nixfleet recorded there and
    the sha256 of each file.

    + flake_dir: the directory (/etc/nixos by default)
    """

    @override
    def command(self, flake_dir: str) -> StringCommand:
        # An assignment cannot take QuoteString's padding, so the value is shlex-quoted.
        return StringCommand(
            f"d={shlex.quote(flake_dir)};"
            f' cat "$d/{HASH_FILE}" 2>/dev/null || echo none;'
            ' { cd "$d" 2>/dev/null && find . -type f'
            f" ! -name '.nixfleet-*' -exec sha256sum {{}} + ; }}; true"
        )

    @override
    def process(self, output: list[str]) -> FlakeState:
        return parse_flake_state("\n".join(output))

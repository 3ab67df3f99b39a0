"""What agenix delivered on a host: /run/agenix/* as hashes, owners and modes, never values.

agenix decrypts each secret into /run/agenix.d/<generation>/ and points /run/agenix at it.
The fact prints one line per entry (`sha256 owner group mode name`), so a secret can be
compared with the locally decrypted value without the value ever crossing the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pyinfra.api import FactBase, StringCommand
from typing_extensions import override

from nixfleet.facts.errors import FactParseError
from nixfleet.facts.results import FactResult

AGENIX_DIR = "/run/agenix"
_SHA256 = re.compile(r"^([0-9a-f]{64}|-)$")
_MODE = re.compile(r"^[0-7]{1,4}$")
# What the fact runs (also post-deploy verification, over testinfra): parse_agenix_files reads it.
AGENIX_FILES_COMMAND = (
    f"d={AGENIX_DIR}; if [ -d $d ]; then"
    ' t=$(readlink $d) && echo "generation ${t##*/}";'
    ' for f in $d/*; do [ -e "$f" ] || [ -L "$f" ] || continue;'
    ' s=$(sha256sum < "$f" 2>/dev/null) || s=-;'
    ' printf "%s %s %s\\n" "${s%% *}" "$(stat -c "%U %G %a" "$f")" "${f##*/}";'
    " done; fi; true"
)


@dataclass(frozen=True)
class AgenixFile(FactResult):
    """One /run/agenix entry. sha256 is None where it could not be read (not a file)."""

    sha256: str | None
    owner: str  # user name, or UNKNOWN when the uid has none (stat's %U)
    group: str
    mode: str  # four octal digits: 0400


@dataclass(frozen=True)
class AgenixState(FactResult):
    """The generation /run/agenix points at (None: no /run/agenix, or not a link) and the
    entries in it by name."""

    generation: int | None = None
    files: dict[str, AgenixFile] = field(default_factory=dict)


def parse_agenix_files(text: str) -> AgenixState:
    """Parse the AgenixFiles command: a `generation N` line, then `SHA256 OWNER GROUP MODE
    NAME` per entry (`-` for an entry that is not a readable file). No output: no /run/agenix.

    + text: the command's whole output
    """
    generation: int | None = None
    files: dict[str, AgenixFile] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("generation "):
            value = line.removeprefix("generation ").strip()
            generation = int(value) if value.isdigit() else None
            continue
        fields = line.split(" ", 4)
        if len(fields) != 5 or not _SHA256.match(fields[0]) or not _MODE.match(fields[3]):
            raise FactParseError("agenix files", "expected SHA256 OWNER GROUP MODE NAME lines",
                                 text)
        digest, owner, group, mode, name = fields
        files[name] = AgenixFile(None if digest == "-" else digest, owner, group,
                                 mode.rjust(4, "0"))
    return AgenixState(generation, files)


class AgenixFiles(FactBase[AgenixState]):
    """
    Returns what /run/agenix holds: its generation and, per secret, the sha256 of the
    content, owner, group and mode (the content itself never leaves the host).

    **Example:**

    .. code:: sh

        pyinfra inventory.py fact facts.secrets.AgenixFiles --json
    """

    @override
    def command(self) -> StringCommand:
        return StringCommand(AGENIX_FILES_COMMAND)

    @override
    def process(self, output: list[str]) -> AgenixState:
        return parse_agenix_files("\n".join(output))

"""What a host keeps about nixfleet's work on it, read by `nixfleet status` and deploys:

- the record of the flake directory (RECORD, written by nixfleet/remote/deploy.sh): the
  ``sha256sum`` listing of every file nixfleet last wrote there, ``SHA256  PATH`` per line;
- the journal of the last deploy (``/var/lib/nixfleet/result-<deploy id>``): every protocol
  line (``NIXFLEET key=value``) that deploy printed;
- the verification record (VERIFIED): ``TOPLEVEL EPOCH RESULT``, the system the last
  verification checked, when, and whether it passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nixfleet.facts.parsers.errors import FactParseError
from nixfleet.facts.results import FactResult

STATE_DIR = "/var/lib/nixfleet"
RECORD = f"{STATE_DIR}/flake.sha256"
VERIFIED = f"{STATE_DIR}/verified"
JOURNAL_PREFIX = "result-"
_RECORD_LINE = re.compile(r"[0-9a-f]{64}  (?=\S)[^\n]*")
_SYSTEM_PATH = re.compile(r"/\S+")  # a system's store path (absolute)
VERIFY_RESULTS = ("passed", "failed")


def parse_record(text: str) -> dict[str, str] | None:
    """The record's files and their sha256, or None when it is damaged (a line that is not
    ``SHA256  PATH``, a path twice): then nothing in it can be trusted.

    + text: the record's content ("" when there is none: no file was written yet)
    """
    if "\x00" in text:
        return None
    files: dict[str, str] = {}
    for line in text.splitlines():
        if not line:
            continue
        if not _RECORD_LINE.fullmatch(line) or line[66:] in files:
            return None
        files[line[66:]] = line[:64]
    return files


@dataclass(frozen=True)
class VerifiedRecord(FactResult):
    toplevel: str
    time: int  # seconds since the epoch
    result: str  # passed | failed

    @property
    def passed(self) -> bool:
        return self.result == "passed"


def parse_verified(text: str) -> VerifiedRecord | None:
    """VERIFIED's ``TOPLEVEL EPOCH RESULT`` (None: never verified).

    + text: the file's content
    """
    if not text.strip():
        return None
    parts = text.split()
    if len(parts) != 3 or not _SYSTEM_PATH.fullmatch(parts[0]) or not parts[1].isdigit() \
            or parts[2] not in VERIFY_RESULTS:
        raise FactParseError("verification record", "expected 'TOPLEVEL EPOCH passed|failed'",
                             text)
    return VerifiedRecord(parts[0], int(parts[1]), parts[2])


def verified_line(toplevel: str, time: int, passed: bool) -> str:
    """The line VERIFIED holds (what parse_verified reads)."""
    return f"{toplevel} {time} {'passed' if passed else 'failed'}\n"


@dataclass(frozen=True)
class DeployJournal(FactResult):
    """The last deploy as the host's journal has it."""

    deploy_id: str
    started: int | None = None  # seconds since the epoch
    owner: str | None = None  # USER@MACHINE of the deployer
    result: str | None = None  # None: it ended without one (killed)
    reason: str | None = None
    toplevel: str | None = None
    generation_after: int | None = None
    drift: tuple[str, ...] = ()
    values: dict[str, str] = field(default_factory=dict)


def parse_journal(deploy_id: str, lines: list[str]) -> DeployJournal:
    """A journal's protocol lines (other lines are ignored: a deploy's output may hold any).

    + deploy_id: the id its file name carries
    + lines: its content
    """
    values: dict[str, str] = {}
    drift: list[str] = []
    for line in lines:
        if not line.startswith("NIXFLEET "):
            continue
        key, _, value = line[len("NIXFLEET "):].partition("=")
        if key == "drift":
            drift.append(value)
        else:
            values[key] = value
    started = owner = None
    when, _, who = values.get("started", "").partition(" ")
    if when.isdigit():
        started, owner = int(when), who.strip() or None
    after = values.get("generation_after", "")
    return DeployJournal(
        deploy_id=deploy_id, started=started, owner=owner, result=values.get("result") or None,
        reason=values.get("reason") or None, toplevel=values.get("toplevel") or None,
        generation_after=int(after) if after.isdigit() else None, drift=tuple(drift),
        values=values)


def parse_journals(lines: list[str]) -> DeployJournal | None:
    """JOURNAL_COMMAND's output: ``file DEPLOY_ID`` and that journal's lines; the newest
    (deploy ids start with their time) when several are there.

    + lines: the command's output
    """
    journals: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line.startswith("file "):
            current = journals.setdefault(line[5:].strip(), [])
        elif current is not None:
            current.append(line)
    if not journals:
        return None
    newest = max(journals)
    return parse_journal(newest, journals[newest])


JOURNAL_COMMAND = (
    f'for f in {STATE_DIR}/{JOURNAL_PREFIX}*; do [ -f "$f" ] || continue;'
    f' echo "file ${{f##*/{JOURNAL_PREFIX}}}"; cat "$f"; done; true'
)

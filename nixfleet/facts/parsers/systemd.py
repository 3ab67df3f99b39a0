"""
Parsers for systemd: the manager's overall state, unit listings and unit properties, and the
``systemctl`` commands whose output they read.

Pure functions tested on outputs captured from systemd 252.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast, get_args

from nixfleet.facts.parsers.errors import FactParseError
from nixfleet.facts.results import FactResult

# What systemctl is-system-running prints (systemctl(1)).
ManagerState = Literal[
    "initializing", "starting", "running", "degraded", "maintenance", "stopping", "offline",
    "unknown",
]  # fmt: skip
MANAGER_STATES: frozenset[str] = frozenset(get_args(ManagerState))
# systemd's unit load states (systemd.unit(5)); a row with another LOAD is not a unit.
LOAD_STATES = frozenset({"stub", "loaded", "not-found", "bad-setting", "error", "merged", "masked"})

# It exits non-zero for every state but running; the word is what matters.
SYSTEM_STATE_COMMAND = "systemctl is-system-running || true"
UNIT_SHOW_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState")


@dataclass(frozen=True)
class UnitStatus(FactResult):
    """One unit's load, active and sub state (``systemctl list-units`` columns)."""

    name: str  # the unit's full id: sshd.service
    load: str  # loaded, not-found, masked, error...
    active: str  # active, inactive, failed, activating...
    sub: str  # running, exited, dead, failed...
    description: str = ""
    restarts: int | None = None  # NRestarts (systemctl show): automatic restarts since start

    @property
    def is_failed(self) -> bool:
        return self.active == "failed"


def list_units_command(*options: str) -> str:
    """The ``systemctl list-units`` command whose output ``parse_list_units`` reads.

    + options: which units, e.g. ``--failed`` or ``--all``
    """
    return shlex.join(
        ["systemctl", "list-units", *options, "--output=json", "--plain", "--no-legend",
         "--no-pager"]
    )  # fmt: skip


def unit_show_command(
    units: Iterable[str], properties: Iterable[str] = UNIT_SHOW_PROPERTIES
) -> str:
    """The ``systemctl show`` command whose output ``parse_unit_show`` reads.

    + units: unit names or patterns (``*.service``: every loaded service)
    + properties: at least Id, LoadState, ActiveState and SubState; NRestarts too if wanted
    """
    return shlex.join(["systemctl", "show", "--no-pager", "-p", ",".join(properties), *units])


def parse_system_state(text: str) -> ManagerState:
    """Parse ``systemctl is-system-running``: one word such as running or degraded.

    + text: the command's whole output
    """
    word = text.strip()
    if word not in MANAGER_STATES:
        raise FactParseError("systemctl is-system-running", "not a system state", text)
    return cast(ManagerState, word)


def parse_list_units(text: str) -> list[UnitStatus]:
    """Parse ``systemctl list-units``, as JSON or as ``--plain --no-legend`` text.

    systemd >= 247 prints JSON with ``--output=json``; older releases ignore that option
    for list-units and print the plain table, so both are read.

    + text: the command's whole output
    """
    if text.lstrip().startswith("["):
        return _units_from_json(text)
    units = []
    for line in text.splitlines():
        # Without --plain, failed units carry a bullet in front.
        fields = line.removeprefix("●").split(None, 4)
        if not fields:
            continue
        if len(fields) < 4 or fields[1] not in LOAD_STATES:
            raise FactParseError(
                "systemctl list-units",
                "expected --plain --no-legend rows UNIT LOAD ACTIVE SUB",
                text,
            )
        name, load, active, sub = fields[:4]
        units.append(UnitStatus(name, load, active, sub, fields[4] if len(fields) > 4 else ""))
    return units


# The failed units are one listing like any other.
parse_failed_units = parse_list_units


def _units_from_json(text: str) -> list[UnitStatus]:
    try:
        rows = json.loads(text)
        return [
            UnitStatus(row["unit"], row["load"], row["active"], row["sub"], row["description"])
            for row in rows
        ]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise FactParseError("systemctl list-units", f"unexpected JSON ({error})", text) from error


def parse_unit_show(text: str) -> dict[str, UnitStatus]:
    """Parse ``systemctl show -p Id,LoadState,ActiveState,SubState[,NRestarts] UNIT...``.

    One block of ``Key=value`` lines per unit, blocks separated by a blank line.

    + text: the command's whole output
    """
    units = {}
    for block in text.strip().split("\n\n"):
        if not block.strip():
            continue
        props = {}
        for line in block.splitlines():
            key, equals, value = line.partition("=")
            if equals:
                props[key] = value
        try:
            name = props["Id"]
            restarts = props.get("NRestarts", "")
            units[name] = UnitStatus(
                name, props["LoadState"], props["ActiveState"], props["SubState"],
                restarts=int(restarts) if restarts.isdigit() else None,
            )  # fmt: skip
        except KeyError as error:
            raise FactParseError("systemctl show", f"a unit block lacks {error}", block) from error
    return units

"""
systemd facts: the manager's overall state, the failed units, and the state of given units.

The parsers are pure functions tested on outputs captured from systemd 252; the facts run
``systemctl`` and call them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, cast, get_args

from pyinfra.api import FactBase, QuoteString, StringCommand
from typing_extensions import override

from nixfleet.facts.errors import FactParseError
from nixfleet.facts.results import FactResult

# What systemctl is-system-running prints (systemctl(1)).
ManagerState = Literal[
    "initializing", "starting", "running", "degraded", "maintenance", "stopping", "offline",
    "unknown",
]  # fmt: skip
MANAGER_STATES: frozenset[str] = frozenset(get_args(ManagerState))
# systemd's unit load states (systemd.unit(5)); a row with another LOAD is not a unit.
LOAD_STATES = frozenset({"stub", "loaded", "not-found", "bad-setting", "error", "merged", "masked"})


@dataclass(frozen=True)
class UnitStatus(FactResult):
    """One unit's load, active and sub state (``systemctl list-units`` columns)."""

    name: str  # the unit's full id: sshd.service
    load: str  # loaded, not-found, masked, error...
    active: str  # active, inactive, failed, activating...
    sub: str  # running, exited, dead, failed...
    description: str = ""

    @property
    def is_failed(self) -> bool:
        return self.active == "failed"


def parse_system_state(text: str) -> ManagerState:
    """Parse ``systemctl is-system-running``: one word such as running or degraded.

    + text: the command's whole output
    """
    word = text.strip()
    if word not in MANAGER_STATES:
        raise FactParseError("systemctl is-system-running", "not a system state", text)
    return cast(ManagerState, word)


def parse_failed_units(text: str) -> list[UnitStatus]:
    """Parse ``systemctl list-units --failed``, as JSON or as ``--plain --no-legend`` text.

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
    """Parse ``systemctl show -p Id,LoadState,ActiveState,SubState UNIT...``.

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
            units[name] = UnitStatus(
                name, props["LoadState"], props["ActiveState"], props["SubState"]
            )
        except KeyError as error:
            raise FactParseError("systemctl show", f"a unit block lacks {error}", block) from error
    return units


class SystemState(FactBase[ManagerState | None]):
    """
    Returns the manager's state from ``systemctl is-system-running``: running, degraded
    (some unit failed), starting... None where there is no systemctl.
    """

    @override
    def requires_command(self) -> str:
        return "systemctl"

    @override
    def command(self) -> str:
        # It exits non-zero for every state but running; the word is what matters.
        return "systemctl is-system-running || true"

    @override
    def process(self, output: list[str]) -> ManagerState:
        return parse_system_state("\n".join(output))


class FailedUnits(FactBase[list[UnitStatus]]):
    """
    Returns the units in the failed state.

    **Example:**

    .. code:: python

        [unit.name for unit in host.get_fact(FailedUnits)]  # ["broken-thing.service"]
    """

    @override
    def requires_command(self) -> str:
        return "systemctl"

    @override
    def command(self) -> str:
        return "systemctl list-units --failed --output=json --plain --no-legend --no-pager"

    @staticmethod
    @override
    def default() -> list[UnitStatus]:
        return []

    @override
    def process(self, output: list[str]) -> list[UnitStatus]:
        return parse_failed_units("\n".join(output))


class UnitStates(FactBase[dict[str, UnitStatus]]):
    """
    Returns the load/active/sub state of the given units, keyed by unit id (a name given
    without a suffix comes back as ``NAME.service``). Unknown units have load
    ``not-found``.

    + units: unit names to look up

    **Example:**

    .. code:: python

        host.get_fact(UnitStates, units=["sshd.service"])["sshd.service"].active  # "active"
    """

    @override
    def requires_command(self, units: list[str]) -> str:
        return "systemctl"

    @override
    def command(self, units: list[str]) -> StringCommand | str:
        if not units:
            return "true"  # without units, systemctl show prints the manager's properties
        return StringCommand(
            "systemctl",
            "show",
            "--no-pager",
            "-p",
            "Id,LoadState,ActiveState,SubState",
            *(QuoteString(unit) for unit in units),
        )

    @staticmethod
    @override
    def default() -> dict[str, UnitStatus]:
        return {}

    @override
    def process(self, output: list[str]) -> dict[str, UnitStatus]:
        return parse_unit_show("\n".join(output))

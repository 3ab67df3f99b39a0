"""
systemd facts: the manager's overall state, the failed units, and the state of given units.

The parsers are pure functions in nixfleet.facts.parsers.systemd (shared with the exporters;
their names are re-exported here), tested on outputs captured from systemd 252; the facts run
``systemctl`` and call them.
"""

from __future__ import annotations

from pyinfra.api import FactBase
from typing_extensions import override

from nixfleet.facts.errors import FactParseError
from nixfleet.facts.parsers.systemd import (
    LOAD_STATES,
    MANAGER_STATES,
    SYSTEM_STATE_COMMAND,
    ManagerState,
    UnitStatus,
    list_units_command,
    parse_failed_units,
    parse_list_units,
    parse_system_state,
    parse_unit_show,
    unit_show_command,
)

__all__ = [
    "LOAD_STATES", "MANAGER_STATES", "FactParseError", "FailedUnits", "ManagerState",
    "SystemState", "UnitStates", "UnitStatus", "parse_failed_units", "parse_list_units",
    "parse_system_state", "parse_unit_show",
]  # fmt: skip


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
        return SYSTEM_STATE_COMMAND

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
        return list_units_command("--failed")

    @staticmethod
    @override
    def default() -> list[UnitStatus]:
        return []

    @override
    def process(self, output: list[str]) -> list[UnitStatus]:
        return parse_list_units("\n".join(output))


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
    def command(self, units: list[str]) -> str:
        if not units:
            return "true"  # without units, systemctl show prints the manager's properties
        return unit_show_command(units)

    @staticmethod
    @override
    def default() -> dict[str, UnitStatus]:
        return {}

    @override
    def process(self, output: list[str]) -> dict[str, UnitStatus]:
        return parse_unit_show("\n".join(output))

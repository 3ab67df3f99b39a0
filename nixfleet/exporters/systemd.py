"""The systemd exporter (:9102): unit counts, each service's real active state, the manager's
state and restart counts.

Read in the background every ``--interval`` seconds (nixfleet.exporters.sources) with the
facts' commands and parsers (nixfleet.facts.parsers.systemd). Metric names:
nixfleet/exporters/__init__.py.

    nixfleet-systemd-exporter [--port 9102] [--interval 15]
    python -m nixfleet.exporters.systemd --help
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence

from nixfleet.exporters import serve
from nixfleet.exporters.sources import Family, Sample, Source, run, sample
from nixfleet.facts.parsers.systemd import (
    SYSTEM_STATE_COMMAND,
    UNIT_SHOW_PROPERTIES,
    ManagerState,
    UnitStatus,
    list_units_command,
    parse_list_units,
    parse_system_state,
    parse_unit_show,
    unit_show_command,
)

PORT = 9102  # nix/lib/ports.json: systemdExporter
PREFIX = "systemd_exporter"
# The original exporter's values, kept so its dashboards read the same.
UNIT_STATE_VALUES = {"active": 1, "failed": 2, "inactive": 0}
UNIT_STATE_OTHER = 3  # activating, deactivating, reloading, maintenance
SYSTEM_STATE_VALUES = {"running": 1, "degraded": 2, "starting": 3, "stopping": 4}
SYSTEM_STATE_OTHER = 0  # initializing, maintenance, offline, unknown

UNITS_TOTAL = Family("systemd_units_total", "Units systemd has loaded (list-units --all)")
UNITS_ACTIVE = Family("systemd_units_active", "Units in the active state")
UNITS_FAILED = Family("systemd_units_failed", "Units in the failed state")
UNIT_STATE = Family(
    "systemd_unit_state",
    "Each service's active state (label state): active=1, failed=2, inactive=0, other=3",
    ("unit", "state"),
)
SYSTEM_STATE = Family(
    "systemd_system_state",
    "systemctl is-system-running: running=1, degraded=2, starting=3, stopping=4, other=0",
)
UNIT_RESTARTS = Family(
    "systemd_unit_restarts_total", "Automatic restarts of each loaded service (NRestarts)",
    ("unit",), "counter",
)  # fmt: skip
FAMILIES = (UNITS_TOTAL, UNITS_ACTIVE, UNITS_FAILED, UNIT_STATE, SYSTEM_STATE, UNIT_RESTARTS)


def sources(interval: float) -> list[Source]:
    """Every source of the systemd exporter.

    + interval: seconds between reads
    """
    restarts_command = unit_show_command(["*.service"], (*UNIT_SHOW_PROPERTIES, "NRestarts"))
    return [
        Source("units", lambda: parse_list_units(run("systemctl", list_units_command("--all"))),
               unit_samples, interval),
        Source("system_state", lambda: parse_system_state(run("systemctl", SYSTEM_STATE_COMMAND)),
               system_state_samples, interval),
        Source("restarts", lambda: parse_unit_show(run("systemctl", restarts_command)),
               restart_samples, interval),
    ]  # fmt: skip


def unit_samples(units: list[UnitStatus]) -> Iterator[Sample]:
    yield sample(UNITS_TOTAL, len(units))
    yield sample(UNITS_ACTIVE, sum(1 for unit in units if unit.active == "active"))
    yield sample(UNITS_FAILED, sum(1 for unit in units if unit.is_failed))
    for unit in units:
        # A unit something refers to but that does not exist has no state worth a series.
        if unit.name.endswith(".service") and unit.load != "not-found":
            value = UNIT_STATE_VALUES.get(unit.active, UNIT_STATE_OTHER)
            yield sample(UNIT_STATE, value, unit.name, unit.active)


def system_state_samples(state: ManagerState) -> Iterator[Sample]:
    yield sample(SYSTEM_STATE, SYSTEM_STATE_VALUES.get(state, SYSTEM_STATE_OTHER))


def restart_samples(units: dict[str, UnitStatus]) -> Iterator[Sample]:
    for name, unit in sorted(units.items()):
        if unit.restarts is not None:
            yield sample(UNIT_RESTARTS, unit.restarts, name)


EXPORTER = serve.Exporter(
    name="nixfleet-systemd-exporter",
    description="Prometheus exporter of systemd: unit counts and states, system state, restarts.",
    port=PORT,
    interval=15,
    prefix=PREFIX,
    families=FAMILIES,
    sources=lambda args: sources(args.interval),
)


def main(argv: Sequence[str] | None = None) -> int:
    return serve.main(EXPORTER, argv)


if __name__ == "__main__":
    sys.exit(main())

"""pyinfra's facts/ folder: `pyinfra inventory.py fact facts.systemd.NAME` from this repository.
The facts are nixfleet's own (nixfleet/facts/systemd.py), so they also work wherever nixfleet is
installed, as `nixfleet.facts.systemd.NAME`."""

from nixfleet.facts.systemd import FailedUnits, SystemState, UnitStates

__all__ = ["FailedUnits", "SystemState", "UnitStates"]

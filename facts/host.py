"""pyinfra's facts/ folder: `pyinfra inventory.py fact facts.host.NAME` from this repository.
The facts are nixfleet's own (nixfleet/facts/host.py), so they also work wherever nixfleet is
installed, as `nixfleet.facts.host.NAME`."""

from nixfleet.facts.host import HostOverview

__all__ = ["HostOverview"]

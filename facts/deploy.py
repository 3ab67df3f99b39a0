"""pyinfra's facts/ folder: `pyinfra inventory.py fact facts.deploy.NAME` from this repository.
The facts are nixfleet's own (nixfleet/facts/deploy.py), so they also work wherever nixfleet is
installed, as `nixfleet.facts.deploy.NAME`."""

from nixfleet.facts.deploy import HostDeployState

__all__ = ["HostDeployState"]

"""pyinfra's facts/ folder: `pyinfra inventory.py fact facts.secrets.NAME` from this repository.
The facts are nixfleet's own (nixfleet/facts/secrets.py), so they also work wherever nixfleet is
installed, as `nixfleet.facts.secrets.NAME`."""

from nixfleet.facts.secrets import AgenixFiles

__all__ = ["AgenixFiles"]

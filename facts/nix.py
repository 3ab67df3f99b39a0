"""pyinfra's facts/ folder: `pyinfra inventory.py fact facts.nix.NAME` from this repository.
The facts are nixfleet's own (nixfleet/facts/nix.py), so they also work wherever nixfleet is
installed, as `nixfleet.facts.nix.NAME`."""

from nixfleet.facts.nix import BootedSystem, CurrentSystem, NixGenerations, NixStore

__all__ = ["BootedSystem", "CurrentSystem", "NixGenerations", "NixStore"]

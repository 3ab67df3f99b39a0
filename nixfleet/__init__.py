"""nixfleet: run a fleet of NixOS machines from Python (pyinfra inventory, deploys, facts)."""

__version__ = "0.1.0"

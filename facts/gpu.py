"""pyinfra's facts/ folder: `pyinfra inventory.py fact facts.gpu.NAME` from this repository.
The facts are nixfleet's own (nixfleet/facts/gpu.py), so they also work wherever nixfleet is
installed, as `nixfleet.facts.gpu.NAME`."""

from nixfleet.facts.gpu import AmdGpus, NvidiaGpus, PciGpus

__all__ = ["AmdGpus", "NvidiaGpus", "PciGpus"]

"""`from operations import nixos` in a deploy file of this repository: nixfleet's operations
(nixfleet/operations/nixos.py), also importable as `nixfleet.operations.nixos`."""

from nixfleet.operations.nixos import reboot, rebuild, rollback

__all__ = ["reboot", "rebuild", "rollback"]

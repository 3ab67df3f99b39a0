"""nixos-rebuild dry-activate on every selected host: what switch would stop, restart, start."""

from nixfleet.deploy import deploy

deploy("dry-activate")

"""Only push the flake to every selected host's flake directory (no build, no activation)."""

from nixfleet.deploy import deploy

deploy("push")

"""nixos-rebuild switch on every selected host.

    pyinfra inventory.py deploys/switch.py [--limit HOST|GROUP] -y
"""

from nixfleet.deploy import deploy

deploy("switch")

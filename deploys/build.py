"""nixos-rebuild build on every selected host.

    pyinfra inventory.py deploys/build.py [--limit HOST|GROUP] -y
"""

from nixfleet.deploy import deploy

deploy("build")

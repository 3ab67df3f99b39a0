"""nixos-rebuild boot on every selected host: pyinfra inventory.py deploys/boot.py --limit ... -y"""

from nixfleet.deploy import deploy

deploy("boot")

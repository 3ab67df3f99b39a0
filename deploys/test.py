"""nixos-rebuild test on every selected host: pyinfra inventory.py deploys/test.py --limit ... -y"""

from nixfleet.deploy import deploy

deploy("test")

"""Post-deploy verification of the fleet (pytest-testinfra): `nixfleet verify`, or plain

    pytest tests/fleet [--hosts p620,nvidia] [--fleet-workers N]

Each module is one concern; which hosts a check runs on comes from the inventory
(nixfleet.verify.plugin). NIXFLEET_TARGET=lab checks the lab's hosts. What a host's checks
read comes from one SSH command per host (`reads`, tests/fleet/support.py).
"""

from nixfleet.verify.plugin import *  # noqa: F403  (its hooks and fixtures: __all__)
from tests.fleet.support import reads  # noqa: F401  (the checks' fixture)

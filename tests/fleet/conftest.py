"""Post-deploy verification of the fleet (pytest-testinfra): `nixfleet verify`, or plain

    pytest tests/fleet [--hosts p620,nvidia] [-n 4]

Each module is one concern; which hosts a check runs on comes from the inventory
(nixfleet.verify.plugin). NIXFLEET_TARGET=lab checks the lab's hosts.
"""

from nixfleet.verify.plugin import (  # noqa: F401  (the plugin's hooks and fixtures)
    config_root,
    fleet,
    fleet_host,
    host,
    note,
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_generate_tests,
    pytest_runtest_makereport,
    spec,
    verify_session,
)

"""Post-deploy verification: the fleet checked with pytest-testinfra, checks chosen per host
from the inventory.

    nixfleet verify [--limit PATTERN] [-n N] [--junit FILE] [--json]
    pytest tests/fleet [--hosts p620,nvidia]          # the same suite, plain pytest

The suite is tests/fleet/ of the configuration repository (one module per concern); this
package is what it stands on: the pytest plugin (which hosts each check applies to, the SSH
connections, the per-host table), what each host must show (expect), the report (report) and
how a command or a deploy runs the suite (run).
"""

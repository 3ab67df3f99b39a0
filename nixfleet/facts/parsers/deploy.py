"""What the last nixfleet deploy that finished on a host left there.

nixfleet/remote/deploy.sh writes LAST_DEPLOY when a deploy finishes: ``FLAKE_HASH TOPLEVEL``,
the hash of the flake directory it deployed and the system it built from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from nixfleet.facts.results import FactResult

LAST_DEPLOY = "/var/lib/nixfleet/last-deploy"


@dataclass(frozen=True)
class LastDeploy(FactResult):
    flake_hash: str | None
    toplevel: str | None


def parse_last_deploy(text: str) -> LastDeploy:
    """Parse LAST_DEPLOY's ``FLAKE_HASH TOPLEVEL`` (empty: never deployed).

    + text: the file's content
    """
    flake_hash, _, toplevel = text.strip().partition(" ")
    return LastDeploy(flake_hash or None, toplevel.strip() or None)

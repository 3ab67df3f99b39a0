"""What /run/agenix on a host must hold, for the agenix checks: the rules and the sha256 of
each locally decrypted value (decrypted once per process, never written or shown)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from nixfleet.secrets.delivery import Expected, ValueHashes, expected_secrets
from nixfleet.target import current_target

if TYPE_CHECKING:
    from nixfleet.verify.plugin import VerifySession


def expected_secrets_of(session: VerifySession, host: str) -> list[Expected]:
    """The host's secrets as the rules give them, with the sha256 their content must have."""
    hashes = _value_hashes(session)
    return expected_secrets(hashes.store, host, hashes)


@cache
def _value_hashes(session: VerifySession) -> ValueHashes:
    """Each secret decrypted once per session and process, whatever the number of hosts."""
    store = current_target().secrets_store(
        session.fleet, session.root, [Path(p) for p in session.identities])
    return ValueHashes(store)

"""Hosts the secrets rules name: /run/agenix holds each of their secrets with the owner, group,
mode and content (by sha256 of the locally decrypted value) the rules give, and nothing else.
Only hashes travel; no value leaves the deployer or the host."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from nixfleet.facts.secrets import AGENIX_FILES_COMMAND, parse_agenix_files
from nixfleet.secrets.delivery import compare
from nixfleet.verify.secrets import expected_secrets_of


def _agenix(reads) -> dict:
    """The host's /run/agenix (read with the rest of its checks' reads)."""
    state = parse_agenix_files(reads.check_output(AGENIX_FILES_COMMAND))
    return {"generation": state.generation,
            "files": {k: asdict(v) for k, v in state.files.items()}}


def _secrets(spec, session):
    return [(item.spec.name, item) for item in expected_secrets_of(session, spec.name)]


@pytest.mark.fleet(each=_secrets, arg="secret")
def test_the_secret_is_in_place(reads, spec, secret):
    delivery = compare(spec.name, [secret], _agenix(reads))
    problems = [p.detail for p in delivery.problems if p.secret == secret.spec.name]
    assert not problems, "; ".join(problems)


def test_no_secret_it_should_not_have(reads, spec, verify_session):
    expected = expected_secrets_of(verify_session, spec.name)
    delivery = compare(spec.name, expected, _agenix(reads))
    unexpected = [p.secret for p in delivery.problems if p.kind == "unexpected"]
    assert not unexpected, f"in /run/agenix but not its secret: {', '.join(unexpected)}"

"""Hosts the secrets rules name: /run/agenix holds each of their secrets with the owner, group,
mode and content (by sha256 of the locally decrypted value) the rules give, and nothing else.
Only hashes travel; no value leaves the deployer or the host."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from nixfleet.facts.secrets import AGENIX_FILES_COMMAND, parse_agenix_files
from nixfleet.secrets.delivery import compare
from nixfleet.verify.secrets import expected_secrets_of

# A host's /run/agenix, read once per host (all of its secrets' checks run in one worker).
_STATE: dict[str, dict] = {}


def _agenix(host, name: str) -> dict:
    if name not in _STATE:
        state = parse_agenix_files(host.check_output(AGENIX_FILES_COMMAND))
        _STATE[name] = {"generation": state.generation,
                        "files": {k: asdict(v) for k, v in state.files.items()}}
    return _STATE[name]


def _secrets(spec, session):
    return [(item.spec.name, item) for item in expected_secrets_of(session, spec.name)]


@pytest.mark.fleet(each=_secrets, arg="secret")
def test_the_secret_is_in_place(host, spec, secret):
    delivery = compare(spec.name, [secret], _agenix(host, spec.name))
    problems = [p.detail for p in delivery.problems if p.secret == secret.spec.name]
    assert not problems, "; ".join(problems)


def test_no_secret_it_should_not_have(host, spec, verify_session):
    expected = expected_secrets_of(verify_session, spec.name)
    delivery = compare(spec.name, expected, _agenix(host, spec.name))
    unexpected = [p.secret for p in delivery.problems if p.kind == "unexpected"]
    assert not unexpected, f"in /run/agenix but not its secret: {', '.join(unexpected)}"

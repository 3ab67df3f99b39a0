"""The fleet's binary cache: the server answers /nix-cache-info; each client's Nix lists it as
a substituter; every host's Nix trusts its public key (nix/binary-cache.pub; the lab's own key
in the lab)."""

from __future__ import annotations

import pytest

from nixfleet.target import current_target
from nixfleet.verify.expect import binary_cache_url, is_cache_client, is_server
from tests.fleet.support import NIX_CONFIG, fetch


@pytest.mark.fleet(hosts=lambda spec, session: is_server(spec))
def test_the_cache_answers(reads, spec, config_root):
    url = binary_cache_url(spec.name, config_root, at="localhost")
    info = fetch(reads, f"{url}/nix-cache-info")
    assert "StoreDir: /nix/store" in info, f"{url}/nix-cache-info says {info[:60]!r}"


@pytest.mark.fleet(hosts=lambda spec, session: is_cache_client(spec))
def test_nix_substitutes_from_the_fleet_cache(reads, spec, config_root):
    settings = dict(line.split(" = ", 1) for line in reads.check_output(NIX_CONFIG).splitlines()
                    if " = " in line)
    url = binary_cache_url(spec.features.monitoring.serverHost, config_root)
    assert url in settings.get("substituters", "").split(), \
        f"substituters do not list {url}: {settings.get('substituters') or 'none'}"


def test_nix_trusts_the_fleets_signing_key(reads, fleet, config_root):
    """On every host: what the fleet's cache serves and what a builder host (deploy.buildOn)
    builds for it are signed with that key."""
    settings = dict(line.split(" = ", 1) for line in reads.check_output(NIX_CONFIG).splitlines()
                    if " = " in line)
    key = current_target().binary_cache_public_key(fleet, config_root)
    assert key in settings.get("trusted-public-keys", "").split(), \
        f"trusted-public-keys lack {key.split(':')[0]}"

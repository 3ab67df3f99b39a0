"""Hosts with features.ai: the providers file ai-cli reads is the inventory's; where Ollama
runs, it serves the configured default model."""

from __future__ import annotations

import json

import pytest

from nixfleet.verify.expect import ai_providers, has_providers_file, ollama_model, runs_ollama
from tests.fleet.support import OLLAMA_RUNNING, PROVIDERS, PROVIDERS_FILE, fetch_json, ollama_urls


@pytest.mark.fleet(hosts=lambda spec, session: has_providers_file(spec))
def test_the_providers_file_is_what_the_inventory_says(reads, spec, config_root):
    found = reads.run(PROVIDERS)
    assert found.rc == 0, found.stderr.strip() or f"no {PROVIDERS_FILE}"
    try:
        have = json.loads(found.stdout)
    except ValueError:
        raise AssertionError(f"{PROVIDERS_FILE} is not JSON") from None
    want = ai_providers(spec, config_root)
    differ = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
    assert not differ, f"{PROVIDERS_FILE} differs from the inventory's in: {', '.join(differ)}"


@pytest.mark.fleet(hosts=lambda spec, session: runs_ollama(spec))
def test_ollama_serves_the_configured_default_model(reads, spec, config_root):
    assert reads.run(OLLAMA_RUNNING).rc == 0, "ollama.service is not running"
    version_url, tags_url = ollama_urls(spec, config_root)
    version = fetch_json(reads, version_url)
    assert version.get("version"), f"{version_url} gives no version"
    models = [m["name"] for m in fetch_json(reads, tags_url).get("models", [])]
    want = ollama_model(ai_providers(spec, config_root)["providers"]["ollama"]["defaultModel"])
    assert want in models, f"default model {want} missing (has: {', '.join(models) or 'none'})"

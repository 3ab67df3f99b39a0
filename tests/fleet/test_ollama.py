"""Hosts with features.ai: the providers file ai-cli reads is the inventory's; where Ollama
runs, it serves the configured default model."""

from __future__ import annotations

import json

import pytest

from nixfleet.verify.expect import ai_providers, ollama_model
from tests.fleet.support import fetch_json

PROVIDERS_FILE = "/etc/ai-providers.json"


@pytest.mark.fleet(hosts=lambda spec, session: spec.features.ai.enable
                   and spec.features.ai.providers.enable)
def test_the_providers_file_is_what_the_inventory_says(host, spec, config_root):
    found = host.file(PROVIDERS_FILE)
    assert found.exists, f"no {PROVIDERS_FILE}"
    try:
        have = json.loads(found.content_string)
    except ValueError:
        raise AssertionError(f"{PROVIDERS_FILE} is not JSON") from None
    want = ai_providers(spec, config_root)
    differ = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
    assert not differ, f"{PROVIDERS_FILE} differs from the inventory's in: {', '.join(differ)}"


@pytest.mark.fleet(hosts=lambda spec, session: spec.features.ai.enable
                   and spec.features.ai.ollama)
def test_ollama_serves_the_configured_default_model(host, spec, config_root):
    providers = ai_providers(spec, config_root)["providers"]["ollama"]
    service = host.service("ollama")
    assert service.is_running, "ollama.service is not running"
    base = providers["baseUrl"]
    version = fetch_json(host, f"{base}/api/version")
    assert version.get("version"), f"{base}/api/version gives no version"
    models = [m["name"] for m in fetch_json(host, f"{base}/api/tags").get("models", [])]
    want = ollama_model(providers["defaultModel"])
    assert want in models, f"default model {want} missing (has: {', '.join(models) or 'none'})"

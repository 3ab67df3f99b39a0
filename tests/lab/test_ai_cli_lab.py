"""ai-cli on the lab hosts: installed by their generation as on NixOS, answering from the lab's
Ollama stand-in, falling back to it when the cloud providers fail, and --status matching the
inventory on every host.

No request leaves the host it runs on: every run uses a copy of the host's own
/etc/ai-providers.json in which only the cloud providers' baseUrl is changed, to loopback
servers that fail (a 401, a 503, a closed port). The keys are the lab's agenix dummies, read by
the host's admin user as on a real host.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator

import pytest

from nixfleet.inventory import Fleet, load_inventory_file
from tests.lab.conftest import HOSTS, ROOT, on, write_on

pytestmark = pytest.mark.usefixtures("lab")

CONFIG = "/etc/ai-providers.json"
TEST_CONFIG = "/run/ai-cli-lab-test.json"
FAILING = "/run/ai-cli-lab-failing.py"
FAILING_PORT = 18099
CLOSED = "http://127.0.0.1:9"  # nothing listens there
# Where each cloud provider is sent instead (its real baseUrl keeps its path shape).
LOOPBACK = {"anthropic": f"http://127.0.0.1:{FAILING_PORT}/401",
            "openai": f"http://127.0.0.1:{FAILING_PORT}/503/v1",
            "gemini": f"{CLOSED}/v1beta"}
# A loopback server that answers every request with the status its path starts with.
FAILING_SERVER = f"""
import json
from http.server import BaseHTTPRequestHandler, HTTPServer

class Failing(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = int(self.path.split("/")[1])
        body = json.dumps({{"error": {{"message": f"lab test: always {{status}}"}}}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

HTTPServer(("127.0.0.1", {FAILING_PORT}), Failing).serve_forever()
"""
# Run on the host: the host's own configuration with the cloud providers on loopback.
REWRITE = f"""
import json
config = json.load(open({CONFIG!r}))
for name, url in {LOOPBACK!r}.items():
    config["providers"][name]["baseUrl"] = url
json.dump(config, open({TEST_CONFIG!r}, "w"))
"""


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NIXFLEET_TARGET", "fleet")
        return load_inventory_file(ROOT / "inventory.py")


@pytest.fixture(scope="module")
def loopback_config() -> Iterator[None]:
    """On every host, TEST_CONFIG: its /etc/ai-providers.json with the cloud providers on
    loopback, readable by its users."""
    for host in HOSTS:
        on(host, f"python3 -c {shlex.quote(REWRITE)} && chmod 0644 {TEST_CONFIG}")
    yield
    for host in HOSTS:
        on(host, f"rm -f {TEST_CONFIG}", check=False)


def ai_cli(fleet: Fleet, host: str, args: str, check: bool = True):
    """ai-cli as the host's admin user (the owner of its agenix API keys), on TEST_CONFIG."""
    user = fleet.hosts[host].users[0].name
    return on(host, f"runuser -u {user} -- env AI_PROVIDERS_CONFIG={TEST_CONFIG} {args}",
              check=check)


def test_hosts_with_ai_providers_have_ai_cli_and_ai_chat_from_their_generation(fleet):
    for host in HOSTS:
        found = on(host, "command -v ai-cli ai-chat").stdout.split()
        assert found == ["/run/current-system/sw/bin/ai-cli",
                         "/run/current-system/sw/bin/ai-chat"], host
        assert on(host, "readlink /run/current-system/sw/bin/ai-cli").stdout.strip() == (
            "/usr/lib/nixfleet-lab/ai-cli")


@pytest.mark.usefixtures("loopback_config")
@pytest.mark.parametrize("host", ["p620", "p510"])
def test_ai_cli_p_ollama_answers_from_the_ollama_stand_in(fleet, host):
    result = ai_cli(fleet, host, "ai-cli -p ollama 'what does the lab run?'")

    assert result.stdout == ('Lab stand-in for Ollama (mistral-small3.1), no model ran. You '
                             'said: "what does the lab run?"\n')
    assert result.stderr == ""
    chat = ai_cli(fleet, host, "ai-chat -p ollama -m llama3.2 hello")
    assert chat.stdout.startswith("Lab stand-in for Ollama (llama3.2)")


@pytest.mark.usefixtures("loopback_config")
def test_with_the_cloud_failing_the_prompt_falls_back_to_ollama_and_says_so(fleet):
    host = "p620"
    assert fleet.hosts[host].features.ai.providers.defaultProvider == "anthropic"
    write_on(host, FAILING, FAILING_SERVER)
    on(host, f"systemd-run --unit ai-cli-lab-failing --collect python3 {FAILING} && "
             f"for i in $(seq 50); do python3 -c \"import socket; socket.create_connection("
             f"('127.0.0.1', {FAILING_PORT}))\" 2>/dev/null && exit 0; sleep 0.1; done; exit 1")
    try:
        result = ai_cli(fleet, host, "ai-cli -f 'is anyone there?'")
    finally:
        on(host, "systemctl stop ai-cli-lab-failing", check=False)

    assert result.stdout == ('Lab stand-in for Ollama (mistral-small3.1), no model ran. You '
                             'said: "is anyone there?"\n')
    assert result.stderr.splitlines() == [
        "ai-cli: anthropic (claude-3-5-sonnet-20241022) failed: HTTP 401: lab test: always 401; "
        "trying openai (gpt-4o-mini)",
        "ai-cli: openai (gpt-4o-mini) failed: HTTP 503: lab test: always 503 (4 attempts); "
        "trying gemini (gemini-1.5-flash)",
        "ai-cli: gemini (gemini-1.5-flash) failed: cannot connect to 127.0.0.1:9: Connection "
        "refused (4 attempts); trying ollama (mistral-small3.1)",
        "ai-cli: ollama (mistral-small3.1) answered after anthropic, openai and gemini failed"]


@pytest.mark.usefixtures("loopback_config")
def test_status_on_every_host_matches_its_inventory(fleet):
    for host in HOSTS:
        settings = fleet.hosts[host].features.ai.providers
        admin = fleet.hosts[host].users[0].name
        result = ai_cli(fleet, host, "ai-cli --status --json", check=False)
        status = json.loads(result.stdout)
        rows = {row["name"]: row for row in status["providers"]}
        ollama_host = host in fleet.groups["ollama"]

        assert (status["defaultProvider"], status["enableFallback"], status["timeout"],
                status["maxRetries"]) == (settings.defaultProvider, settings.enableFallback,
                                          settings.timeout, settings.maxRetries), host
        assert [n for n, row in rows.items() if row["enabled"]] == settings.enabled, host
        assert {n: row["priority"] for n, row in rows.items()} == {
            "openai": 1, "anthropic": 2, "gemini": 3, "ollama": 4}
        for name in ("openai", "anthropic", "gemini"):
            # The lab's agenix delivered the key, readable by the admin, never printed.
            assert rows[name]["key_file"] == f"/run/agenix/api-{name}"
            assert (rows[name]["key_present"], rows[name]["key_readable"]) == (True, True), (
                host, name)
            assert rows[name]["reachable"] is False  # the loopback port of LOOPBACK
        key = on(host, "cat /run/agenix/api-openai").stdout.strip()
        assert key and key not in result.stdout + result.stderr
        assert on(host, "stat -c %U:%a /run/agenix/api-openai").stdout.strip() == f"{admin}:600"

        assert rows["ollama"]["enabled"] is ollama_host, host
        if ollama_host:
            assert (rows["ollama"]["reachable"], rows["ollama"]["ready"]) == (True, True)
            assert rows["ollama"]["live_models"] == ["llama3.2:latest", "mistral-small3.1:latest"]
            assert result.returncode == 0
        else:  # dex5550 and razer: no Ollama; with the cloud unreachable nothing is ready
            assert rows["ollama"]["reachable"] is None
            assert rows["ollama"]["detail"] == "not enabled on this host"
            assert result.returncode == 3
    # The table a user reads on a wide terminal (a row a line): dex5550 without Ollama. Below
    # the settings, after an empty line.
    out = ai_cli(fleet, "dex5550", "env COLUMNS=200 ai-cli --status", check=False).stdout
    table = out.split("\n\n", 1)[1].splitlines()
    assert table[0].split()[:3] == ["provider", "enabled", "priority"]
    assert [line.split()[:3] for line in table[1:]] == [
        ["openai", "yes", "1"], ["anthropic", "yes", "2"], ["gemini", "yes", "3"],
        ["ollama", "no", "4"]]

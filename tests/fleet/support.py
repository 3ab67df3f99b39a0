"""What the checks share: what a host's checks read from it, got in one SSH command (`reads`);
HTTP over the host's own curl; and the exposition parser."""

from __future__ import annotations

import json
import re
import secrets
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from testinfra.backend.base import CommandResult

from nixfleet.facts.parsers.gpu import (
    LSPCI_COMMAND,
    NVIDIA_METRICS_FIELDS,
    ROCM_SMI_QUERY,
    nvidia_smi_query,
    parse_nvidia_smi_csv,
    parse_rocm_smi_json,
)
from nixfleet.facts.parsers.nix import SYSTEM_PROFILE
from nixfleet.facts.secrets import AGENIX_FILES_COMMAND
from nixfleet.model import Host
from nixfleet.monitoring import read_ports
from nixfleet.verify.expect import (
    ai_providers,
    alerts,
    binary_cache_url,
    exporters,
    has_providers_file,
    is_cache_client,
    is_server,
    runs_ollama,
)

# --- the commands the checks read ------------------------------------------------------------

LAST_DEPLOY = "/var/lib/nixfleet/last-deploy"  # "<flake hash> <toplevel>", written by deploys
SYSTEM_STATE = "systemctl is-system-running; systemctl list-units --failed --plain --no-legend"
# The record (an empty line without one), what runs, the boot default.
GENERATION = (f"head -n1 {LAST_DEPLOY} 2>/dev/null || echo; "
              f"readlink -f /run/current-system {SYSTEM_PROFILE}")
BOOT_PARTS = ("kernel", "initrd", "kernel-modules")
NIX_CONFIG = "nix --extra-experimental-features nix-command show-config"
LISTENING = "ss --numeric --listening --tcp"
EXPORTER_UNITS = {"node-exporter": "prometheus-node-exporter",
                  "nixos-exporter": "nixfleet-nixos-exporter",
                  "systemd-exporter": "nixfleet-systemd-exporter"}
# When each exporter's unit last became active, as @<seconds since the epoch>.
EXPORTER_STARTS = ("systemctl show --timestamp=unix -p Id -p ActiveEnterTimestamp "
                   + " ".join(EXPORTER_UNITS.values()))
PROVIDERS_FILE = "/etc/ai-providers.json"
PROVIDERS = f"test -e {PROVIDERS_FILE} && cat -- {PROVIDERS_FILE}"
OLLAMA_RUNNING = "systemctl is-active ollama"
GRAFANA_PASSWORD = "/run/agenix/grafana-admin-password"
# The exporters' GPU queries, which name each GPU's PCI slot: vendor, command, parser, slot field.
COMPUTE: dict[str, tuple[str, str, Callable[[str], list[Any]], str]] = {
    "cuda": ("nvidia", nvidia_smi_query(NVIDIA_METRICS_FIELDS),
             lambda text: parse_nvidia_smi_csv(text, NVIDIA_METRICS_FIELDS), "pci_bus_id"),
    "rocm": ("amd", ROCM_SMI_QUERY, parse_rocm_smi_json, "pci_bus"),
}


def boot_parts(system: str) -> str:
    return " && ".join(f"readlink -f {system}/{part}" for part in BOOT_PARTS)


def metrics_url(port: int) -> str:
    return f"http://localhost:{port}/metrics"


def ollama_urls(spec: Host, root: Path) -> tuple[str, str]:
    """Ollama's version and its models, at the providers file's base URL."""
    base = ai_providers(spec, root)["providers"]["ollama"]["baseUrl"]
    return f"{base}/api/version", f"{base}/api/tags"


def server_urls(root: Path) -> dict[str, str]:
    """What a monitoring server's checks GET from the server itself."""
    ports = read_ports(root)
    prometheus = f"http://localhost:{ports['prometheus']}"
    grafana = f"http://localhost:{ports['grafana']}"
    return {"prometheus": f"{prometheus}/-/ready",
            "alertmanager": f"http://localhost:{ports['alertmanager']}/-/ready",
            "alertmanagers": f"{prometheus}/api/v1/alertmanagers",
            "grafana": f"{grafana}/api/health",
            "dashboards": f"{grafana}/api/search?type=dash-db"}  # as admin: GRAFANA_PASSWORD


def host_commands(spec: Host, root: Path) -> list[str]:
    """Every command the host's checks read (not the polls of live state), as its inventory
    calls for them: the same conditions as the checks' marks."""
    commands = ["id -u", SYSTEM_STATE, GENERATION, boot_parts("/run/booted-system"),
                boot_parts("/run/current-system"), AGENIX_FILES_COMMAND]
    if is_cache_client(spec):
        commands.append(NIX_CONFIG)
    if spec.gpus:
        commands.append(LSPCI_COMMAND)
        if spec.graphics.compute in COMPUTE:
            commands.append(COMPUTE[spec.graphics.compute][1])
    found = exporters(spec, root)
    if found:
        commands += [LISTENING, EXPORTER_STARTS,
                     *(fetch_command(metrics_url(e.port)) for e in found)]
    if has_providers_file(spec):
        commands.append(PROVIDERS)
    if runs_ollama(spec):
        commands += [OLLAMA_RUNNING, *(fetch_command(url) for url in ollama_urls(spec, root))]
    if is_server(spec):
        urls = server_urls(root)
        commands += [fetch_command(urls["prometheus"]), fetch_command(urls["grafana"]),
                     fetch_command(urls["dashboards"], GRAFANA_PASSWORD),
                     fetch_command(f"{binary_cache_url(spec.name, root, at='localhost')}"
                                   "/nix-cache-info")]
        if alerts(spec):
            commands += [fetch_command(urls["alertmanager"]), fetch_command(urls["alertmanagers"])]
    return commands


# --- one SSH command for all of them ---------------------------------------------------------


class Reads:
    """A host's answers to every command its checks read, got together in one SSH command (one
    ssh process here and one session there, instead of one each). Read like the host itself:
    run() and check_output() give what they would have; a command not among them runs on the
    host when asked."""

    def __init__(self, host: Any, commands: list[str]) -> None:
        self.host = host
        self.answers = run_together(host, commands)

    def run(self, command: str) -> Any:
        return self.answers[command] if command in self.answers else self.host.run(command)

    def check_output(self, command: str) -> str:
        out = self.run(command)
        assert out.rc == 0, f"Unexpected exit code {out.rc} for {out}"  # as testinfra's
        return str(out.stdout).rstrip("\r\n")


_READS: dict[str, Reads] = {}  # per host, in this process


@pytest.fixture
def reads(host: Any, spec: Host, config_root: Path) -> Reads:
    """What the host's checks read, from one SSH command run at its first check that asks.
    Checks that must see live state (a poll) use `host`."""
    if spec.name not in _READS:
        _READS[spec.name] = Reads(host, host_commands(spec, config_root))
    return _READS[spec.name]


def run_together(host: Any, commands: list[str]) -> dict[str, CommandResult]:
    """Run the commands on the host in one SSH command, one after another, each in a subshell;
    each one's exit status, stdout and stderr apart, as host.run would give them. A command the
    output does not answer (the script cut short) is left out."""
    commands = list(dict.fromkeys(commands))
    mark = f"--nixfleet-{secrets.token_hex(8)}--"
    script = "\n".join(f"printf '\\n%s\\n' {mark} >&2\n(\n{command}\n) </dev/null\n"
                       f"printf '\\n%s %d\\n' {mark} $?" for command in commands)
    whole = host.run(script)
    # Decoded here as UTF-8 (testinfra would ask the host for its encoding on non-ASCII).
    stdout = re.split(rf"\n{mark} (\d+)\n", whole.stdout_bytes.decode(errors="replace"))
    stderr = whole.stderr_bytes.decode(errors="replace").split(f"\n{mark}\n")[1:]
    answered = zip(commands, stdout[0::2], stdout[1::2], stderr, strict=False)  # may be fewer
    return {command: CommandResult(host.backend, int(rc), command.encode(), out, err)
            for command, out, rc, err in answered}


# --- HTTP and exposition ---------------------------------------------------------------------


def fetch_command(url: str, auth_file: str | None = None) -> str:
    """curl's GET of `url`; with auth_file, basic auth admin:<its content>, handed to curl on
    stdin (never in an argument)."""
    command = f"curl -fsS --max-time 5 {shlex.quote(url)}"
    if auth_file:
        command = (f"printf 'user = \"admin:%s\"\\n' \"$(cat {shlex.quote(auth_file)})\" | "
                   f"{command} -K -")
    return command


def fetch(host: Any, url: str, auth_file: str | None = None) -> str:
    """GET `url` from the host itself (a testinfra host, or its Reads); a failure is one line
    naming the URL."""
    result = host.run(fetch_command(url, auth_file))
    assert result.rc == 0, f"GET {url}: {(result.stderr or result.stdout).strip() or result.rc}"
    return str(result.stdout)


def fetch_json(host: Any, url: str, auth_file: str | None = None) -> Any:
    text = fetch(host, url, auth_file)
    try:
        return json.loads(text)
    except ValueError:
        raise AssertionError(f"GET {url}: not JSON: {text[:80]!r}") from None


def samples(text: str, url: str) -> dict[str, list[Any]]:
    """Sample name -> samples of a Prometheus exposition, parsed by prometheus-client."""
    found: dict[str, list[Any]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found.setdefault(sample.name, []).append(sample)
    except ValueError as error:
        raise AssertionError(f"{url}: not valid exposition: {error}") from None
    return found


def listens(ss_output: str, port: int) -> bool:
    """Whether `ss --numeric --listening --tcp` lists a socket on the port."""
    return any(line.split()[3].rpartition(":")[2] == str(port)
               for line in ss_output.splitlines()[1:] if len(line.split()) > 3)


def started_at(starts_output: str) -> dict[str, int]:
    """Exporter job -> when its unit last became active (seconds since the epoch), from
    EXPORTER_STARTS; a unit never active is left out."""
    units = {f"{unit}.service": job for job, unit in EXPORTER_UNITS.items()}
    found = {}
    for block in starts_output.split("\n\n"):
        fields = {key: value for key, _, value in (line.partition("=")
                                                   for line in block.splitlines())}
        when = fields.get("ActiveEnterTimestamp", "")
        if fields.get("Id") in units and when.startswith("@"):
            found[units[fields["Id"]]] = int(when[1:])
    return found

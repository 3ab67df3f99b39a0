"""What a verified host must show, derived from the inventory and the repository, never from a
hand list: its exporters and the metrics its dashboard queries from each, the monitoring
server's targets and dashboards, its /etc/ai-providers.json, its secrets."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from nixfleet.inventory import Fleet
from nixfleet.model import Host
from nixfleet.monitoring import grafana, is_server, monitored_by, read_ports
from nixfleet.monitoring import metrics as m
from nixfleet.monitoring.prometheus import JOBS
from nixfleet.nixcheck import evaluate

AI_PROVIDERS_NIX = Path("nix") / "lib" / "ai-providers.nix"
_KNOWN_METRICS = frozenset(v for k, v in vars(m).items() if k.isupper() and isinstance(v, str))
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


@dataclass(frozen=True)
class Exporter:
    job: str  # the scrape job's name (node-exporter, nixos-exporter, systemd-exporter)
    port: int
    metrics: tuple[str, ...]  # what the host's dashboard queries from it


def exporters(host: Host, root: Path) -> list[Exporter]:
    """The exporters the host's monitoring features enable, each with the metric names its
    dashboard's panels read from it."""
    if not host.features.monitoring.enable:
        return []
    ports = read_ports(root)
    used = dashboard_metrics(host)
    return [Exporter(job.name, ports[job.port],
                     tuple(sorted(n for n in used if n.startswith(job.prefixes))))
            for job in JOBS if job.scrapes(host)]


def dashboard_metrics(host: Host) -> set[str]:
    """The metric names the host's own dashboard queries."""
    dashboard = grafana.dashboards([host])[f"host-{host.name}.json"]
    return {name for expr in grafana.expressions(dashboard) for name in _NAME.findall(expr)
            if name in _KNOWN_METRICS}


def alerts(host: Host) -> bool:
    """A monitoring server that runs Alertmanager."""
    return is_server(host) and host.features.monitoring.features.alerting


def is_cache_client(host: Host) -> bool:
    """A monitored host with a server: its Nix substitutes from the server's binary cache."""
    return host.features.monitoring.enable and host.features.monitoring.serverHost is not None


def has_providers_file(host: Host) -> bool:
    return host.features.ai.enable and host.features.ai.providers.enable


def runs_ollama(host: Host) -> bool:
    return host.features.ai.enable and host.features.ai.ollama


def scrape_targets(fleet: Fleet, server: Host) -> set[tuple[str, str]]:
    """(job, host) of every target the server must scrape: itself and each job's hosts."""
    targets = {("prometheus", server.name)}
    for host in monitored_by(fleet, server):
        targets |= {(job.name, host.name) for job in JOBS if job.scrapes(host)}
    return targets


def dashboard_uids(fleet: Fleet, server: Host) -> set[str]:
    return {d["uid"] for d in grafana.dashboards(monitored_by(fleet, server)).values()}


def ai_providers(host: Host, root: Path) -> dict[str, Any]:
    """/etc/ai-providers.json as the host's flake renders it (nix/lib/ai-providers.nix with
    the host's features.ai.providers), evaluated here by Nix without nixpkgs; once per process
    for the same settings (shared: not to be changed)."""
    return _rendered_providers(json.dumps(host.nix_data()["features"]["ai"]["providers"],
                                          sort_keys=True),
                               str((root / AI_PROVIDERS_NIX).resolve()))


@cache
def _rendered_providers(settings: str, file: str) -> dict[str, Any]:
    rendered: dict[str, Any] = evaluate(
        "{ file, settings }: import (/. + file) { settings = builtins.fromJSON settings; }",
        file=file, settings=settings)
    return rendered


def ollama_model(name: str) -> str:
    """Ollama's full model name: a name without a tag means :latest."""
    return name if ":" in name else f"{name}:latest"


def binary_cache_url(server: str, root: Path, at: str | None = None) -> str:
    """The cache's URL as its clients' Nix names it (nix/lib/host-module.nix)."""
    return f"http://{at or server}:{read_ports(root)['binaryCache']}"

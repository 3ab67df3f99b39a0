"""prometheus.yml: whom the monitoring server scrapes, how often, and where alerts go.

The jobs and intervals are the original's (node exporter 15s, NixOS exporter 60s, systemd
exporter 30s, Ollama 60s, Prometheus itself 30s); a host is a target of a job only when its
features.monitoring.features ask for it. Every target carries `host` and `class` labels, which
the alert rules and dashboards select on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nixfleet.model import Host

CLUSTER = "nixos-homelab"
SCRAPE_INTERVAL = "15s"
EVALUATION_INTERVAL = "15s"


@dataclass(frozen=True)
class ScrapeJob:
    """One scrape job: its name, the ports.json key of its port, which hosts it scrapes, and
    the prefixes of the metric names its exporter serves."""

    name: str
    port: str
    interval: str
    scrapes: Callable[[Host], bool]
    prefixes: tuple[str, ...]


JOBS: tuple[ScrapeJob, ...] = (
    ScrapeJob("node-exporter", "nodeExporter", "15s",
              lambda h: h.features.monitoring.features.nodeExporter, ("node_",)),
    ScrapeJob("nixos-exporter", "nixosExporter", "60s",
              lambda h: h.features.monitoring.features.nixosMetrics, ("nixos_", "nixfleet_gpu_")),
    ScrapeJob("systemd-exporter", "systemdExporter", "30s",
              lambda h: h.features.monitoring.features.serviceMetrics, ("systemd_",)),
)
# The original also scraped Ollama (:11434, 60s, where aiMetrics asks for it), but Ollama serves
# no Prometheus metrics (its API is JSON; GET /metrics is 404), so that target was always down
# and `up` said nothing about Ollama. It is not rendered; Ollama's health is the health gate's
# port check (nixfleet.health.services.ollama).
# Jobs of nixfleet's own exporters: their targets being down is ExporterDown (the node
# exporter's is HostDown).
EXPORTER_JOBS = ("nixos-exporter", "systemd-exporter")


def prometheus_config(
    server: str,
    monitored: Sequence[Host],
    ports: Mapping[str, int],
    addresses: Mapping[str, str],
    rules_path: str,
    alerting: bool,
) -> dict[str, Any]:
    """prometheus.yml of `server` as data; `addresses` maps each host to the address its
    exporters are scraped at (an IPv6 address in brackets)."""
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "evaluation_interval": EVALUATION_INTERVAL,
            "external_labels": {"cluster": CLUSTER, "replica": server},
        },
    }
    if alerting:
        # The original never told Prometheus where Alertmanager was, so no alert left it.
        config["alerting"] = {"alertmanagers": [
            {"static_configs": [{"targets": [f"localhost:{ports['alertmanager']}"]}]}]}
    config["rule_files"] = [rules_path]
    scrape_configs = [{
        "job_name": "prometheus",
        "scrape_interval": "30s",
        "static_configs": [{"targets": [f"localhost:{ports['prometheus']}"],
                            "labels": {"host": server}}],
    }]
    for job in JOBS:
        hosts = [h for h in monitored if job.scrapes(h)]
        if hosts:
            scrape_configs.append({
                "job_name": job.name,
                "scrape_interval": job.interval,
                "static_configs": [
                    {"targets": [f"{addresses[h.name]}:{ports[job.port]}"],
                     "labels": {"host": h.name, "class": h.hardware_class}}
                    for h in hosts
                ],
            })
    config["scrape_configs"] = scrape_configs
    return config

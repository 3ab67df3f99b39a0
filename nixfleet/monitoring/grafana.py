"""Grafana provisioning: the Prometheus datasource, the dashboard provider, and the dashboards.

Dashboards: "NixOS System Overview" (every monitored host) and one per host titled
"<host> - AMD|NVIDIA|Intel" with the system panels for that host and its class's GPU panels
(AMD and NVIDIA: utilisation, memory, temperature, power from nixfleet's GPU metrics; Intel's
integrated graphics have no GPU metrics, said in a text panel). Expressions use no Grafana
variables, so the tests can hand every one of them to Prometheus's own parser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nixfleet.model import Host
from nixfleet.monitoring import metrics as m
from nixfleet.monitoring.promql import eq, ne, selector

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
CLASS_TITLES = {"amd": "AMD", "nvidia": "NVIDIA", "intel": "Intel"}
OVERVIEW_FILE = "nixos-system-overview.json"


def datasources_config(ports: Mapping[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "datasources": [{
            "name": "Prometheus",
            "type": DATASOURCE["type"],
            "uid": DATASOURCE["uid"],
            "access": "proxy",
            "url": f"http://localhost:{ports['prometheus']}",
            "isDefault": True,
            "editable": False,
            "jsonData": {"timeInterval": "15s"},
        }],
    }


def dashboard_provider_config(dashboards_dir: str) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [{
            "name": "nixfleet",
            "type": "file",
            "disableDeletion": True,
            "allowUiUpdates": False,
            "options": {"path": dashboards_dir},
        }],
    }


# --- panels ------------------------------------------------------------------------------

def _timeseries(title: str, unit: str, *queries: tuple[str, str]) -> dict[str, Any]:
    """A graph of (expression, legend) queries."""
    return {
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
                     "legendFormat": legend}
                    for i, (expr, legend) in enumerate(queries)],
    }


def _text(title: str, content: str) -> dict[str, Any]:
    return {"type": "text", "title": title, "options": {"mode": "markdown", "content": content}}


def _system_panels(host: str | None) -> list[dict[str, Any]]:
    """Panels of the node, NixOS and systemd exporters, of one host or (None) of every host."""
    def s(metric: str, *matchers: str) -> str:
        return selector(metric, *matchers, *host_matchers)

    host_matchers = [eq("host", host)] if host else []
    legend = "{{host}}"
    root = eq("mountpoint", "/")
    not_lo = ne("device", "lo")
    return [
        _timeseries("CPU usage", "percent", (
            f"100 * (1 - avg by (host) (rate({s(m.NODE_CPU_SECONDS, eq('mode', 'idle'))}[5m])))",
            legend)),
        _timeseries("Memory usage", "percent", (
            f"100 * (1 - {s(m.NODE_MEMORY_AVAILABLE)} / {s(m.NODE_MEMORY_TOTAL)})", legend)),
        _timeseries("Root filesystem usage", "percent", (
            f"100 * (1 - {s(m.NODE_FILESYSTEM_AVAILABLE, root)} / "
            f"{s(m.NODE_FILESYSTEM_SIZE, root)})", legend)),
        _timeseries("Network traffic", "Bps",
                    (f"sum by (host) (rate({s(m.NODE_NETWORK_RECEIVE, not_lo)}[5m]))",
                     f"{legend} in"),
                    (f"sum by (host) (rate({s(m.NODE_NETWORK_TRANSMIT, not_lo)}[5m]))",
                     f"{legend} out")),
        _timeseries("Nix store size", "bytes", (s(m.NIXOS_STORE_SIZE), legend)),
        _timeseries("System generations", "short", (s(m.NIXOS_GENERATIONS), legend)),
        _timeseries("Reboot required", "short", (s(m.NIXOS_REBOOT_REQUIRED), legend)),
        _timeseries("Reboot pending (running system is not the booted one)", "short",
                    (s(m.NIXOS_BOOTED_DIFFERS), legend)),
        _timeseries("Running system verified (1 yes, 0 no)", "short",
                    (s(m.NIXOS_SYSTEM_VERIFIED), legend)),
        _timeseries("Failed systemd units", "short", (s(m.SYSTEMD_UNITS_FAILED), legend)),
        _timeseries("systemd state (1 running, 2 degraded)", "short",
                    (s(m.SYSTEMD_SYSTEM_STATE), legend)),
        _timeseries("Exporter sources failing", "short",
                    (f"{s(m.NIXOS_SOURCE_ERROR)} or {s(m.SYSTEMD_SOURCE_ERROR)}",
                     f"{legend} {{{{job}}}} {{{{source}}}}")),
    ]


def _gpu_panels(host: Host) -> list[dict[str, Any]]:
    title = CLASS_TITLES[host.hardware_class]
    if host.hardware_class == "intel":
        return [_text(f"GPU ({title})",
                      "Integrated graphics (modesetting, VA-API media driver): no compute "
                      "acceleration and no GPU metrics.")]
    only = eq("host", host.name)
    legend = "{{gpu}} {{model}}"
    return [
        _timeseries(f"GPU utilisation ({title})", "percentunit",
                    (selector(m.GPU_UTILIZATION, only), legend)),
        _timeseries(f"GPU memory ({title})", "bytes",
                    (selector(m.GPU_MEMORY_USED, only), f"{legend} used"),
                    (selector(m.GPU_MEMORY_TOTAL, only), f"{legend} total")),
        _timeseries(f"GPU temperature ({title})", "celsius",
                    (selector(m.GPU_TEMPERATURE, only), legend)),
        _timeseries(f"GPU power ({title})", "watt", (selector(m.GPU_POWER, only), legend)),
    ]


def _laid_out(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two panels a row, in list order, with ids 1..n."""
    return [{**panel, "id": i + 1,
             "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)}}
            for i, panel in enumerate(panels)]


def _dashboard(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["nixfleet"],
        "editable": False,
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "panels": _laid_out(panels),
    }


def dashboards(monitored: Sequence[Host]) -> dict[str, dict[str, Any]]:
    """File name -> dashboard: the overview and one per monitored host."""
    result = {OVERVIEW_FILE: _dashboard("nixfleet-overview", "NixOS System Overview", [
        _timeseries("Hosts up", "short", (selector(m.UP, eq("job", "node-exporter")), "{{host}}")),
        *_system_panels(None),
    ])}
    for host in monitored:
        result[f"host-{host.name}.json"] = _dashboard(
            f"nixfleet-host-{host.name}",
            f"{host.name} - {CLASS_TITLES[host.hardware_class]}",
            [*_system_panels(host.name), *_gpu_panels(host)])
    return result


def expressions(dashboard: Mapping[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard's panels."""
    return [target["expr"] for panel in dashboard.get("panels", [])
            for target in panel.get("targets", []) if "expr" in target]

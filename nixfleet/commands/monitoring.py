"""`nixfleet monitoring status`: the fleet as its monitoring server sees it, from the servers'
own HTTP APIs (the original's prometheus-status, grafana-status and node-exporter-status).

Every scrape target (per host and exporter) with its health, last scrape and error, the firing
alerts, and whether Prometheus, Alertmanager and Grafana answer. The servers are the
inventory's monitoring servers, reached at their pyinfra address (`ssh_hostname`, so the lab's
under NIXFLEET_TARGET=lab) on the ports of nix/lib/ports.json. Exit 1 when a selected target is
not up or a server component does not answer; a Prometheus that cannot be queried at all is a
one-line error.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nixfleet.commands.options import add_limit_option, inventory_path
from nixfleet.errors import NixfleetError
from nixfleet.inventory import Fleet, load_inventory_file
from nixfleet.model import Host
from nixfleet.monitoring import monitored_by, read_ports, servers
from nixfleet.monitoring.api import (
    TIMEOUT,
    FiringAlert,
    Response,
    Unanswered,
    api_data,
    firing,
    get,
    one_line,
    timestamp,
)
from nixfleet.monitoring.prometheus import JOBS

# The order of a host's rows: Prometheus itself, then the jobs of prometheus.yml.
JOB_ORDER = ("prometheus", *(job.name for job in JOBS))


@dataclass(frozen=True)
class TargetState:
    """One scrape target as Prometheus reports it (health: up, down or unknown), or a
    monitored host that is no target at all (health "absent")."""

    server: str
    host: str
    job: str
    instance: str
    health: str
    last_scrape: datetime | None
    error: str

    @property
    def up(self) -> bool:
        return self.health == "up"


@dataclass(frozen=True)
class Component:
    """Prometheus, Alertmanager or Grafana on one server: does it answer as ready/healthy."""

    server: str
    name: str
    url: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class MonitoringStatus:
    targets: list[TargetState]
    alerts: list[FiringAlert]
    components: list[Component]

    @property
    def ok(self) -> bool:
        return all(t.up for t in self.targets) and all(c.ok for c in self.components)


def server_address(fleet: Fleet, server: str) -> str:
    """Where the deployer reaches `server`: its pyinfra address (the target's, e.g. the lab's),
    in brackets when it is IPv6."""
    data = fleet.host_data.get(server, {})
    address = str(data.get("ssh_hostname") or fleet.hosts[server].address)
    return f"[{address}]" if ":" in address else address


def _check(server: str, name: str, url: str,
           judge: Callable[[Response], tuple[bool, str]]) -> Component:
    try:
        response = get(url, TIMEOUT)
    except Unanswered as error:
        if error.timed_out:
            return Component(server, name, url, False, f"no answer within {TIMEOUT:g} s")
        return Component(server, name, url, False,
                         f"cannot be reached: {one_line(str(error))}")
    ok, detail = judge(response)
    return Component(server, name, url, ok, detail)


def _ready(response: Response) -> tuple[bool, str]:
    if response.status_code == 200:
        return True, "ready"
    return False, f"not ready: HTTP {response.status_code} {one_line(response.text)[:120]}"


def _grafana_health(response: Response) -> tuple[bool, str]:
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    database = body.get("database")
    if response.status_code == 200 and database == "ok":
        version = body.get("version")
        return True, f"database ok{f', version {version}' if version else ''}"
    return False, f"unhealthy: HTTP {response.status_code}, database {database or 'unknown'}"


def _targets(server: str, data: Any) -> list[TargetState]:
    result = []
    for item in (data or {}).get("activeTargets") or []:
        labels = item.get("labels") or {}
        instance = str(labels.get("instance", ""))
        result.append(TargetState(
            server=server, host=str(labels.get("host") or instance),
            job=str(labels.get("job") or item.get("scrapePool") or "-"), instance=instance,
            health=str(item.get("health") or "unknown"),
            last_scrape=timestamp(item.get("lastScrape")),
            error=one_line(item.get("lastError") or "")))
    return result


def query_server(server: Host, address: str, ports: dict[str, int]) -> MonitoringStatus:
    """Everything one monitoring server says: its targets, firing alerts and components."""
    prometheus = f"http://{address}:{ports['prometheus']}"
    targets = _targets(server.name, api_data(server.name,
                                              f"{prometheus}/api/v1/targets?state=active",
                                              TIMEOUT))
    alerts = firing(server.name, api_data(server.name, f"{prometheus}/api/v1/alerts", TIMEOUT))
    components = [_check(server.name, "Prometheus", f"{prometheus}/-/ready", _ready)]
    if server.features.monitoring.features.alerting:
        components.append(_check(server.name, "Alertmanager",
                                 f"http://{address}:{ports['alertmanager']}/-/ready", _ready))
    components.append(_check(server.name, "Grafana",
                             f"http://{address}:{ports['grafana']}/api/health",
                             _grafana_health))
    return MonitoringStatus(targets, alerts, components)


def gather(fleet: Fleet, root: Path, limits: Sequence[str]) -> MonitoringStatus:
    """The status of the selected hosts from every monitoring server that watches one."""
    selected = fleet.select(limits)
    every_server = servers(fleet)
    if not every_server:
        raise NixfleetError("no monitoring server in the inventory (a host with "
                            "features.monitoring.mode \"server\")")
    watching = {s.name: [h.name for h in monitored_by(fleet, s) if h.name in selected]
                for s in every_server}
    wanted = [s for s in every_server if watching[s.name]]
    if not wanted:
        raise NixfleetError(f"no monitoring server watches {', '.join(selected)} "
                            "(features.monitoring.enable is off)")
    ports = read_ports(root)
    targets: list[TargetState] = []
    alerts: list[FiringAlert] = []
    components: list[Component] = []
    chosen = set(selected)
    for server in wanted:
        status = query_server(server, server_address(fleet, server.name), ports)
        mine = [t for t in status.targets if not limits or t.host in chosen]
        seen = {t.host for t in mine}
        # A host the inventory says is monitored but Prometheus does not scrape: its
        # prometheus.yml is stale or not deployed.
        mine += [TargetState(server.name, host, "-", "", "absent", None,
                             f"no target of {server.name}'s Prometheus")
                 for host in watching[server.name] if host not in seen]
        targets += mine
        alerts += [a for a in status.alerts
                   if not limits or a.host is None or a.host in chosen]
        components += status.components
    order = {name: i for i, name in enumerate(fleet.hosts)}
    targets.sort(key=lambda t: (t.server, order.get(t.host, len(order)), t.host,
                                JOB_ORDER.index(t.job) if t.job in JOB_ORDER else len(JOB_ORDER),
                                t.job, t.instance))
    return MonitoringStatus(targets, alerts, components)


# --- output --------------------------------------------------------------------------------


def age(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size, smaller, smaller_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                               ("m", 60, "s", 1)):
        if seconds >= size:
            rest = (seconds % size) // smaller_size
            return f"{seconds // size}{unit}{f' {rest}{smaller}' if rest else ''} ago"
    return f"{seconds}s ago"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _age_seconds(moment: datetime | None, now: datetime) -> float | None:
    return round((now - moment).total_seconds(), 1) if moment else None


def as_json(status: MonitoringStatus, now: datetime) -> dict[str, Any]:
    return {
        "ok": status.ok,
        "targets": [{
            "server": t.server, "host": t.host, "job": t.job, "instance": t.instance,
            "health": t.health, "last_scrape": _iso(t.last_scrape),
            "last_scrape_age_s": _age_seconds(t.last_scrape, now), "error": t.error or None,
        } for t in status.targets],
        "alerts": [{
            "server": a.server, "alertname": a.name, "host": a.host, "severity": a.severity,
            "active_at": _iso(a.active_at), "summary": a.summary or None,
        } for a in status.alerts],
        "components": [{
            "server": c.server, "component": c.name, "url": c.url, "ok": c.ok,
            "detail": c.detail,
        } for c in status.components],
    }


HEALTH_STYLE = {"up": "green", "down": "red", "absent": "red"}


def print_status(status: MonitoringStatus, now: datetime) -> None:
    from rich import box
    from rich.table import Column
    from rich.text import Text

    from nixfleet import console as tables

    console = tables.console()
    # Short columns never wrap (a host or exporter name cut to a few letters is useless);
    # only the error and summary columns wrap, so the tables fit 80 columns.
    for server in dict.fromkeys(t.server for t in status.targets):
        table = tables.table(
            Column("host", no_wrap=True), Column("exporter", no_wrap=True),
            Column("health", no_wrap=True), Column("scraped", no_wrap=True),
            Column("error", overflow="fold"), title=f"{server}: Prometheus targets",
            title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        rows = [t for t in status.targets if t.server == server]
        for i, target in enumerate(rows):
            last_of_host = i + 1 == len(rows) or rows[i + 1].host != target.host
            table.add_row(target.host, target.job,
                          Text(target.health, style=HEALTH_STYLE.get(target.health, "yellow")),
                          age(target.last_scrape, now), Text(target.error or "-"),
                          end_section=last_of_host)
        tables.print_table(table, console)
    if status.alerts:
        alerts = tables.table(
            Column("alert", no_wrap=True), Column("severity", no_wrap=True),
            Column("host", no_wrap=True), Column("since", no_wrap=True),
            Column("summary", overflow="fold"),
            title="firing alerts", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for alert in status.alerts:
            alerts.add_row(alert.name, alert.severity or "-", alert.host or "-",
                           age(alert.active_at, now), Text(alert.summary or "-"))
        tables.print_table(alerts, console)
    else:
        console.print("firing alerts: none\n", highlight=False)
    components = tables.table(
        Column("server", no_wrap=True), Column("component", no_wrap=True),
        Column("state", no_wrap=True), Column("detail", overflow="fold"),
        title="monitoring servers", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for c in status.components:
        components.add_row(c.server, c.name, Text("ok" if c.ok else "failing",
                                                  style="green" if c.ok else "red"),
                           Text(f"{c.detail} ({c.url})"))
    tables.print_table(components, console)
    down = [t for t in status.targets if not t.up]
    failing = [c for c in status.components if not c.ok]
    if down or failing:
        parts = [f"{len(down)} of {len(status.targets)} targets not up"] if down else []
        parts += [f"{c.server}: {c.name} failing" for c in failing]
        console.print(f"[red]problems:[/red] {'; '.join(parts)}", highlight=False)
    else:
        console.print(f"all {len(status.targets)} targets up", highlight=False)


def cmd_monitoring_status(args: argparse.Namespace) -> int:
    path = inventory_path(args)
    status = gather(load_inventory_file(path), path.parent, args.limit)
    now = datetime.now(UTC)
    if args.json:
        print(json.dumps(as_json(status, now), indent=2))
    else:
        print_status(status, now)
    return 0 if status.ok else 1


def register(commands: Any) -> None:
    monitoring = commands.add_parser(
        "monitoring", help="the monitoring server's view of the fleet",
        description="the monitoring server's view of the fleet")
    sub = monitoring.add_subparsers(dest="monitoring_command", required=True,
                                    parser_class=type(monitoring))
    status = sub.add_parser(
        "status", help="scrape targets per host with health and last scrape, firing alerts, "
        "and whether Prometheus, Alertmanager and Grafana answer (exit 1 when a target is "
        "down or a component fails)",
        description="Scrape targets per host with health and last scrape, firing alerts, and "
        "whether Prometheus, Alertmanager and Grafana answer. Exit 1 when a selected target is "
        "not up or a server component fails.")
    add_limit_option(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_monitoring_status)

"""Hosts with monitoring: each exporter its features enable serves valid exposition with the
metrics its dashboard uses, and its server's Prometheus scrapes it. The server: Prometheus,
Alertmanager and Grafana up and wired together, as the inventory renders them."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from nixfleet.monitoring import metrics as m
from nixfleet.monitoring import read_ports
from nixfleet.verify.expect import alerts, dashboard_uids, exporters, is_server, scrape_targets
from tests.fleet.support import (
    EXPORTER_STARTS,
    GRAFANA_PASSWORD,
    LISTENING,
    fetch,
    fetch_json,
    listens,
    metrics_url,
    samples,
    server_urls,
    started_at,
)

# The GPU tools' sources: a GPU that does not answer is the gpu checks' finding, not these.
GPU_SOURCES = frozenset({"lspci", "nvidia-smi", "rocm-smi"})
STARTING = 5  # seconds an exporter may take from its unit's start to listening
DISCOVERY = 10  # seconds a (re)started Prometheus may take to hand its targets over


def _exporters(spec, session):
    return [(e.job, e) for e in exporters(spec, session.root)]


@pytest.mark.fleet(each=_exporters, arg="exporter")
def test_the_exporter_serves_its_metrics_and_is_scraped(reads, spec, config_root, fleet_host,
                                                        exporter):
    url = metrics_url(exporter.port)
    assert listens(reads.check_output(LISTENING), exporter.port), \
        f"nothing listens on :{exporter.port}"
    found = samples(fetch(reads, url), url)
    failing = {s.labels.get("source") for name in (m.NIXOS_SOURCE_ERROR, m.SYSTEMD_SOURCE_ERROR)
               for s in found.get(name, []) if s.value}
    assert not failing - GPU_SOURCES, f"sources failing: {', '.join(sorted(failing))}"
    missing = [n for n in exporter.metrics if n not in found
               and not (n.startswith("nixfleet_gpu_") and failing & GPU_SOURCES)]
    assert not missing, f"missing what the dashboard reads: {', '.join(missing)}"
    _scraped_by_its_server(reads, spec, config_root, fleet_host, exporter)


def _scraped_by_its_server(reads, spec, config_root, fleet_host, exporter):
    """Its server's Prometheus has the target up, or has not scraped it since the exporter
    (re)started: a deploy that just restarted it is not a down target."""
    server = spec.features.monitoring.serverHost or spec.name
    want = (exporter.job, spec.name)
    active = active_targets(fleet_host(server), read_ports(config_root), {want})
    target = active.get(want)
    assert target is not None, f"Prometheus on {server} has no {exporter.job} target for it"
    if target["health"] == "up":
        return
    # When its unit started (read with the host's other reads; 0: never active).
    started = started_at(reads.check_output(EXPORTER_STARTS)).get(exporter.job, 0)
    scraped = datetime.fromisoformat(target["lastScrape"]).timestamp()
    # A scrape in the first seconds after the (re)start may come before the exporter listens
    # (systemd counts it active at exec; its timestamp has whole seconds): not evidence yet.
    assert scraped < started + STARTING, (f"Prometheus on {server} has it {target['health']}: "
                                          f"{target['lastError'] or 'no error given'}")


# The last answer of each server's Prometheus in this process: a host's exporters ask once.
_TARGETS: dict[int, dict] = {}


def active_targets(server, ports, wanted, wait: float = 15) -> dict:
    """(job, host) -> Prometheus' active target, waiting up to `wait` seconds for the wanted
    ones (a Prometheus a deploy just restarted lists its targets a moment after it is ready)."""
    found = _TARGETS.get(id(server), {})
    deadline = time.monotonic() + wait
    while not wanted <= found.keys():
        answer = fetch_json(server, f"http://localhost:{ports['prometheus']}"
                                    "/api/v1/targets?state=active")
        found = _TARGETS[id(server)] = {(t["labels"].get("job"), t["labels"].get("host")): t
                                        for t in answer["data"]["activeTargets"]}
        if wanted <= found.keys() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return found


@pytest.mark.fleet(hosts=lambda spec, session: is_server(spec))
def test_prometheus_is_ready_with_every_expected_target(host, reads, spec, fleet, config_root):
    fetch(reads, server_urls(config_root)["prometheus"])
    want = scrape_targets(fleet, spec)
    have = set(active_targets(host, read_ports(config_root), want))
    assert have == want, "; ".join(
        f"{len(targets)} {what}: {few(targets)}"
        for what, targets in (("missing", want - have), ("unexpected", have - want)) if targets)


def few(targets: set[tuple[str, str]], shown: int = 3) -> str:
    """"nixos-exporter on razer, ... (and 4 more)": one line, however many."""
    named = [f"{job} on {host}" for job, host in sorted(targets)]
    more = f" (and {len(named) - shown} more)" if len(named) > shown else ""
    return ", ".join(named[:shown]) + more


@pytest.mark.fleet(hosts=lambda spec, session: alerts(spec))
def test_alertmanager_is_ready_and_prometheus_sends_to_it(reads, host, config_root):
    port = read_ports(config_root)["alertmanager"]
    url = server_urls(config_root)["alertmanagers"]
    fetch(reads, server_urls(config_root)["alertmanager"])

    def sent_to(answer: dict) -> list[str]:
        return [a["url"] for a in answer["data"]["activeAlertmanagers"]]

    found = sent_to(fetch_json(reads, url))
    # Right after a switch restarted Prometheus, its discovery has not handed over the
    # Alertmanager yet (it sends what it found every 5 s): ask again for that long.
    deadline = time.monotonic() + DISCOVERY
    while not any(f":{port}/" in u for u in found) and time.monotonic() < deadline:
        time.sleep(0.5)
        found = sent_to(fetch_json(host, url))
    assert any(f":{port}/" in u for u in found), \
        f"Prometheus sends alerts to {found or 'no Alertmanager'}"


@pytest.mark.fleet(hosts=lambda spec, session: is_server(spec))
def test_grafana_is_healthy_with_the_provisioned_dashboards(reads, spec, fleet, config_root):
    urls = server_urls(config_root)
    health = fetch_json(reads, urls["grafana"])
    assert health.get("database") == "ok", f"Grafana's database is {health.get('database')}"
    found = {d["uid"] for d in fetch_json(reads, urls["dashboards"], auth_file=GRAFANA_PASSWORD)}
    missing = dashboard_uids(fleet, spec) - found
    assert not missing, f"dashboards not provisioned: {', '.join(sorted(missing))}"

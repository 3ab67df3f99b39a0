"""`nixfleet monitoring status` against a fake Prometheus, Alertmanager and Grafana on
127.0.0.1 that answer in the real APIs' shapes (Prometheus /api/v1/targets and /api/v1/alerts,
/-/ready, Grafana /api/health). The fleet is the real inventory with the monitoring server's
address set to 127.0.0.1 and a ports.json naming the fakes' ports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from nixfleet.cli import main
from nixfleet.commands import monitoring

ERROR = ('Get "http://razer:9101/metrics": dial tcp 192.168.1.97:9101: connect: '
         'connection refused')


class Fake:
    """One HTTP server: path -> (status, body); a dict body is sent as JSON."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, Any]] = {}
        self.requests: list[str] = []
        self.delay = 0.0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append(self.path)
                time.sleep(fake.delay)
                status, body = fake.routes.get(urlsplit(self.path).path, (404, "404 not found"))
                data = (json.dumps(body) if isinstance(body, dict) else body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json"
                                 if isinstance(body, dict) else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up waiting (the timeout test) is no failure here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.open = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        if self.open:
            self.open = False
            self.server.shutdown()
            self.server.server_close()


def rfc3339(moment: datetime) -> str:
    """Go's RFC3339Nano, as Prometheus writes times."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def active_targets(root: Path, down: dict[tuple[str, str], str] | None = None
                   ) -> list[dict[str, Any]]:
    """/api/v1/targets' activeTargets for the committed prometheus.yml of p620: every target
    up and scraped 3 s ago, except those in `down` ((host, job) -> lastError)."""
    config = yaml.safe_load((root / "nix/monitoring/p620/prometheus.yml").read_text())
    scraped = rfc3339(datetime.now(UTC) - timedelta(seconds=3))
    result = []
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for address in static["targets"]:
                labels = {**static["labels"], "instance": address, "job": job["job_name"]}
                error = (down or {}).get((labels["host"], job["job_name"]), "")
                result.append({
                    "discoveredLabels": {"__address__": address, "__metrics_path__": "/metrics",
                                         "__scheme__": "http", "job": job["job_name"]},
                    "labels": labels,
                    "scrapePool": job["job_name"],
                    "scrapeUrl": f"http://{address}/metrics",
                    "globalUrl": f"http://{address}/metrics",
                    "lastError": error,
                    "lastScrape": scraped,
                    "lastScrapeDuration": 0.004215,
                    "health": "down" if error else "up",
                    "scrapeInterval": job["scrape_interval"],
                    "scrapeTimeout": "10s",
                })
    return result


def alert(name: str, host: str, state: str, severity: str = "critical") -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "host": host, "severity": severity, "service": "monitoring",
                   "job": "nixos-exporter", "instance": f"{host}:9101"},
        "annotations": {"summary": f"{name} on {host}"},
        "state": state,
        "activeAt": rfc3339(datetime.now(UTC) - timedelta(minutes=2)),
        "value": "0e+00",
    }


class Servers:
    def __init__(self, root: Path, inventory: Path) -> None:
        self.root = root
        self.inventory = inventory
        self.prometheus, self.alertmanager, self.grafana = Fake(), Fake(), Fake()
        self.set_targets()
        self.set_alerts([])
        self.prometheus.routes["/-/ready"] = (200, "Prometheus Server is Ready.\n")
        self.alertmanager.routes["/-/ready"] = (200, "OK")
        self.grafana.routes["/api/health"] = (200, {
            "commit": "d6b4e2e2ef", "database": "ok", "version": "10.4.2"})

    def set_targets(self, down: dict[tuple[str, str], str] | None = None,
                    without: str | None = None) -> None:
        targets = [t for t in active_targets(self.root, down) if t["labels"]["host"] != without]
        self.prometheus.routes["/api/v1/targets"] = (200, {
            "status": "success", "data": {"activeTargets": targets, "droppedTargets": []}})

    def set_alerts(self, alerts: list[dict[str, Any]]) -> None:
        self.prometheus.routes["/api/v1/alerts"] = (200, {
            "status": "success", "data": {"alerts": alerts}})

    def run(self, *args: str) -> int:
        return main(["--inventory", str(self.inventory), "monitoring", "status", *args])

    def close(self) -> None:
        for fake in (self.prometheus, self.alertmanager, self.grafana):
            fake.close()


def write_fleet(directory: Path, root: Path, ports: dict[str, int]) -> Path:
    """The real inventory, its monitoring server p620 at 127.0.0.1, with these ports."""
    shutil.copytree(root / "group_data", directory / "group_data")
    (directory / "nix" / "lib").mkdir(parents=True)
    real = json.loads((root / "nix/lib/ports.json").read_text())
    (directory / "nix/lib/ports.json").write_text(json.dumps({**real, **ports}))
    inventory = directory / "inventory.py"
    inventory.write_text(
        "import copy, runpy\n"
        "from nixfleet.inventory import nixfleet_inventory\n"
        f"_HOSTS = copy.deepcopy(runpy.run_path({str(root / 'inventory.py')!r})['_HOSTS'])\n"
        "dict(_HOSTS)['p620']['ssh']['host'] = '127.0.0.1'\n"
        "fleet, _groups = nixfleet_inventory(_HOSTS, __file__)\n")
    return inventory


@pytest.fixture
def fake(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Servers]:
    monkeypatch.delenv("NIXFLEET_TARGET", raising=False)
    monkeypatch.delenv("NIXFLEET_INVENTORY", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    servers = Servers(root, tmp_path / "inventory.py")
    write_fleet(tmp_path, root, {"prometheus": servers.prometheus.port,
                                 "alertmanager": servers.alertmanager.port,
                                 "grafana": servers.grafana.port})
    yield servers
    servers.close()


def rows(out: str) -> dict[tuple[str, str], str]:
    """The targets table's rows by (host, exporter)."""
    found = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 3 and words[2] in ("up", "down", "unknown", "absent"):
            found[(words[0], words[1])] = line
    return found


def test_all_targets_up_exit_0_with_a_row_per_host_and_exporter(fake, capsys):
    assert fake.run() == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert ("p620", "prometheus") in table
    for host in ("p620", "razer", "p510", "dex5550"):
        assert (host, "node-exporter") in table and (host, "nixos-exporter") in table
    assert ("p620", "systemd-exporter") in table
    assert all(" up " in line and "3s ago" in line for line in table.values())
    # Hosts in inventory order, each host's exporters together.
    hosts = [host for host, _ in table]
    assert list(dict.fromkeys(hosts)) == ["p620", "razer", "p510", "dex5550"]
    assert "firing alerts: none" in out
    for component in ("Prometheus", "Alertmanager", "Grafana"):
        assert any(component in line and " ok " in line for line in out.splitlines())
    assert f"all {len(table)} targets up" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "?state=active" in fake.prometheus.requests[0]


def test_a_target_down_exits_1_and_its_row_says_down_with_its_error(fake, capsys):
    fake.set_targets(down={("razer", "nixos-exporter"): ERROR})
    assert fake.run() == 1
    out = capsys.readouterr().out
    row = rows(out)[("razer", "nixos-exporter")]
    assert " down " in row and "3s ago" in row
    # The error column wraps within 80 columns: the whole error is there, in order.
    assert max(len(line) for line in out.splitlines()) <= 80
    lines = out.splitlines()
    column = next(line for line in lines if line.split()[:2] == ["host", "exporter"]
                  ).index("error")
    cell = [row[column:]]
    for line in lines[lines.index(row) + 1:]:
        if line[:column].strip():
            break
        cell.append(line[column:])
    assert "".join(cell).replace(" ", "") == ERROR.replace(" ", "")
    assert rows(out)[("razer", "node-exporter")].split()[2] == "up"
    assert "1 of" in out and "targets not up" in out


def test_firing_alerts_are_listed_and_pending_ones_are_not(fake, capsys):
    fake.set_alerts([alert("ExporterDown", "razer", "firing"),
                     alert("HighCPUUsage", "p510", "pending", "warning")])
    assert fake.run() == 0
    out = capsys.readouterr().out
    assert "firing alerts" in out
    line = next(line for line in out.splitlines() if "ExporterDown" in line)
    assert line.split()[:4] == ["ExporterDown", "critical", "razer", "2m"]
    assert "ExporterDown on razer" in out
    assert "HighCPUUsage" not in out


def test_limit_selects_hosts_and_a_bad_limit_is_the_standard_error(fake, capsys):
    fake.set_alerts([alert("ExporterDown", "razer", "firing"),
                     alert("HostDown", "p510", "firing")])
    fake.set_targets(down={("p510", "node-exporter"): "context deadline exceeded"})
    assert fake.run("--limit", "razer") == 0  # p510 is down, but not selected
    out = capsys.readouterr().out
    assert {host for host, _ in rows(out)} == {"razer"}
    assert "ExporterDown" in out and "HostDown" not in out
    assert "Grafana" in out

    assert fake.run("--limit", "razr") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "nixfleet: error: --limit 'razr' matches no host or group (did you mean 'razer'?); "
        "hosts: p620, razer, p510, "
        "dex5550; groups: amd, intel, laptops, monitoring_clients, monitoring_server, nvidia, "
        "ollama, servers, sff, workstations\n")


def test_json_is_the_targets_alerts_and_components(fake, capsys):
    fake.set_targets(down={("razer", "nixos-exporter"): ERROR})
    fake.set_alerts([alert("ExporterDown", "razer", "firing")])
    assert fake.run("--json", "--limit", "nvidia") == 1
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"ok", "targets", "alerts", "components"}
    assert data["ok"] is False
    assert {t["host"] for t in data["targets"]} == {"razer", "p510"}
    down = [t for t in data["targets"] if t["health"] != "up"]
    assert down == [{
        "server": "p620", "host": "razer", "job": "nixos-exporter", "instance": "razer:9101",
        "health": "down", "last_scrape": down[0]["last_scrape"],
        "last_scrape_age_s": down[0]["last_scrape_age_s"], "error": ERROR}]
    assert 2.5 < down[0]["last_scrape_age_s"] < 30
    assert datetime.fromisoformat(down[0]["last_scrape"]).tzinfo is not None
    assert all(t["error"] is None for t in data["targets"] if t["health"] == "up")
    assert [(a["alertname"], a["host"], a["severity"]) for a in data["alerts"]] == [
        ("ExporterDown", "razer", "critical")]
    assert [(c["server"], c["component"], c["ok"]) for c in data["components"]] == [
        ("p620", "Prometheus", True), ("p620", "Alertmanager", True), ("p620", "Grafana", True)]
    assert data["components"][2]["url"] == \
        f"http://127.0.0.1:{fake.grafana.port}/api/health"


def test_an_unreachable_prometheus_is_one_line(fake, capsys):
    fake.prometheus.close()
    assert fake.run() == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(
        f"nixfleet: error: monitoring server p620: Prometheus "
        f"http://127.0.0.1:{fake.prometheus.port}/api/v1/targets?state=active: "
        "cannot be reached: ")
    assert captured.err.endswith("(timeout 5 s)\n")
    assert len(captured.err.splitlines()) == 1


def test_the_command_line_prints_the_error_without_a_traceback(fake, root):
    fake.prometheus.close()
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-m", "nixfleet", "--inventory", str(fake.inventory),
                             "monitoring", "status"], capture_output=True, text=True, env=env,
                            cwd=fake.inventory.parent, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("nixfleet: error: monitoring server p620: Prometheus ")
    assert len(result.stderr.splitlines()) == 1


def test_a_prometheus_that_does_not_answer_in_time_names_the_timeout(fake, capsys, monkeypatch):
    monkeypatch.setattr(monitoring, "TIMEOUT", 0.2)
    fake.prometheus.delay = 1.0
    assert fake.run() == 1
    err = capsys.readouterr().err
    assert err == (f"nixfleet: error: monitoring server p620: Prometheus "
                   f"http://127.0.0.1:{fake.prometheus.port}/api/v1/targets?state=active: "
                   "no answer within 0.2 s\n")


def test_an_api_error_is_one_line(fake, capsys):
    fake.prometheus.routes["/api/v1/alerts"] = (422, {
        "status": "error", "errorType": "execution", "error": "query processing\nwould load"})
    assert fake.run() == 1
    err = capsys.readouterr().err
    assert err.endswith("/api/v1/alerts: HTTP 422: query processing would load\n")
    assert len(err.splitlines()) == 1


def test_an_unhealthy_grafana_exits_1(fake, capsys):
    fake.grafana.routes["/api/health"] = (503, {
        "commit": "d6b4e2e2ef", "database": "failing", "version": "10.4.2"})
    assert fake.run() == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "Grafana" in line and "p620" in line)
    assert "failing" in line and "HTTP 503" in line
    assert "p620: Grafana failing" in out
    assert all(" up " in row for row in rows(out).values())


def test_an_alertmanager_that_is_not_there_exits_1(fake, capsys):
    fake.alertmanager.routes["/-/ready"] = (503, "Service Unavailable")
    assert fake.run("--json") == 1
    components = {c["component"]: c for c in json.loads(capsys.readouterr().out)["components"]}
    assert components["Alertmanager"]["ok"] is False
    assert components["Alertmanager"]["detail"] == "not ready: HTTP 503 Service Unavailable"
    assert components["Prometheus"]["ok"] and components["Grafana"]["ok"]


def test_a_monitored_host_without_targets_is_absent(fake, capsys):
    fake.set_targets(without="dex5550")
    assert fake.run() == 1
    row = rows(capsys.readouterr().out)[("dex5550", "-")]
    assert " absent " in row and "never" in row and "no target of p620's" in row


def test_the_server_is_reached_at_its_pyinfra_address(fake):
    from nixfleet.inventory import load_inventory_file

    fleet = load_inventory_file(fake.inventory)
    assert monitoring.server_address(fleet, "p620") == "127.0.0.1"
    fleet.host_data["p620"]["ssh_hostname"] = "fd00::1"
    assert monitoring.server_address(fleet, "p620") == "[fd00::1]"


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s ago"), (59, "59s ago"), (60, "1m ago"), (125, "2m 5s ago"), (3600, "1h ago"),
    (7380, "2h 3m ago"), (90000, "1d 1h ago")])
def test_ages_are_short(seconds, text):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert monitoring.age(now - timedelta(seconds=seconds), now) == text
    assert monitoring.age(None, now) == "never"

"""Monitoring in the lab, end to end: every host's exporters as units of its generation, and
p620's real Prometheus and Alertmanager (Debian's) running the files rendered for the lab's
addresses by the same code as nix/monitoring/, the webhook receiver, the Grafana stand-in.

The alert test is bounded by ExporterDown's `for` (2m, read from the committed rule) plus the
systemd exporter's 30 s scrape interval, the 15 s evaluation and Alertmanager's 10 s group_wait.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from nixfleet.monitoring import grafana
from tests.lab.conftest import HOSTS, ROOT, lab_status, on, wait_until
from tests.lab.test_deploys import deploy_argv, lab_env

pytestmark = pytest.mark.usefixtures("lab")

SERVER = "p620"
PROMETHEUS, ALERTMANAGER, GRAFANA = 9090, 9093, 3001
COMMITTED = ROOT / "nix" / "monitoring"
# The original's gauge names end in _total; promtool's lint says so (exit 3), nothing else may.
ORIGINAL_GAUGES_NAMED_TOTAL = frozenset({
    "nixos_generations_total", "nixos_store_derivations_total", "nixos_gc_roots_total",
    "nixos_channels_total", "nixos_boot_entries_total", "systemd_units_total",
})  # fmt: skip


@pytest.fixture(scope="module")
def addresses() -> dict[str, str]:
    """Switch every lab host to the current configuration; its lab addresses by host."""
    result = subprocess.run(deploy_argv("switch"), cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=lab_env(ROOT))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {name: row["address"] for name, row in lab_status().items() if name in HOSTS}


def poll(predicate, timeout: float, what: str, every: float = 2.0) -> None:
    """wait_until for the long waits, asking every 2 s (each ask is a request or an SSH)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def get(url: str, **kwargs) -> httpx.Response:
    return httpx.get(url, timeout=10, **kwargs)


def prometheus(addresses: dict[str, str], path: str, **params: str) -> dict:
    answer = get(f"http://{addresses[SERVER]}:{PROMETHEUS}{path}", params=params).json()
    assert answer["status"] == "success", answer
    return answer["data"]


def targets(addresses: dict[str, str]) -> list[dict]:
    return prometheus(addresses, "/api/v1/targets", state="active")["activeTargets"]


def query(addresses: dict[str, str], expr: str) -> list[dict]:
    return prometheus(addresses, "/api/v1/query", query=expr)["result"]


# --- the exporters ---------------------------------------------------------------------------


@pytest.mark.parametrize("port", [9101, 9102])
def test_the_exporters_pass_promtool_check_metrics_on_every_host(addresses, port):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: scripts/setup installs Debian's prometheus")
    for host in HOSTS:
        response = get(f"http://{addresses[host]}:{port}/metrics")
        assert response.status_code == 200, (host, response.status_code)
        result = subprocess.run([promtool, "check", "metrics"], input=response.text,
                                capture_output=True, text=True, timeout=30)
        findings = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        allowed = [line for line in findings if line.split()[0] in ORIGINAL_GAUGES_NAMED_TOTAL
                   and 'should not have "_total" suffix' in line]
        assert result.returncode in (0, 3) and findings == allowed, (host, findings)
        # Every source reads in the lab, the GPU tools' stand-ins included.
        assert "_source_error" in response.text
        errors = [line for line in response.text.splitlines()
                  if "_source_error{" in line and not line.endswith(" 0.0")]
        assert errors == [], (host, errors)


def test_p620s_gpu_has_every_metric_from_the_rocm_smi_stand_in(addresses):
    text = get(f"http://{addresses[SERVER]}:9101/metrics").text
    for name in ("nixfleet_gpu_utilization_ratio", "nixfleet_gpu_memory_used_bytes",
                 "nixfleet_gpu_memory_total_bytes", "nixfleet_gpu_temperature_celsius",
                 "nixfleet_gpu_power_watts"):
        assert f'{name}{{gpu="0"' in text, name


def test_an_exporter_whose_source_fails_still_answers_with_the_error_gauge(addresses):
    """The Nix database read-only (a bind mount): `nix path-info` and the GC roots fail, the
    exporter answers 200 with their error gauges at 1 and their metrics absent."""
    host = "p510"
    url = f"http://{addresses[host]}:9101/metrics"
    on(host, "mount --bind /nix/var/nix/db /nix/var/nix/db && "
             "mount -o remount,bind,ro /nix/var/nix/db && "
             "systemctl restart nixfleet-nixos-exporter")
    try:
        def failing() -> bool:
            try:
                response = get(url)
            except httpx.HTTPError:
                return False
            return (response.status_code == 200 and
                    'nixos_exporter_source_error{source="store"} 1.0' in response.text)
        wait_until(failing, 60, "the store source's error gauge on p510")
        text = get(url).text
        assert 'nixos_exporter_source_error{source="gc_roots"} 1.0' in text
        assert "\nnixos_store_size_bytes " not in text and "\nnixos_store_paths " not in text
        assert 'nixos_exporter_source_error{source="generations"} 0.0' in text
        assert "\nnixos_generation_current " in text
    finally:
        on(host, "umount /nix/var/nix/db; systemctl restart nixfleet-nixos-exporter")

    def recovered() -> bool:
        try:
            return 'nixos_exporter_source_error{source="store"} 0.0' in get(url).text
        except httpx.HTTPError:
            return False
    wait_until(recovered, 60, "p510's store source to read again")


# --- Prometheus ----------------------------------------------------------------------------------


def test_every_target_is_up_and_every_expression_evaluates(addresses):
    def all_up() -> bool:
        return all(t["health"] == "up" for t in targets(addresses))
    # The slowest job scrapes every 60 s.
    poll(all_up, 150, "every Prometheus target up: " + json.dumps(
        [(t["labels"]["job"], t["labels"].get("host"), t["health"], t["lastError"])
         for t in targets(addresses) if t["health"] != "up"]))
    scraped = {(t["labels"]["job"], t["labels"].get("host")) for t in targets(addresses)}
    for job in ("node-exporter", "nixos-exporter", "systemd-exporter"):
        assert {(job, host) for host in HOSTS} <= scraped
    assert all(t["scrapeUrl"].startswith(f"http://{addresses[t['labels']['host']]}:")
               for t in targets(addresses) if t["labels"]["job"] != "prometheus")

    # The rules as p620 loaded them are the committed alerts.yml.
    loaded = [rule["name"] for group in prometheus(addresses, "/api/v1/rules")["groups"]
              for rule in group["rules"]]
    rules = [rule for group in yaml.safe_load((COMMITTED / "alerts.yml").read_text())["groups"]
             for rule in group["rules"]]
    assert sorted(loaded) == sorted(rule["alert"] for rule in rules)
    for rule in rules:
        query(addresses, rule["expr"])  # evaluates without error

    # Every panel query has series: rates need two scrapes of the 60 s job.
    dashboards = sorted((COMMITTED / SERVER / "dashboards").glob("*.json"))
    expressions = [(path.name, expr) for path in dashboards
                   for expr in grafana.expressions(json.loads(path.read_text()))]
    assert len(expressions) > 50
    empty = list(expressions)

    def every_panel_has_series() -> bool:
        empty[:] = [(name, expr) for name, expr in empty if not query(addresses, expr)]
        return not empty
    poll(every_panel_has_series, 150, f"series for every dashboard query: {empty}")


# --- alerts, end to end ------------------------------------------------------------------------


def alert_log(since: str) -> list[str]:
    return on(SERVER, f"journalctl -u nixfleet-alert-log -o cat --no-pager --since {since}"
              ).stdout.splitlines()


def rule_for_seconds(alert: str) -> int:
    """The committed rule's `for`, in seconds (promtool's durations here: Nm or Ns)."""
    groups = yaml.safe_load((COMMITTED / "alerts.yml").read_text())["groups"]
    duration = next(r["for"] for g in groups for r in g["rules"] if r.get("alert") == alert)
    return int(duration[:-1]) * {"m": 60, "s": 1}[duration[-1]]


def test_an_exporter_stopped_fires_exporter_down_to_the_webhook_and_resolves(addresses):
    """dex5550's systemd exporter (scraped every 30 s) stopped: its target goes down,
    ExporterDown fires after its `for`, Alertmanager delivers it to the receiver on p620;
    started again, the alert resolves and the receiver hears that too."""
    host, job, unit = "dex5550", "systemd-exporter", "nixfleet-systemd-exporter"
    hold = rule_for_seconds("ExporterDown")
    since = shlex.quote(on(SERVER, "date '+%Y-%m-%d %H:%M:%S'").stdout.strip())

    def target_health() -> str:
        return next(t["health"] for t in targets(addresses)
                    if t["labels"]["job"] == job and t["labels"]["host"] == host)

    def delivered(status: str) -> bool:
        return any(line.startswith(f"warning {status} ExporterDown host={host} ")
                   for line in alert_log(since))

    def firing() -> list[dict]:
        return [a for a in prometheus(addresses, "/api/v1/alerts")["alerts"]
                if a["labels"]["alertname"] == "ExporterDown" and a["state"] == "firing"]

    on(host, f"systemctl stop {unit}")
    try:
        wait_until(lambda: target_health() == "down", 45, f"{job} on {host} down")
        started = time.monotonic()
        poll(lambda: any(a["labels"]["host"] == host for a in firing()), hold + 105,
             "ExporterDown firing in Prometheus")
        assert time.monotonic() - started > hold - 30  # not before its `for`
        poll(lambda: delivered("firing"), 60, "ExporterDown delivered to the webhook")
        alerts = get(f"http://{addresses[SERVER]}:{ALERTMANAGER}/api/v2/alerts",
                     params={"filter": "alertname=ExporterDown"}).json()
        assert [a["labels"]["host"] for a in alerts] == [host]
    finally:
        on(host, f"systemctl start {unit}")
    wait_until(lambda: target_health() == "up", 45, f"{job} on {host} up again")
    wait_until(lambda: not firing(), 45, "ExporterDown no longer firing")
    poll(lambda: delivered("resolved"), 60, "the resolution delivered to the webhook")


# --- Grafana (stand-in) ----------------------------------------------------------------------


def test_grafana_answers_with_the_admin_password_from_agenix_only(addresses):
    base = f"http://{addresses[SERVER]}:{GRAFANA}"
    secret = on(SERVER, "stat -c '%U %G %a' /run/agenix/grafana-admin-password && "
                        "cat /run/agenix/grafana-admin-password").stdout.splitlines()
    assert secret[0] == "root grafana 440"
    password = secret[1].strip()
    assert len(password) >= 16
    assert get(f"{base}/api/health").json()["database"] == "ok"
    found = get(f"{base}/api/search", auth=("admin", password))
    assert found.status_code == 200
    titles = sorted(d["title"] for d in found.json())
    provisioned = sorted(json.loads(p.read_text())["title"]
                         for p in (COMMITTED / SERVER / "dashboards").glob("*.json"))
    assert titles == provisioned and "NixOS System Overview" in titles
    assert get(f"{base}/api/search", auth=("admin", password + "x")).status_code == 401
    assert get(f"{base}/api/search", auth=("admin", "admin")).status_code == 401
    assert get(f"{base}/api/search").status_code == 401
    # Never a literal: the password is in no file of the generation.
    assert on(SERVER, f"grep -rlF {shlex.quote(password)} /run/current-system/ /etc/nixos/",
              check=False).stdout == ""


def test_the_lab_runs_the_files_rendered_from_the_inventory(addresses):
    """p620's Prometheus and Alertmanager configuration is the rendered text (lab addresses)."""
    flags = prometheus(addresses, "/api/v1/status/flags")
    config_file = Path(flags["config.file"])
    assert config_file.name == "prometheus.yml" and config_file.parent.name == SERVER
    on_host = on(SERVER, f"cat {config_file.parent.parent}/alerts.yml").stdout
    assert on_host == (COMMITTED / "alerts.yml").read_text()
    on_host = on(SERVER, f"cat {config_file.parent.parent}/alertmanager.yml").stdout
    assert on_host == (COMMITTED / "alertmanager.yml").read_text()

"""The monitoring server's configuration (nix/monitoring/): generated from the inventory, and
checked by the real tools on the committed files: `promtool check config`, `promtool check
rules`, `promtool test rules` (nix/monitoring/alerts.test.yml: every alert fires when it should
and stays quiet when it should not), `amtool check-config`, and every dashboard expression
parsed by Prometheus's own parser. The flake's server module installs these same files.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from nixfleet import monitoring, nixcheck, render
from nixfleet.errors import NixfleetError
from nixfleet.inventory import Fleet, build_fleet, load_group_data, load_inventory_file
from nixfleet.monitoring import alerts, grafana
from nixfleet.monitoring import metrics as m

HOSTS = ["p620", "razer", "p510", "dex5550"]
ALL_ALERTS = {"HighCPUUsage", "HighMemoryUsage", "LowDiskSpace", "NixStoreSize",
              "SystemdServiceFailed", "HostDown", "HighNetworkTraffic",  # the original's seven
              "ExporterDown", "ExporterSourceFailing", "RebootRequired", "GpuTemperatureHigh",
              "SystemdUnitsFailed", "HostNotVerified", "RebootPending"}


@pytest.fixture
def fleet(root: Path, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    monkeypatch.setenv("NIXFLEET_TARGET", "fleet")
    return load_inventory_file(root / "inventory.py")


@pytest.fixture
def committed(root: Path) -> Path:
    return root / monitoring.OUTPUT_DIR


def fleet_from(root: Path, entries: list[tuple[str, dict[str, Any]]]) -> Fleet:
    return build_fleet(entries, load_group_data(root / "group_data"))


def entry(entries: list[tuple[str, dict[str, Any]]], name: str) -> dict[str, Any]:
    return next(data for host, data in entries if host == name)


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rendered_yaml(fleet: Fleet, root: Path, path: str, **kwargs: Any) -> Any:
    files = monitoring.render(fleet, monitoring.read_ports(root), **kwargs)
    return yaml.safe_load(files[PurePosixPath(path)])


def tool(name: str, package: str) -> str:
    """The real tool, or a failure saying how to get it (never a skip)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's {package} (scripts/setup does)")
    return path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return run(tool("promtool", "prometheus"), *args)


def jobs_of(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def targets(job: dict[str, Any]) -> list[str]:
    return [t for static in job["static_configs"] for t in static["targets"]]


# --- generated from the inventory --------------------------------------------------------


def test_the_committed_files_are_what_the_inventory_gives(fleet, root):
    wanted = monitoring.generated_files(fleet, root)
    assert sorted(p.relative_to(root / "nix" / "monitoring").as_posix() for p in wanted) == [
        "alertmanager.yml", "alerts.yml", "grafana-dashboards.yml", "grafana-datasources.yml",
        "p620/dashboards/host-dex5550.json", "p620/dashboards/host-p510.json",
        "p620/dashboards/host-p620.json", "p620/dashboards/host-razer.json",
        "p620/dashboards/nixos-system-overview.json", "p620/prometheus.yml"]
    assert render.stale(wanted) == [], "run `nixfleet generate`"
    assert monitoring.existing_files(root) == sorted(
        p for p in wanted if p.suffix == ".json" or p.name == "prometheus.yml")


def test_prometheus_scrapes_the_original_jobs_on_the_hosts_that_enable_them(committed):
    config = read_yaml(committed / "p620" / "prometheus.yml")
    jobs = jobs_of(config)
    assert {name: job["scrape_interval"] for name, job in jobs.items()} == {
        "prometheus": "30s", "node-exporter": "15s", "nixos-exporter": "60s",
        "systemd-exporter": "30s"}
    assert targets(jobs["node-exporter"]) == [f"{h}:9100" for h in HOSTS]
    assert targets(jobs["nixos-exporter"]) == [f"{h}:9101" for h in HOSTS]
    assert targets(jobs["systemd-exporter"]) == [f"{h}:9102" for h in HOSTS]
    # Not the original's ollama job: Ollama serves no /metrics, so its target was always down.
    assert "ollama" not in jobs
    assert targets(jobs["prometheus"]) == ["localhost:9090"]
    assert [s["labels"] for s in jobs["node-exporter"]["static_configs"]] == [
        {"host": "p620", "class": "amd"}, {"host": "razer", "class": "nvidia"},
        {"host": "p510", "class": "nvidia"}, {"host": "dex5550", "class": "intel"}]
    assert config["global"] == {
        "scrape_interval": "15s", "evaluation_interval": "15s",
        "external_labels": {"cluster": "nixos-homelab", "replica": "p620"}}
    # The original never told Prometheus where Alertmanager was.
    assert config["alerting"] == {
        "alertmanagers": [{"static_configs": [{"targets": ["localhost:9093"]}]}]}
    assert config["rule_files"] == ["/etc/nixfleet/monitoring/alerts.yml"]


def test_a_host_is_a_target_only_of_the_jobs_its_features_ask_for(root, host_entries):
    entry(host_entries, "razer")["features"]["monitoring"]["features"]["serviceMetrics"] = False
    entry(host_entries, "p510")["features"]["monitoring"]["features"]["aiMetrics"] = True
    entry(host_entries, "dex5550")["features"]["monitoring"] = {"enable": False}
    jobs = jobs_of(rendered_yaml(fleet_from(root, host_entries), root, "p620/prometheus.yml"))
    assert targets(jobs["systemd-exporter"]) == ["p620:9102", "p510:9102"]
    assert targets(jobs["node-exporter"]) == ["p620:9100", "razer:9100", "p510:9100"]
    assert "ollama" not in jobs  # Ollama serves no metrics, whatever aiMetrics says


def test_without_alerting_prometheus_names_no_alertmanager(root, host_entries):
    entry(host_entries, "p620")["features"]["monitoring"]["features"]["alerting"] = False
    config = rendered_yaml(fleet_from(root, host_entries), root, "p620/prometheus.yml")
    assert "alerting" not in config
    assert config["rule_files"] == ["/etc/nixfleet/monitoring/alerts.yml"]


def test_a_standalone_host_is_a_server_for_itself_alone(root, host_entries):
    entry(host_entries, "dex5550")["features"]["monitoring"] = {"enable": True,
                                                               "mode": "standalone"}
    files = monitoring.render(fleet_from(root, host_entries), monitoring.read_ports(root))
    own = yaml.safe_load(files[PurePosixPath("dex5550/prometheus.yml")])
    assert targets(jobs_of(own)["node-exporter"]) == ["dex5550:9100"]
    p620 = yaml.safe_load(files[PurePosixPath("p620/prometheus.yml")])
    assert "dex5550:9100" not in targets(jobs_of(p620)["node-exporter"])
    assert sorted(p.name for p in files if p.parent == PurePosixPath("dex5550/dashboards")) == [
        "host-dex5550.json", "nixos-system-overview.json"]


def test_the_lab_renders_its_own_copy_with_its_addresses(fleet, root):
    """Addresses are a parameter: the lab scrapes its containers, not the real hosts."""
    config = rendered_yaml(fleet, root, "p620/prometheus.yml",
                           addresses={"razer": "10.199.77.3", "p510": "fd00::5"})
    node = targets(jobs_of(config)["node-exporter"])
    assert node == ["p620:9100", "10.199.77.3:9100", "[fd00::5]:9100", "dex5550:9100"]


def test_generate_removes_the_files_of_a_host_that_left(root, tmp_path, host_entries):
    for path in ("secrets/rules.py", "nix/lib/ports.json"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / path, tmp_path / path)
    render.generate(fleet_from(root, host_entries), tmp_path)
    gone = tmp_path / "nix" / "monitoring" / "p620" / "dashboards" / "host-dex5550.json"
    assert gone.is_file()

    smaller = fleet_from(root, [e for e in host_entries if e[0] != "dex5550"])
    with pytest.raises(NixfleetError, match=r"nix/monitoring/p620/dashboards/host-dex5550\.json"):
        render.check_generated(smaller, tmp_path)
    changed = render.generate(smaller, tmp_path)
    assert gone in changed
    assert not gone.exists()
    assert "dex5550" not in (tmp_path / "nix/monitoring/p620/prometheus.yml").read_text()
    render.check_generated(smaller, tmp_path)


# --- checked by the real tools -----------------------------------------------------------


def test_promtool_accepts_the_prometheus_config_and_its_rule_file(committed, tmp_path):
    """The committed prometheus.yml, with rule_files pointed at the committed alerts.yml (on
    the server both are in /etc/nixfleet/monitoring): promtool also checks the rules it names."""
    installed = f"{monitoring.SERVER_CONFIG_DIR}/{monitoring.RULES_FILE}"
    text = (committed / "p620" / "prometheus.yml").read_text()
    assert text.count(installed) == 1
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace(installed, str(committed / monitoring.RULES_FILE)))
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_promtool_checks_the_rules(committed):
    result = promtool("check", "rules", str(committed / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALL_ALERTS)} rules found" in result.stdout


def test_every_alert_passes_its_unit_tests(committed):
    result = promtool("test", "rules", str(committed / "alerts.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_quiet(committed):
    rules = read_yaml(committed / "alerts.yml")
    in_rules = {r["alert"] for group in rules["groups"] for r in group["rules"]}
    assert in_rules == ALL_ALERTS == set(alerts.alert_names())
    cases = [case for test in read_yaml(committed / "alerts.test.yml")["tests"]
             for case in test["alert_rule_test"]]
    assert {c["alertname"] for c in cases} == in_rules
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert firing == in_rules, f"never seen firing: {in_rules - firing}"
    assert quiet == in_rules, f"never seen quiet: {in_rules - quiet}"


def test_a_broken_rule_fails_its_unit_test(committed, tmp_path):
    """The unit tests do hold the rules to their thresholds."""
    shutil.copy(committed / "alerts.test.yml", tmp_path)
    rules = (committed / "alerts.yml").read_text()
    assert "[5m]))) > 80\n" in rules
    (tmp_path / "alerts.yml").write_text(rules.replace("[5m]))) > 80\n", "[5m]))) > 95\n"))
    result = promtool("test", "rules", str(tmp_path / "alerts.test.yml"))
    assert result.returncode == 1
    assert "alertname: HighCPUUsage" in result.stdout + result.stderr


def test_amtool_accepts_the_alertmanager_config(committed):
    result = run(tool("amtool", "prometheus-alertmanager"), "check-config",
                 str(committed / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 receivers" in result.stdout


def test_amtool_routes_every_alert_to_the_receiver_of_its_severity(committed):
    receivers = {"critical": "critical", "warning": "warning", "info": "default"}
    for group in read_yaml(committed / "alerts.yml")["groups"]:
        for rule in group["rules"]:
            severity = rule["labels"]["severity"]
            result = run(tool("amtool", "prometheus-alertmanager"), "config", "routes", "test",
                         f"--config.file={committed / 'alertmanager.yml'}",
                         f"--verify.receivers={receivers[severity]}",
                         f"alertname={rule['alert']}", f"severity={severity}",
                         f"service={rule['labels']['service']}", "cluster=nixos-homelab")
            assert result.returncode == 0, (rule["alert"], result.stdout + result.stderr)
            assert result.stdout.strip() == receivers[severity]


def dashboard_expressions(committed: Path) -> list[tuple[str, str]]:
    """(dashboard file, expression) of every panel query of the committed dashboards."""
    return [(path.name, expr) for path in sorted(committed.glob("*/dashboards/*.json"))
            for expr in grafana.expressions(json.loads(path.read_text()))]


def promql_check(expressions: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Prometheus's own parser on each expression: a rule file with one recording rule each,
    for `promtool check rules`."""
    rules = {"groups": [{"name": "dashboard-expressions", "rules": [
        {"record": f"nixfleet:dashboard_expression_{i}", "expr": expr}
        for i, expr in enumerate(expressions)]}]}
    path = tmp_path / "dashboard-expressions.yml"
    path.write_text(yaml.safe_dump(rules))
    return promtool("check", "rules", str(path))


def test_prometheus_parses_every_dashboard_expression(committed, tmp_path):
    expressions = [expr for _, expr in dashboard_expressions(committed)]
    assert len(expressions) > 50
    result = promql_check(expressions, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in result.stdout


def test_the_expression_check_fails_on_a_bad_expression(tmp_path):
    result = promql_check(["up", 'rate(node_cpu_seconds_total{mode="idle"}[5m]'], tmp_path)
    assert result.returncode == 1
    assert "dashboard_expression_1" in result.stdout + result.stderr


# --- what the files say ------------------------------------------------------------------


def test_alertmanager_routes_groups_and_inhibits_as_the_original(committed):
    config = read_yaml(committed / "alertmanager.yml")
    route = config["route"]
    assert route["group_by"] == ["alertname", "cluster", "service"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        "10s", "10s", "1h")
    critical, warning = route["routes"]
    assert critical == {"matchers": ['severity="critical"'], "receiver": "critical",
                        "group_wait": "5s", "repeat_interval": "5m"}
    assert warning == {"matchers": ['severity="warning"'], "receiver": "warning",
                       "repeat_interval": "30m"}
    assert config["inhibit_rules"][0] == {
        "source_matchers": ['severity="critical"'], "target_matchers": ['severity="warning"'],
        "equal": ["alertname", "cluster", "service"]}
    # The original's receivers: webhooks on the server itself, nothing secret.
    assert {r["name"]: [w["url"] for w in r["webhook_configs"]] for r in config["receivers"]} == {
        "default": ["http://localhost:9094/webhook"],
        "critical": ["http://localhost:9094/webhook/critical"],
        "warning": ["http://localhost:9094/webhook/warning"]}


def test_every_alert_routes_on_severity_and_groups_on_service(committed):
    rules = [r for g in read_yaml(committed / "alerts.yml")["groups"] for r in g["rules"]]
    by_name = {r["alert"]: r for r in rules}
    assert all(set(r["labels"]) == {"severity", "service"} for r in rules)
    assert by_name["HostDown"]["labels"]["severity"] == "critical"
    assert by_name["HostDown"]["for"] == "1m"
    assert by_name["NixStoreSize"]["labels"]["severity"] == "info"
    assert by_name["NixStoreSize"]["for"] == "1h"
    assert by_name["SystemdServiceFailed"]["for"] == "0m"
    assert by_name["HighNetworkTraffic"]["for"] == "10m"
    assert all("{{ $labels.host }}" in r["annotations"]["summary"] for r in rules)


def test_rules_and_dashboards_use_only_the_metric_names_of_the_table(committed):
    """Every metric a rule or panel queries is one of nixfleet.monitoring.metrics (which the
    exporters must match), not a name spelled by hand."""
    known = {v for k, v in vars(m).items() if k.isupper() and isinstance(v, str)}
    rules = [r["expr"] for g in read_yaml(committed / "alerts.yml")["groups"]
             for r in g["rules"]]
    used = set()
    for expr in rules + [e for _, e in dashboard_expressions(committed)]:
        used.update(re.findall(r"\b(?:node|nixos|systemd|nixfleet)_[a-zA-Z0-9_]+\b|\bup\b",
                               re.sub(r'"[^"]*"', "", expr)))
    assert used - known == set()
    assert {m.GPU_TEMPERATURE, m.NIXOS_REBOOT_REQUIRED, m.SYSTEMD_UNITS_FAILED} <= used


def test_grafana_gets_the_datasource_an_overview_and_a_dashboard_per_host(committed):
    datasources = read_yaml(committed / "grafana-datasources.yml")["datasources"]
    assert [(d["name"], d["type"], d["uid"], d["url"], d["isDefault"]) for d in datasources] == [
        ("Prometheus", "prometheus", "prometheus", "http://localhost:9090", True)]
    provider = read_yaml(committed / "grafana-dashboards.yml")["providers"][0]
    assert provider["options"]["path"] == "/etc/nixfleet/monitoring/dashboards"

    dashboards = {p.name: json.loads(p.read_text())
                  for p in (committed / "p620" / "dashboards").glob("*.json")}
    assert {d["title"] for d in dashboards.values()} == {
        "NixOS System Overview", "p620 - AMD", "razer - NVIDIA", "p510 - NVIDIA",
        "dex5550 - Intel"}
    panels = {d["title"]: [p["title"] for p in d["panels"]] for d in dashboards.values()}
    assert {"GPU utilisation (AMD)", "GPU temperature (AMD)"} <= set(panels["p620 - AMD"])
    assert {"GPU utilisation (NVIDIA)", "GPU memory (NVIDIA)", "GPU power (NVIDIA)"} <= set(
        panels["razer - NVIDIA"])
    assert "GPU (Intel)" in panels["dex5550 - Intel"]
    assert not any(t.startswith("GPU") for t in panels["NixOS System Overview"])
    for dashboard in dashboards.values():
        ids = [p["id"] for p in dashboard["panels"]]
        assert ids == list(range(1, len(ids) + 1))
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == datasources[0]["uid"]
    razer = [e for name, e in dashboard_expressions(committed) if name == "host-razer.json"]
    assert all('host="razer"' in e for e in razer)


# --- the flake reads these same files ----------------------------------------------------


def test_the_server_module_installs_the_committed_files(root, committed):
    """server.nix, evaluated with a stub lib: Prometheus's and Alertmanager's configuration
    are the committed files' text, Grafana provisions the committed files, and the rule file
    and dashboards land where prometheus.yml and the provider look for them."""
    if shutil.which("nix-instantiate") is None:
        pytest.fail("nix-instantiate not found: install Debian's nix-bin (scripts/setup does)")
    server = nixcheck.evaluate("""
      { nixDir, stubs }:
      let
        dir = /. + nixDir;
        fleet = import (dir + "/lib/fleet.nix") { hostsDir = dir + "/hosts"; };
        config = {
          networking.hostName = "p620";
          nixfleet.features.monitoring = fleet.hosts.p620.features.monitoring;
          nixfleet.monitoring.server.configDir = dir + "/monitoring";
          nixfleet.secrets.declarations.grafana-admin-password = { };
          age.secrets.grafana-admin-password.path = "/run/agenix/grafana-admin-password";
          services.grafana.dataDir = "/var/lib/grafana";
        };
        module = import (dir + "/modules/monitoring/server.nix")
          (import (/. + stubs) // { inherit config; });
        c = module.config.content;
      in {
        configDirDefault = toString module.options.nixfleet.monitoring.server.configDir.default;
        prometheus = c.services.prometheus.configText;
        checkConfig = c.services.prometheus.checkConfig;
        alertmanager = c.services.prometheus.alertmanager.content.configText;
        datasources = toString c.services.grafana.provision.datasources.path;
        providers = toString c.services.grafana.provision.dashboards.path;
        adminPassword = c.services.grafana.settings.security.admin_password;
        assertions = map (a: a.assertion) c.assertions;
        etc = builtins.mapAttrs (name: value: toString value.source) c.environment.etc;
      }""", nixDir=str(root / "nix"), stubs=str(nixcheck.EXPRESSIONS / "stub-module-args.nix"))
    assert server["configDirDefault"] == str(committed)
    assert server["prometheus"] == (committed / "p620" / "prometheus.yml").read_text()
    assert server["alertmanager"] == (committed / "alertmanager.yml").read_text()
    assert server["checkConfig"] == "syntax-only"
    assert server["datasources"] == str(committed / "grafana-datasources.yml")
    assert server["providers"] == str(committed / "grafana-dashboards.yml")
    # Grafana's admin password is the agenix secret, never a literal.
    assert server["adminPassword"] == "$__file{/run/agenix/grafana-admin-password}"
    assert server["assertions"] == [True]
    installed = monitoring.SERVER_CONFIG_DIR.removeprefix("/etc/")
    assert server["etc"] == {
        f"{installed}/alerts.yml": str(committed / "alerts.yml"),
        f"{installed}/dashboards": str(committed / "p620" / "dashboards")}


# --- the receiver the webhooks reach -------------------------------------------------------


@pytest.fixture
def alert_log(root: Path):
    """nix/modules/monitoring/alert_log.py listening on a free port: (base URL, process)."""
    process = subprocess.Popen(
        [sys.executable, str(root / "nix/modules/monitoring/alert_log.py"), "--port", "0"],
        stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.startswith("listening on 127.0.0.1:"), first
    yield f"http://{first.split()[-1]}", process
    process.terminate()
    process.wait(timeout=10)


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_the_alert_log_writes_one_line_per_alert_for_each_webhook_url(alert_log, committed):
    base, process = alert_log
    payload = {"version": "4", "status": "firing", "receiver": "critical", "alerts": [
        {"status": "firing", "labels": {"alertname": "HostDown", "host": "razer",
                                        "severity": "critical"},
         "annotations": {"summary": "razer is down"}},
        {"status": "resolved", "labels": {"alertname": "HostDown", "host": "p510",
                                          "severity": "critical"},
         "annotations": {"summary": "p510 is down"}}]}
    urls = [w["url"] for r in read_yaml(committed / "alertmanager.yml")["receivers"]
            for w in r["webhook_configs"]]
    for url in urls:
        local = base + urllib.parse.urlsplit(url).path
        assert post(local, json.dumps(payload).encode()) == 200
    assert post(base + "/elsewhere", b"{}") == 404
    assert post(base + "/webhook", b"not json") == 400
    assert post(base + "/webhook", b'{"alerts": 1}') == 400
    process.terminate()
    out = process.stdout.read().splitlines()
    assert out == [line for route in ("default", "critical", "warning") for line in (
        f"{route} firing HostDown host=razer severity=critical: razer is down",
        f"{route} resolved HostDown host=p510 severity=critical: p510 is down")]

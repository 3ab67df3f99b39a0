"""Canary rollouts: the waves (nixfleet.rollout), their order under gevent, and the alert gate
(nixfleet.alertgate) against a loopback server that answers as Prometheus's /api/v1/alerts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gevent
import pytest

from nixfleet.alertgate import Watched, WaveAlerts
from nixfleet.errors import InventoryError
from nixfleet.model import AlertGate, Deploy
from nixfleet.monitoring import alerts as rules
from nixfleet.outcome import Result
from nixfleet.rollout import Member, Rollout, plan_waves

FLEET = [Member("p620", "amd"), Member("razer", "nvidia"), Member("p510", "nvidia"),
         Member("dex5550", "intel")]
BIG = [Member(f"n{i}", "nvidia") for i in range(1, 8)] + [Member("a1", "amd")]


def test_the_first_wave_is_one_host_per_hardware_class_then_the_rest():
    assert plan_waves(FLEET, None) == [("p620", "razer", "dex5550"), ("p510",)]


def test_a_host_marked_canary_goes_first_for_its_class():
    fleet = [m if m.name != "p510" else Member("p510", "nvidia", canary=True) for m in FLEET]
    assert plan_waves(fleet, None) == [("p620", "p510", "dex5550"), ("razer",)]


@pytest.mark.parametrize(("batch", "waves"), [
    (None, [("n1", "a1"), ("n2", "n3", "n4", "n5", "n6", "n7")]),
    (2, [("n1", "a1"), ("n2", "n3"), ("n4", "n5"), ("n6", "n7")]),
    ("50%", [("n1", "a1"), ("n2", "n3", "n4"), ("n5", "n6", "n7")]),
    ("10%", [("n1", "a1"), *((f"n{i}",) for i in range(2, 8))]),  # at least one host
])
def test_the_rest_in_batches_as_ansible_serial(batch, waves):
    assert plan_waves(BIG, batch) == waves


def test_canaries_alone_are_one_wave():
    assert plan_waves(FLEET[:2], 1) == [("p620", "razer")]


@pytest.mark.parametrize(("data", "message"), [
    ({"batch": "150%"}, "a number of hosts (e.g. 2) or a share (e.g. '50%'), got '150%'"),
    ({"batch": 0}, "a number of hosts (e.g. 2) or a share (e.g. '50%'), got 0"),
    ({"strategy": "blue-green"}, "Input should be 'all' or 'canary'"),
    ({"alertGate": {"alerts": ["ExporterDwn"]}},
     "unknown alert 'ExporterDwn' (did you mean 'ExporterDown'?)"),
])
def test_bad_rollout_data_is_one_clear_line(host_entries, root, data, message):
    from tests.unit.test_inventory import entry, fleet_of

    entry(host_entries, "p510")["deploy"] = data
    with pytest.raises(InventoryError) as raised:
        fleet_of(host_entries, root)
    assert message in str(raised.value) and str(raised.value).startswith("host p510: deploy.")
    assert "\n" not in str(raised.value)


def test_the_model_knows_every_generated_alert_by_name():
    from nixfleet.model import ALERT_NAMES

    assert list(ALERT_NAMES) == rules.alert_names()


def test_alert_rules_from_data_change_only_their_for():
    config = rules.rules_config({"ExporterDown": "0s"})
    found = {r["alert"]: r for g in config["groups"] for r in g["rules"]}
    assert found["ExporterDown"]["for"] == "0s"
    default = {r["alert"]: r for g in rules.rules_config()["groups"] for r in g["rules"]}
    assert default["ExporterDown"]["for"] == "2m"
    assert {k: v for k, v in found.items() if k != "ExporterDown"} == \
        {k: v for k, v in default.items() if k != "ExporterDown"}


# --- the order of the waves ---------------------------------------------------------------


def test_each_wave_starts_after_the_one_before_has_passed_its_gate():
    events: list[str] = []

    def start(i):
        events.append(f"start {i}")

    def finish(i):
        events.append(f"gate {i}")
        gevent.sleep(0.05)  # a gate takes a while: the next wave waits for it
        return None

    rollout = Rollout([("a", "b"), ("c",)], lambda i: [{"a", "b"}, {"c"}][i], start, finish)

    def host(name, seconds):
        assert rollout.turn(name) is None
        events.append(f"run {name}")
        gevent.sleep(seconds)
        rollout.done(name)

    gevent.joinall([gevent.spawn(host, n, s) for n, s in (("c", 0), ("a", 0.02), ("b", 0.01))])
    assert events == ["start 0", "run a", "run b", "gate 0", "start 1", "run c", "gate 1"]
    assert rollout.complete.is_set()


def test_a_wave_that_fails_stops_every_later_wave():
    said = []
    rollout = Rollout([("a",), ("b",), ("c",)], lambda i: [{"a"}, {"b"}, {"c"}][i],
                      lambda i: said.append(i), lambda i: "not attempted: wave 1 stopped it")

    def host(name):
        why = rollout.turn(name)
        rollout.done(name)
        return why

    jobs = [gevent.spawn(host, n) for n in ("c", "b", "a")]
    gevent.joinall(jobs)
    assert [j.value for j in jobs] == ["not attempted: wave 1 stopped it"] * 2 + [None]
    assert said == [0]  # no later wave started
    assert rollout.complete.is_set()


def test_a_host_that_failed_before_its_rebuild_is_not_waited_for():
    failed = {"b"}
    rollout = Rollout([("a", "b"), ("c",)], lambda i: [{"a", "b"}, {"c"}][i] - failed,
                      lambda i: None, lambda i: None)
    def first_wave() -> None:
        rollout.turn("a")
        rollout.done("a")

    first = gevent.spawn(first_wave)
    second = gevent.spawn(rollout.turn, "c")
    gevent.joinall([first, second], timeout=5)
    assert second.ready() and second.value is None


# --- the alert gate -----------------------------------------------------------------------


class Prometheus(ThreadingHTTPServer):
    """/api/v1/alerts with what `firing` holds now."""

    def __init__(self) -> None:
        self.firing: list[dict] = []
        self.status = 200
        super().__init__(("127.0.0.1", 0), _Alerts)

    def alert(self, name: str, host: str, state: str = "firing",
              severity: str = "warning") -> None:
        self.firing.append({"labels": {"alertname": name, "host": host, "severity": severity},
                            "annotations": {"summary": f"{name} on {host}"}, "state": state,
                            "activeAt": "2026-12-07T12:00:00Z"})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Alerts(BaseHTTPRequestHandler):
    server: Prometheus

    def do_GET(self) -> None:
        body = json.dumps({"status": "success", "data": {"alerts": self.server.firing}})
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[Prometheus]:
    server = Prometheus()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def watched(name: str, prometheus: Prometheus, server: str = "mon", settle: int = 0,
            **gate: object) -> Watched:
    return Watched(name, server, prometheus.url, AlertGate.model_validate(gate), settle)


def test_a_new_alert_on_a_wave_host_fails_it_with_the_alert_and_its_summary(prometheus):
    prometheus.alert("ExporterDown", "web2")  # before the wave: does not judge it
    gate = WaveAlerts([watched("web1", prometheus), watched("web2", prometheus)])
    gate.before()
    prometheus.alert("ExporterDown", "web1")
    prometheus.alert("HighCPUUsage", "web2")  # not one the gate counts
    prometheus.alert("SystemdUnitsFailed", "web3", state="pending")
    outcomes = gate.after(["web1", "web2"])
    assert outcomes["web1"].result is Result.FAILED
    assert outcomes["web1"].reason == "alert gate: ExporterDown firing: ExporterDown on web1"
    assert outcomes["web2"].result is None
    assert outcomes["web2"].reason == "alert gate: no new alert within 0s"


def test_which_alerts_count_is_data(prometheus):
    gate = WaveAlerts([watched("web1", prometheus, alerts=[], severities=["critical"])])
    gate.before()
    prometheus.alert("ExporterDown", "web1")  # a warning: not counted here
    prometheus.alert("HostDown", "web1", severity="critical")
    assert gate.after(["web1"])["web1"].reason == \
        "alert gate: HostDown firing: HostDown on web1"


def test_the_gate_watches_for_settle_seconds(prometheus):
    gate = WaveAlerts([watched("web1", prometheus, settle=3)])
    gate.before()
    later = threading.Timer(1.0, prometheus.alert, ("ExporterDown", "web1"))
    later.start()
    try:
        assert gate.after(["web1"])["web1"].result is Result.FAILED
    finally:
        later.cancel()


def test_the_gate_is_skipped_and_says_why_never_a_silent_pass(prometheus):
    unreachable = Watched("web3", "down", "http://127.0.0.1:9", AlertGate(), 0)
    gate = WaveAlerts([watched("mon", prometheus, server="mon"),
                       watched("web1", prometheus, server="mon"), unreachable,
                       Watched("web4", None, None, AlertGate(), 0)])
    gate.before()
    outcomes = gate.after(["mon", "web1", "web3", "web4"])
    assert outcomes["mon"].reason == "alert gate skipped: it is the monitoring server, in this wave"
    assert outcomes["web1"].reason == ("alert gate skipped: its monitoring server mon is in this "
                                       "wave (it restarts with it)")
    assert outcomes["web3"].reason.startswith(
        "alert gate skipped: monitoring server down: Prometheus http://127.0.0.1:9/api/v1/alerts: "
        "cannot be reached")
    assert outcomes["web4"].reason == "alert gate skipped: the host has no monitoring server"
    assert all(o.result is None for o in outcomes.values())


def test_canary_settings_have_defaults_that_validate():
    settings = Deploy()
    assert settings.strategy == "all" and settings.batch is None
    assert settings.alertGate.settle is None and "ExporterDown" in settings.alertGate.alerts

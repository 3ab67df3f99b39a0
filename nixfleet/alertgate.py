"""The alert gate of a rollout's wave: the fleet's own Prometheus, asked before the wave for
what fires on its hosts, and for `deploy.alertGate.settle` seconds after it for what fires
there now. An alert that counts (its name in `alerts`, or its severity in `severities`) and was
not firing before the wave fails its host, with the alert's name and summary.

Each host is watched by its monitoring server (features.monitoring.serverHost, or itself when
it is one), reached at its pyinfra address on the port of nix/lib/ports.json. When that server
is in the wave itself (it restarts with it) or cannot be asked, the gate is skipped for the
host, and its row says so: never a silent pass.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nixfleet.errors import NixfleetError
from nixfleet.model import AlertGate as Settings
from nixfleet.monitoring.api import TIMEOUT, FiringAlert, api_data, firing
from nixfleet.outcome import Result, StepOutcome

POLL = 2.0  # seconds between two questions to Prometheus while the wave settles


@dataclass(frozen=True)
class Watched:
    """A host of the rollout and where its alerts are asked."""

    name: str
    server: str | None  # its monitoring server (None: not monitored)
    prometheus: str | None  # that server's Prometheus, http://ADDRESS:PORT
    settings: Settings
    settle: int  # seconds to watch after the wave

    def counts(self, alert: FiringAlert) -> bool:
        return alert.host == self.name and (
            alert.name in self.settings.alerts or alert.severity in self.settings.severities)


class WaveAlerts:
    """One wave's alert gate: `before()` when the wave starts, `after()` once its hosts are
    done (it waits for the longest settle of them)."""

    def __init__(self, hosts: Sequence[Watched]) -> None:
        self.hosts = list(hosts)
        self.skipped: dict[str, str] = {}  # host -> why the gate is skipped for it
        self.before_wave: set[tuple[str, str | None]] = set()

    def _servers(self) -> dict[str, str]:
        """The Prometheus of each monitoring server the wave's hosts need, by server name."""
        return {h.server: h.prometheus for h in self.hosts
                if h.server and h.prometheus and h.name not in self.skipped}

    def _ask(self) -> tuple[list[FiringAlert], dict[str, str]]:
        """What fires now on the servers still in the gate; servers that did not answer."""
        alerts: list[FiringAlert] = []
        failed: dict[str, str] = {}
        for server, prometheus in self._servers().items():
            try:
                alerts += firing(server, api_data(server, f"{prometheus}/api/v1/alerts",
                                                  TIMEOUT))
            except NixfleetError as error:
                failed[server] = str(error)
        return alerts, failed

    def _skip_unreachable(self, failed: Mapping[str, str]) -> None:
        for host in self.hosts:
            if host.server is not None and host.server in failed \
                    and host.name not in self.skipped:
                self.skipped[host.name] = failed[host.server]

    def before(self) -> None:
        names = {h.name for h in self.hosts}
        for host in self.hosts:
            if host.server is None or host.prometheus is None:
                self.skipped[host.name] = "the host has no monitoring server"
            elif host.server == host.name:
                self.skipped[host.name] = "it is the monitoring server, in this wave"
            elif host.server in names:
                self.skipped[host.name] = (f"its monitoring server {host.server} is in this "
                                           "wave (it restarts with it)")
        alerts, failed = self._ask()
        self._skip_unreachable(failed)
        self.before_wave = {(a.name, a.host) for a in alerts}

    def after(self, done: Sequence[str]) -> dict[str, StepOutcome]:
        """Watch for `settle` seconds; per host of `done` (those that passed their other
        gates): failed with the first new alert, passed, or skipped and why."""
        watched = [h for h in self.hosts if h.name in done and h.name not in self.skipped]
        settle = max((h.settle for h in watched), default=0)
        new: dict[str, FiringAlert] = {}
        deadline = time.monotonic() + settle
        while watched:
            alerts, failed = self._ask()
            self._skip_unreachable(failed)
            for alert in alerts:
                for host in watched:
                    if host.counts(alert) and (alert.name, alert.host) not in self.before_wave:
                        new.setdefault(host.name, alert)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or all(h.name in new or h.name in self.skipped for h in watched):
                break
            time.sleep(min(POLL, remaining))
        outcomes = {}
        for host in self.hosts:
            if host.name not in done:
                continue
            if host.name in self.skipped:
                outcomes[host.name] = StepOutcome(
                    f"alert gate skipped: {self.skipped[host.name]}")
            elif host.name in new:
                alert = new[host.name]
                outcomes[host.name] = StepOutcome(
                    f"alert gate: {alert.name} firing: {alert.summary}", Result.FAILED)
            else:
                outcomes[host.name] = StepOutcome(
                    f"alert gate: no new alert within {host.settle}s")
        return outcomes

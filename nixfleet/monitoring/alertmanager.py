"""alertmanager.yml: the original's grouping, routes, receivers and inhibition, corrected.

Route: group by alertname, cluster and service (group_wait 10s, group_interval 10s, repeat
1h); critical alerts wait 5s and repeat every 5m, warnings repeat every 30m. A critical alert
silences warnings of the same alertname, cluster and service (the original's inhibition), plus
two of our own: a host that is down silences its exporters' alerts, and SystemdServiceFailed
(which names the units) silences the systemd exporter's count of them.
Receivers are the original's kind, webhooks on the server itself (default, /critical,
/warning); the original's `title` and `text` were not webhook fields, so Alertmanager refused
the file. Nothing here is secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nixfleet.monitoring.promql import eq, re_match

GROUP_BY = ["alertname", "cluster", "service"]


def _webhook(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "webhook_configs": [{"url": url, "send_resolved": True}]}


def alertmanager_config(ports: Mapping[str, int]) -> dict[str, Any]:
    webhook = f"http://localhost:{ports['alertWebhook']}/webhook"
    return {
        "route": {
            "receiver": "default",
            "group_by": GROUP_BY,
            "group_wait": "10s",
            "group_interval": "10s",
            "repeat_interval": "1h",
            "routes": [
                {"matchers": [eq("severity", "critical")], "receiver": "critical",
                 "group_wait": "5s", "repeat_interval": "5m"},
                {"matchers": [eq("severity", "warning")], "receiver": "warning",
                 "repeat_interval": "30m"},
            ],
        },
        "inhibit_rules": [
            {"source_matchers": [eq("severity", "critical")],
             "target_matchers": [eq("severity", "warning")],
             "equal": GROUP_BY},
            {"source_matchers": [eq("alertname", "HostDown")],
             "target_matchers": [re_match("alertname", "ExporterDown|ExporterSourceFailing")],
             "equal": ["host"]},
            {"source_matchers": [eq("alertname", "SystemdServiceFailed")],
             "target_matchers": [eq("alertname", "SystemdUnitsFailed")],
             "equal": ["host"]},
        ],
        "receivers": [
            _webhook("default", webhook),
            _webhook("critical", f"{webhook}/critical"),
            _webhook("warning", f"{webhook}/warning"),
        ],
    }

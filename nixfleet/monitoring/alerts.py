"""The alert rules: the original's seven, corrected, and seven on nixfleet's own metrics.

Corrections to the original: CPU from `rate` by host (it used `irate` by instance), disk usage
without pseudo filesystems, the Nix store's size from the NixOS exporter (it read the size of a
/nix/store *filesystem*, which a NixOS host does not have), HostDown only for the node exporter
(every job's `up` counted as a host), network traffic in both directions and not on loopback.
New: ExporterDown, ExporterSourceFailing, RebootRequired, HostNotVerified, RebootPending,
GpuTemperatureHigh and SystemdUnitsFailed (the systemd exporter's count, also where the node
exporter's systemd collector is missing).
Every alert has `severity` (critical, warning, info: Alertmanager routes on it) and `service`
(Alertmanager groups on it) labels, and a summary naming the host.

nix/monitoring/alerts.test.yml holds a `promtool test rules` case for every alert here, both
firing and quiet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from nixfleet.monitoring import metrics as m
from nixfleet.monitoring.prometheus import EXPORTER_JOBS
from nixfleet.monitoring.promql import GIB, MIB, eq, ne, re_match, re_not, selector

Severity = Literal["critical", "warning", "info"]

# Filesystems that are not disks: their "usage" says nothing about free space.
PSEUDO_FILESYSTEMS = "tmpfs|ramfs|devtmpfs|overlay|squashfs|nsfs|fuse\\..*"

CPU_PERCENT = 80
MEMORY_PERCENT = 90
DISK_PERCENT = 85
NIX_STORE_GIB = 50
NETWORK_MIB_PER_SECOND = 100
GPU_CELSIUS = 85


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    duration: str  # Prometheus's `for`
    severity: Severity
    service: str
    summary: str

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.duration,
            "labels": {"severity": self.severity, "service": self.service},
            "annotations": {"summary": self.summary},
        }


def _usage_percent(available: str, total: str) -> str:
    return f"100 * (1 - {available} / {total})"


_disk = re_not("fstype", PSEUDO_FILESYSTEMS)
_disk_available = selector(m.NODE_FILESYSTEM_AVAILABLE, _disk)
_disk_size = selector(m.NODE_FILESYSTEM_SIZE, _disk)
_network = (ne("device", "lo"),)

GROUPS: dict[str, tuple[Alert, ...]] = {
    "hosts": (
        Alert("HighCPUUsage",
              f"100 * (1 - avg by (host) (rate({selector(m.NODE_CPU_SECONDS, eq('mode', 'idle'))}"
              f"[5m]))) > {CPU_PERCENT}",
              "5m", "warning", "system",
              f"CPU usage above {CPU_PERCENT}% on {{{{ $labels.host }}}}"),
        Alert("HighMemoryUsage",
              f"{_usage_percent(m.NODE_MEMORY_AVAILABLE, m.NODE_MEMORY_TOTAL)} > {MEMORY_PERCENT}",
              "5m", "warning", "system",
              f"Memory usage above {MEMORY_PERCENT}% on {{{{ $labels.host }}}}"),
        Alert("LowDiskSpace",
              f"{_usage_percent(_disk_available, _disk_size)} > {DISK_PERCENT}",
              "10m", "warning", "system",
              f"{{{{ $labels.mountpoint }}}} above {DISK_PERCENT}% full on {{{{ $labels.host }}}}"),
        Alert("HostDown",
              f"{selector(m.UP, eq('job', 'node-exporter'))} == 0",
              "1m", "critical", "system",
              "{{ $labels.host }} is down (its node exporter does not answer)"),
        Alert("HighNetworkTraffic",
              f"rate({selector(m.NODE_NETWORK_RECEIVE, *_network)}[5m]) > "
              f"{NETWORK_MIB_PER_SECOND} * {MIB} or "
              f"rate({selector(m.NODE_NETWORK_TRANSMIT, *_network)}[5m]) > "
              f"{NETWORK_MIB_PER_SECOND} * {MIB}",
              "10m", "warning", "network",
              f"Traffic on {{{{ $labels.device }}}} above {NETWORK_MIB_PER_SECOND} MiB/s on "
              "{{ $labels.host }}"),
    ),
    "nixos": (
        Alert("NixStoreSize",
              f"{m.NIXOS_STORE_SIZE} > {NIX_STORE_GIB} * {GIB}",
              "1h", "info", "nix",
              f"Nix store above {NIX_STORE_GIB} GiB on {{{{ $labels.host }}}}: collect garbage"),
        Alert("RebootRequired",
              f"{m.NIXOS_REBOOT_REQUIRED} == 1",
              "1h", "info", "nix",
              "{{ $labels.host }} runs a kernel, initrd or kernel modules other than its "
              "current generation's: reboot it"),
        # nixfleet's own: a system no verification checked (a deployer killed after the
        # switch), and a switch not booted into for a day.
        Alert("HostNotVerified",
              f"{m.NIXOS_SYSTEM_VERIFIED} == 0",
              "1h", "warning", "nix",
              "{{ $labels.host }} runs a system that no nixfleet verification checked "
              "(or whose verification failed): nixfleet verify"),
        Alert("RebootPending",
              f"{m.NIXOS_BOOTED_DIFFERS} == 1",
              "1d", "warning", "nix",
              "{{ $labels.host }} has run a system other than the booted one for more than a "
              "day: reboot it"),
    ),
    "systemd": (
        # The original's, per unit, from the node exporter's systemd collector.
        Alert("SystemdServiceFailed",
              f"{selector(m.NODE_SYSTEMD_UNIT_STATE, eq('state', 'failed'))} == 1",
              "0m", "warning", "systemd",
              "{{ $labels.name }} failed on {{ $labels.host }}"),
        # nixfleet's systemd exporter: also where the node exporter's systemd collector is
        # missing; Alertmanager silences it while SystemdServiceFailed names the units.
        Alert("SystemdUnitsFailed",
              f"{m.SYSTEMD_UNITS_FAILED} > 0",
              "5m", "warning", "systemd",
              "{{ $value }} systemd units failed on {{ $labels.host }}"),
    ),
    "gpu": (
        Alert("GpuTemperatureHigh",
              f"{m.GPU_TEMPERATURE} > {GPU_CELSIUS}",
              "5m", "warning", "gpu",
              f"GPU {{{{ $labels.gpu }}}} ({{{{ $labels.model }}}}) above {GPU_CELSIUS} °C on "
              "{{ $labels.host }}"),
    ),
    "exporters": (
        # 2m: eight missed scrapes at 15 s, longer than a restart, short enough to act on.
        Alert("ExporterDown",
              f"{selector(m.UP, re_match('job', '|'.join(EXPORTER_JOBS)))} == 0",
              "2m", "warning", "monitoring",
              "{{ $labels.job }} on {{ $labels.host }} does not answer"),
        Alert("ExporterSourceFailing",
              f"{m.NIXOS_SOURCE_ERROR} > 0 or {m.SYSTEMD_SOURCE_ERROR} > 0",
              "15m", "warning", "monitoring",
              "{{ $labels.job }} on {{ $labels.host }} cannot read {{ $labels.source }}"),
    ),
}


def alert_names() -> list[str]:
    return [alert.name for alerts in GROUPS.values() for alert in alerts]


def rules_config(durations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The rule file (alerts.yml) as data; `durations` replaces alerts' `for` by name (the
    monitoring server's alertRules data)."""
    durations = durations or {}
    return {"groups": [{"name": name, "rules": [
        replace(a, duration=durations.get(a.name, a.duration)).rule() for a in alerts]}
        for name, alerts in GROUPS.items()]}

"""The metric names the alert rules and dashboards query, in one place.

The nixos_* and systemd_* names must match nixfleet/exporters (the NixOS exporter on
ports.nixosExporter, the systemd exporter on ports.systemdExporter; the nixos_* and systemd_*
names are the original exporters'); the node_* names are the real node_exporter's. A rule or a
panel never spells a metric name itself, so a rename is one line here.
"""

from __future__ import annotations

# node_exporter (its cpu, meminfo, filesystem, netdev and systemd collectors).
NODE_CPU_SECONDS = "node_cpu_seconds_total"  # {cpu, mode}
NODE_MEMORY_AVAILABLE = "node_memory_MemAvailable_bytes"
NODE_MEMORY_TOTAL = "node_memory_MemTotal_bytes"
NODE_FILESYSTEM_AVAILABLE = "node_filesystem_avail_bytes"  # {device, fstype, mountpoint}
NODE_FILESYSTEM_SIZE = "node_filesystem_size_bytes"
NODE_NETWORK_RECEIVE = "node_network_receive_bytes_total"  # {device}
NODE_NETWORK_TRANSMIT = "node_network_transmit_bytes_total"
NODE_SYSTEMD_UNIT_STATE = "node_systemd_unit_state"  # {name, state, type}: 1 for the current state

# The NixOS exporter (must match nixfleet/exporters).
NIXOS_STORE_SIZE = "nixos_store_size_bytes"
NIXOS_GENERATIONS = "nixos_generations_total"  # the system profile's generations
NIXOS_GENERATION_CURRENT = "nixos_generation_current"
NIXOS_LAST_REBUILD = "nixos_last_rebuild_timestamp"  # seconds since the epoch
NIXOS_REBOOT_REQUIRED = "nixos_reboot_required"  # 1: booted kernel, initrd or modules differ
NIXOS_SOURCE_ERROR = "nixos_exporter_source_error"  # {source}: 1 while a source cannot be read
NIXOS_BOOTED_DIFFERS = "nixos_booted_system_differs"  # 1: a switch since boot (not booted yet)
NIXOS_SYSTEM_VERIFIED = "nixos_system_verified"  # 1: the running system passed verification
NIXOS_LAST_VERIFICATION = "nixos_last_verification_timestamp"  # seconds since the epoch
NIXOS_LAST_DEPLOY = "nixos_last_deploy_timestamp"  # seconds since the epoch
NIXOS_LAST_DEPLOY_SUCCESS = "nixos_last_deploy_success"  # 1: changed, unchanged or built
NIXOS_LAST_DEPLOY_INFO = "nixos_last_deploy_info"  # {deploy_id, result}: 1

# The systemd exporter (must match nixfleet/exporters).
SYSTEMD_UNITS_FAILED = "systemd_units_failed"
SYSTEMD_SYSTEM_STATE = "systemd_system_state"  # running=1, degraded=2, starting=3, stopping=4
SYSTEMD_SOURCE_ERROR = "systemd_exporter_source_error"  # {source}

# GPUs, every class (must match nixfleet/exporters); labels gpu, model, slot.
GPU_UTILIZATION = "nixfleet_gpu_utilization_ratio"  # 0..1
GPU_MEMORY_USED = "nixfleet_gpu_memory_used_bytes"
GPU_MEMORY_TOTAL = "nixfleet_gpu_memory_total_bytes"
GPU_TEMPERATURE = "nixfleet_gpu_temperature_celsius"
GPU_POWER = "nixfleet_gpu_power_watts"

# Prometheus itself: 1 when the last scrape of a target succeeded.
UP = "up"

# systemd_system_state's values.
SYSTEM_STATE_RUNNING = 1
SYSTEM_STATE_DEGRADED = 2

"""Prometheus exporters that run on every monitored host, and the one list of their metrics.

Both read each source in a background thread on an interval, with the facts' own commands and
parsers (nixfleet.facts.parsers), so a scrape only formats what was read and never walks the
store. A source that fails has its metrics absent and its ``*_exporter_source_error`` at 1;
``/metrics`` always answers 200. They import neither pyinfra nor the rest of nixfleet: the
standard library and prometheus_client are enough.

``nixfleet-nixos-exporter`` (nixos.py, port 9101; ``python -m nixfleet.exporters.nixos``)::

    nixos_generations_total              the system profile's generations
    nixos_generation_current             its current generation number
    nixos_last_rebuild_timestamp         when the newest generation was created (Unix time)
    nixos_reboot_required                1: running kernel, initrd or modules differ from booted
    nixos_system_info{nixos_version, configuration_revision}               1
    nixos_deployed_flake_info{flake_hash, toplevel}  1: the last nixfleet deploy finished here
    nixos_booted_system_differs          1: the running system is not the booted one
    nixos_last_deploy_timestamp          when the last nixfleet deploy started (its journal)
    nixos_last_deploy_success            1: it ended changed, unchanged or built; else 0
    nixos_last_deploy_info{deploy_id, result}                               1
    nixos_system_verified                1: nixfleet's last verification checked the running
                                         system and passed (/var/lib/nixfleet/verified); else 0
    nixos_last_verification_timestamp    when that verification ran
    nixos_store_size_bytes               NAR size of all valid store paths (Nix's database)
    nixos_store_paths              valid store paths
    nixos_store_derivations_total        of which derivations (.drv)
    nixos_gc_roots_total                 GC roots held by links (not by running processes)
    nixos_nix_daemon_active              1: nix-daemon.service or .socket is active
    nixos_channels_total                 root's channels
    nixos_boot_entries_total             systemd-boot entries, else GRUB menu entries
    nixfleet_gpu_info{slot, model, vendor, driver}   1 per display-class PCI device (lspci)
    nixfleet_gpu_utilization_ratio{gpu, model, slot}   0..1 (nvidia-smi, rocm-smi)
    nixfleet_gpu_memory_used_bytes{gpu, model, slot}
    nixfleet_gpu_memory_total_bytes{gpu, model, slot}
    nixfleet_gpu_temperature_celsius{gpu, model, slot}
    nixfleet_gpu_power_watts{gpu, model, slot}
    nixos_exporter_source_error{source}  1 while the source cannot be read, else 0
    nixos_exporter_source_duration_seconds{source}, ..._source_last_read_timestamp_seconds{source}

Sources: generations, system, deploy, last_deploy, verification, nix_daemon, channels, boot
(every ``--interval``, 30 s; system and verification at most every 5 s),
store, gc_roots (every ``--store-interval``, 300 s), lspci, nvidia-smi, rocm-smi (gpu.py).

``nixfleet-systemd-exporter`` (systemd.py, port 9102; ``python -m nixfleet.exporters.systemd``)::

    systemd_units_total                  units systemd has loaded
    systemd_units_active                 of which active
    systemd_units_failed                 of which failed
    systemd_unit_state{unit, state}      per service, state = its ActiveState;
                                         active=1, failed=2, inactive=0, other=3
    systemd_system_state                 running=1, degraded=2, starting=3, stopping=4, other=0
    systemd_unit_restarts_total{unit}    automatic restarts per loaded service (NRestarts)
    systemd_exporter_source_error{source}  and the same duration and timestamp gauges

Sources: units, system_state, restarts (every ``--interval``, 15 s).

Both also export prometheus_client's ``process_*`` metrics (memory, CPU, open files).
"""

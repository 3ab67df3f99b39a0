"""Every host: reachable as root, running, on the generation its last deploy built."""

from __future__ import annotations

import time

from nixfleet.exporters.nixos import SYSTEM_INTERVAL
from nixfleet.facts.parsers.nix import SYSTEM_PROFILE
from nixfleet.monitoring import metrics as m
from nixfleet.verify.expect import exporters
from tests.fleet.support import fetch, samples

LAST_DEPLOY = "/var/lib/nixfleet/last-deploy"  # "<flake hash> <toplevel>", written by deploys
BOOT_PARTS = ("kernel", "initrd", "kernel-modules")


def test_commands_run_as_root_over_ssh(host):
    uid = host.check_output("id -u")
    assert uid == "0", f"commands run as uid {uid}, not root (sudo -n failed?)"


def test_the_system_is_running_with_no_failed_units(host):
    answer = host.run("systemctl is-system-running; "
                      "systemctl list-units --failed --plain --no-legend").stdout.splitlines()
    names = [line.split()[0] for line in answer[1:] if line.strip()]
    assert not names, f"failed units: {', '.join(names)}"
    assert answer[:1] == ["running"], f"system state is {answer[0] if answer else 'unknown'}"


def test_it_runs_the_generation_its_last_deploy_built(host, note):
    # One round trip: the record (an empty line without one), what runs, the boot default.
    answer = host.run(f"head -n1 {LAST_DEPLOY} 2>/dev/null || echo; "
                      f"readlink -f /run/current-system {SYSTEM_PROFILE}").stdout
    record, current, profile = ([*answer.split("\n"), "", "", ""])[:3]
    assert record.strip(), f"no {LAST_DEPLOY}: no deploy of nixfleet has finished here"
    built = record.split()[-1]
    if current == built:
        return
    assert profile == built, f"runs {current}, but the last deploy built {built}"
    note("the last deploy is the boot default: reboot to run it")


def test_the_booted_system_matches_or_a_reboot_is_required(host, spec, config_root, note):
    def parts(system: str) -> str:
        return host.run(" && ".join(f"readlink -f {system}/{p}" for p in BOOT_PARTS)).stdout

    if parts("/run/booted-system") == parts("/run/current-system"):
        return
    note("reboot required")
    nixos = [e for e in exporters(spec, config_root) if e.job == "nixos-exporter"]
    if not nixos:
        return
    # The exporter must say so too (RebootRequired reads it); it reads the system every
    # SYSTEM_INTERVAL seconds, so right after a switch it may take that long.
    url = f"http://localhost:{nixos[0].port}/metrics"
    deadline = time.monotonic() + SYSTEM_INTERVAL * 2
    while True:
        value = [s.value for s in samples(fetch(host, url), url).get(m.NIXOS_REBOOT_REQUIRED, [])]
        if value == [1.0] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert value == [1.0], ("the booted kernel, initrd or modules differ from the current "
                            f"system's, but the NixOS exporter reports reboot_required {value}")

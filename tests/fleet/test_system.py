"""Every host: reachable as root, running, on the generation its last deploy built."""

from __future__ import annotations

import time

from nixfleet.exporters.nixos import SYSTEM_INTERVAL
from nixfleet.monitoring import metrics as m
from nixfleet.verify.expect import exporters
from tests.fleet.support import (
    GENERATION,
    LAST_DEPLOY,
    SYSTEM_STATE,
    boot_parts,
    fetch,
    metrics_url,
    samples,
)


def test_commands_run_as_root_over_ssh(reads):
    uid = reads.check_output("id -u")
    assert uid == "0", f"commands run as uid {uid}, not root (sudo -n failed?)"


def test_the_system_is_running_with_no_failed_units(reads):
    answer = reads.run(SYSTEM_STATE).stdout.splitlines()
    names = [line.split()[0] for line in answer[1:] if line.strip()]
    assert not names, f"failed units: {', '.join(names)}"
    assert answer[:1] == ["running"], f"system state is {answer[0] if answer else 'unknown'}"


def test_it_runs_the_generation_its_last_deploy_built(reads, note):
    record, current, profile = ([*reads.run(GENERATION).stdout.split("\n"), "", "", ""])[:3]
    assert record.strip(), f"no {LAST_DEPLOY}: no deploy of nixfleet has finished here"
    built = record.split()[-1]
    if current == built:
        return
    assert profile == built, f"runs {current}, but the last deploy built {built}"
    note("the last deploy is the boot default: reboot to run it")


def test_the_booted_system_matches_or_a_reboot_is_required(host, reads, spec, config_root,
                                                           note):
    if (reads.run(boot_parts("/run/booted-system")).stdout
            == reads.run(boot_parts("/run/current-system")).stdout):
        return
    note("reboot required")
    nixos = [e for e in exporters(spec, config_root) if e.job == "nixos-exporter"]
    if not nixos:
        return
    # The exporter must say so too (RebootRequired reads it); it reads the system every
    # SYSTEM_INTERVAL seconds, so right after a switch it may take that long: asked live.
    url = metrics_url(nixos[0].port)
    deadline = time.monotonic() + SYSTEM_INTERVAL * 2
    while True:
        value = [s.value for s in samples(fetch(host, url), url).get(m.NIXOS_REBOOT_REQUIRED, [])]
        if value == [1.0] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert value == [1.0], ("the booted kernel, initrd or modules differ from the current "
                            f"system's, but the NixOS exporter reports reboot_required {value}")

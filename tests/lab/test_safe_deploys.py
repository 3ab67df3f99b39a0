"""Safe deploys on the lab: real faults injected into real lab hosts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest

from tests.lab.conftest import on, reset_after_the_module, wait_until
from tests.lab.test_deploys import deploy, generation

pytestmark = pytest.mark.usefixtures("lab")
ALL_PY_DEPLOY = re.compile(r"deploy = \{.*?\n\}", re.S)


# The hosts these tests change, back to first boot once they are done, in one reset, not one
# after each test: each test starts from the plain configuration, which it deploys first (undoing
# the test before: a rolled-back, kept or rebooted generation of dex5550). Eight resets of
# dex5550 and one each of p620 and p510 took about 80 s.
reset_hosts_after_the_module = reset_after_the_module("dex5550", "p620", "p510")


@pytest.fixture
def repo(tmp_path, request, reset_hosts_after_the_module):
    """A copy of the configuration (lab flake included) to break; the hosts are reset after
    the module (`reset_hosts_after_the_module`, which a module importing this names too)."""
    shutil.copy(request.config.rootpath / "inventory.py", tmp_path / "inventory.py")
    shutil.copytree(request.config.rootpath / "group_data", tmp_path / "group_data")
    shutil.copytree(request.config.rootpath / "secrets", tmp_path / "secrets")
    shutil.copytree(request.config.rootpath / "nix" / "lab", tmp_path / "nix" / "lab")
    return tmp_path


def set_deploy(repo, **settings) -> None:
    all_py = repo / "group_data" / "all.py"
    base = {"lockTtl": 3600, "rollback": True, "confirmTimeout": 30, "healthTimeout": 10,
            "reboot": "never", "buildOn": "target", "checks": []}
    all_py.write_text(ALL_PY_DEPLOY.sub(f"deploy = {json.dumps({**base, **settings})}"
                                        .replace("true", "True").replace("false", "False"),
                                        all_py.read_text()))


def watchdog_unit(result: subprocess.CompletedProcess) -> str:
    """The deploy's watchdog as deploy.sh names it: nixfleet-confirm-ID, where ID names the
    deploy's log directory (.deploy-logs/ID/summary.json)."""
    found = re.search(r"summary: \S*/([^/\s]+)/summary\.json", result.stdout)
    assert found, result.stdout
    return f"nixfleet-confirm-{found[1]}"


def watchdog_journal(host: str, unit: str) -> str:
    """What systemd logged about a watchdog: its timer and its rollback service."""
    return on(host, f"journalctl --no-pager --output=cat -u {unit}.timer -u {unit}.service"
              ).stdout


def add_fault(repo, host: str, units: dict) -> None:
    faults = repo / "nix" / "lab" / "faults"
    faults.mkdir(exist_ok=True)
    (faults / f"{host}.json").write_text(json.dumps(units))


def deploy_the_plain_configuration(repo, *hosts: str) -> None:
    """A test's starting point on hosts that the tests before it changed: the plain
    configuration deployed, and no generation after the one each host then runs, as after a
    reset. (A rollback leaves the generation it left: the next switch would skip its number,
    and a switch back to its system would take it again.)"""
    result, _ = deploy(repo, "switch", *(arg for host in hosts for arg in ("--limit", host)))
    assert result.returncode == 0, result.stdout + result.stderr
    for host in hosts:
        on(host, "p=/nix/var/nix/profiles/system; n=$(readlink $p); n=${n#system-}; "
                 "n=${n%-link}; later=$(for link in $p-*-link; do m=${link#$p-}; "
                 "m=${m%-link}; [ \"$m\" -gt \"$n\" ] && echo \"$m\"; done); "
                 "[ -z \"$later\" ] || nix-env -p $p --delete-generations $later")


def test_a_unit_that_fails_to_start_rolls_the_host_back(repo):
    deploy(repo, "switch")
    before = {h: generation(h) for h in ("p620", "dex5550")}
    add_fault(repo, "dex5550", {"broken": {"execStart": "/bin/false", "type": "oneshot"}})
    result, summary = deploy(repo, "switch")
    assert result.returncode == 1
    row = summary["dex5550"]
    assert row["result"] == "rolled-back"
    assert "switch-to-configuration switch exited 4 (failed units: broken.service)" in row["reason"]
    assert generation("dex5550") == before["dex5550"]
    assert on("dex5550", "systemctl is-failed broken", check=False).stdout.strip() != "failed"
    assert summary["p620"]["result"] in ("changed", "unchanged")  # the others deployed
    assert "rolled-back" in result.stdout


def test_a_generation_that_stops_sshd_reverts_by_itself(repo):
    deploy_the_plain_configuration(repo, "dex5550")
    before = generation("dex5550")
    set_deploy(repo, confirmTimeout=8)
    add_fault(repo, "dex5550", {"break-ssh": {
        # When sshd went (the lab's hosts share this machine's clock): the deployer's wait is
        # measured from there, not from pyinfra's start, which a busy machine stretches. (%%:
        # a % in a unit's command line.)
        "execStart": ("/bin/sh -c 'date +%%s.%%N > /run/ssh-stopped-at; "
                      "systemctl stop ssh.socket ssh.service; exec sleep infinity'"),
        # Switching away from this generation stops the unit, which brings sshd back, as
        # switching back to a NixOS generation restores its sshd.
        "serviceExtra": ["ExecStopPost=/bin/systemctl start ssh.service"]}})
    result, summary = deploy(repo, "switch", "--limit", "dex5550")
    elapsed = time.time() - float(on("dex5550", "cat /run/ssh-stopped-at").stdout)
    assert result.returncode == 1
    row = summary["dex5550"]
    assert row["result"] == "rolled-back"
    assert row["reason"].startswith("no confirmation over a fresh SSH connection within 8s: "
                                    f"the host rolled back by itself to generation {before}")
    assert generation("dex5550") == before
    assert elapsed < 8 + 10  # confirm_timeout + 10 s after sshd stopped


def test_a_failing_http_check_rolls_back(repo):
    deploy_the_plain_configuration(repo, "dex5550")
    before = generation("dex5550")
    set_deploy(repo, checks=[{"name": "web", "http": "http://{address}:8080/", "timeout": 2,
                              "period": 1}])
    add_fault(repo, "dex5550", {"web-demo": {"execStart": "/bin/sleep infinity"}})
    result, summary = deploy(repo, "switch", "--limit", "dex5550")
    assert result.returncode == 1
    row = summary["dex5550"]
    assert row["result"] == "rolled-back"
    assert re.match(r"health check failed: check web: http://10\.199\.\d+\.14:8080/ gave "
                    r"ConnectError: .*, expected HTTP 200; rolled back \(the old generation "
                    r"passes the gate again\)", row["reason"])
    assert generation("dex5550") == before
    assert on("dex5550", "systemctl is-active web-demo", check=False).stdout.strip() != "active"


def test_a_failing_command_check_rolls_back_and_no_rollback_keeps_it(repo):
    deploy_the_plain_configuration(repo, "dex5550")
    before = generation("dex5550")
    set_deploy(repo, healthTimeout=3, checks=[{"name": "marker", "command": "test -e /etc/ok"}])
    # The check passes before the deploy; the new generation removes what it looks for. (A
    # check that fails before and after does not judge the deploy: test_real_failures.py.)
    on("dex5550", "touch /etc/ok")
    add_fault(repo, "dex5550", {"web-demo": {
        "execStart": "/bin/sh -c 'rm -f /etc/ok; exec sleep infinity'"}})
    result, summary = deploy(repo, "switch", "--limit", "dex5550")
    assert summary["dex5550"]["result"] == "rolled-back"
    assert summary["dex5550"]["reason"] == "health check failed: check marker: command failed"
    assert generation("dex5550") == before
    on("dex5550", "touch /etc/ok")
    result, summary = deploy(repo, "switch", "--limit", "dex5550", "--data", "no_rollback=true")
    assert result.returncode == 1
    assert summary["dex5550"]["result"] == "failed"
    assert generation("dex5550") == before + 1  # kept, as asked


def test_a_healthy_switch_is_confirmed(repo):
    set_deploy(repo, confirmTimeout=10, checks=[
        {"name": "node-exporter", "http": "http://{address}:9100/metrics", "timeout": 10}])
    result, summary = deploy(repo, "switch", "--limit", "p620")
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary["p620"]["result"] in ("changed", "unchanged")
    add_fault(repo, "p620", {"web-demo": {"execStart": "/bin/sleep infinity"}})
    before = generation("p620")
    result, summary = deploy(repo, "switch", "--limit", "p620")
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary["p620"]["result"] == "changed"
    assert "confirmed over a fresh SSH connection" in summary["p620"]["reason"]
    # The watchdog is over once its timer is deactivated: stopped by the confirmation, or
    # fired at 10 s. It was stopped if its rollback service never ran.
    unit = watchdog_unit(result)
    wait_until(lambda: f"{unit}.timer: Deactivated successfully"
               in watchdog_journal("p620", unit), 30, f"{unit}.timer to be deactivated")
    journal = watchdog_journal("p620", unit)
    assert f"Started {unit}.timer" in journal, journal  # armed under this name
    assert f"Starting {unit}.service" not in journal, journal  # its rollback never ran
    assert generation("p620") == before + 1


def test_reboot_comes_back_on_the_new_generation_and_passes_the_gate(repo):
    deploy_the_plain_configuration(repo, "dex5550")
    before = generation("dex5550")
    boot_id = on("dex5550", "cat /proc/sys/kernel/random/boot_id").stdout
    add_fault(repo, "dex5550", {"web-demo": {"execStart": "/bin/sleep infinity"}})
    result, summary = deploy(repo, "switch", "--limit", "dex5550", "--data", "reboot=true")
    assert result.returncode == 0, result.stdout + result.stderr
    row = summary["dex5550"]
    assert row["action"] == "boot" and row["result"] == "changed"
    assert "rebooted into the new generation, healthy" in row["reason"]
    assert on("dex5550", "cat /proc/sys/kernel/random/boot_id").stdout != boot_id
    assert generation("dex5550") == before + 1
    assert on("dex5550", "readlink -f /run/current-system").stdout == \
        on("dex5550", "readlink -f /nix/var/nix/profiles/system").stdout
    assert on("dex5550", "systemctl is-active web-demo").stdout.strip() == "active"


def test_build_on_the_deployer_and_copy_the_closure(repo):
    deploy_the_plain_configuration(repo, "dex5550")
    before = generation("dex5550")
    set_deploy(repo, buildOn="local")
    # A system no test before this one built on dex5550 (theirs have web-demo).
    add_fault(repo, "dex5550", {"built-elsewhere": {"execStart": "/bin/sleep infinity"}})
    on("dex5550", "rm -f /var/lib/nixfleet/build.log")
    result, summary = deploy(repo, "switch", "--limit", "dex5550")
    assert result.returncode == 0, result.stdout + result.stderr
    row = summary["dex5550"]
    assert row["result"] == "changed" and generation("dex5550") == before + 1
    toplevel = on("dex5550", "readlink -f /run/current-system").stdout.strip()
    assert toplevel == row["toplevel"]
    # Built here (the deployer's store has it), not on the host (no build log there).
    assert subprocess.run(["nix-store", "--check-validity", toplevel]).returncode == 0
    assert on("dex5550", "test -e /var/lib/nixfleet/build.log", check=False).returncode != 0


def test_reboot_auto_reboots_only_when_the_kernel_side_changed(repo):
    deploy_the_plain_configuration(repo, "p510", "dex5550")
    boot_ids = {h: on(h, "cat /proc/sys/kernel/random/boot_id").stdout for h in ("p510", "dex5550")}
    set_deploy(repo, reboot="auto")
    # p510's Quadro P2000 (Pascal) moves from the 580 to the 470 driver, which also drives it.
    inventory = repo / "inventory.py"
    assert '"nvidiaPackage": "legacy_580"' in inventory.read_text()
    inventory.write_text(inventory.read_text().replace('"nvidiaPackage": "legacy_580"',
                                                       '"nvidiaPackage": "legacy_470"'))
    add_fault(repo, "dex5550", {"web-demo": {"execStart": "/bin/sleep infinity"}})
    result, summary = deploy(repo, "switch", "--limit", "p510", "--limit", "dex5550")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rebooted into the new generation, healthy" in summary["p510"]["reason"]
    assert "rebooted" not in summary["dex5550"]["reason"]
    assert on("p510", "cat /proc/sys/kernel/random/boot_id").stdout != boot_ids["p510"]
    assert on("dex5550", "cat /proc/sys/kernel/random/boot_id").stdout == boot_ids["dex5550"]
    booted = on("p510", "readlink -f /run/booted-system/kernel-modules").stdout
    assert "nvidia-legacy_470" in booted
    assert booted == on("p510", "readlink -f /run/current-system/kernel-modules").stdout

"""What broke the real fleet, reproduced on the lab: a unit that was failing before a switch, a
check that never passes, a rollback that hits a full boot partition, a switch that cuts the
deployer's connection, a deploy step killed on the host."""

from __future__ import annotations

import re
import subprocess
import time
import uuid

import pytest

from tests.lab.conftest import nixfleet, on, reset_after_the_module, wait_until
from tests.lab.test_deploys import deploy, deploy_argv, generation, lab_env, summary_of
from tests.lab.test_safe_deploys import add_fault, set_deploy
from tests.lab.test_safe_deploys import repo as repo  # the fixture, by its name

pytestmark = pytest.mark.usefixtures("lab")
# dex5550 back to first boot once these tests are done (repo's fixture of that name), not after
# each: those that change it start by deploying the plain configuration. The one that leaves
# failed units on it on purpose resets it itself; razer's full boot partition too.
reset_hosts_after_the_module = reset_after_the_module("dex5550")
THERMALD = {"thermald": {"execStart": "/bin/false", "type": "oneshot"}}
WARNING = ("unit thermald.service was failing before this deploy and still is: it does not "
           "judge this deploy")


@pytest.fixture
def reset_dex5550_after():
    """For a test that leaves units failed on dex5550 (they stay failed, and every later
    switch there would count them)."""
    yield
    nixfleet("lab", "reset", "dex5550")


def test_a_unit_failing_before_the_switch_is_a_warning_unless_strict(repo, reset_dex5550_after):
    # thermald enabled where it cannot run: it fails on every start. Deployed once, kept.
    add_fault(repo, "dex5550", THERMALD)
    result, summary = deploy(repo, "switch", "--limit", "dex5550", "--data", "no_rollback=true")
    assert summary["dex5550"]["result"] == "failed", result.stdout + result.stderr
    before = generation("dex5550")
    # A unit of no generation failed too (the stand-in, as NixOS's, counts every failed unit).
    on("dex5550", "systemd-run --unit=stray-job /bin/false", check=False)
    # Any unrelated change: the real switch-to-configuration exits 4 for thermald every time.
    add_fault(repo, "dex5550", {**THERMALD, "web-demo": {"execStart": "/bin/sleep infinity"}})
    result, summary = deploy(repo, "switch", "--limit", "dex5550")
    assert result.returncode == 0, result.stdout + result.stderr
    row = summary["dex5550"]
    assert row["result"] == "changed"
    assert row["warnings"] == [WARNING.replace("thermald", "stray-job"), WARNING]
    # What the stand-in said, kept by the deploy step (/var/lib/nixfleet/activation.log).
    assert "warning: the following units failed: stray-job.service, thermald.service" in \
        on("dex5550", "cat /var/lib/nixfleet/activation.log").stdout
    assert f"dex5550: warning: {WARNING}" in result.stdout
    assert generation("dex5550") == before + 1
    # deploy.strictUnits: any failed unit fails the switch, as before.
    set_deploy(repo, strictUnits=True)
    add_fault(repo, "dex5550", {**THERMALD, "web-demo-2": {"execStart": "/bin/sleep infinity"}})
    result, summary = deploy(repo, "switch", "--limit", "dex5550")
    assert result.returncode == 1
    assert summary["dex5550"]["result"] == "rolled-back"
    assert summary["dex5550"]["reason"] == ("switch-to-configuration switch exited 4 (failed "
                                            "units: stray-job.service, thermald.service)")
    assert generation("dex5550") == before + 1


def test_a_check_failing_before_and_after_does_not_roll_back(repo):
    deploy(repo, "switch", "--limit", "dex5550")
    before = generation("dex5550")
    set_deploy(repo, healthTimeout=3, checks=[
        {"name": "backup-disk", "command": "test -e /mnt/backup/mounted"}])
    add_fault(repo, "dex5550", {"web-demo": {"execStart": "/bin/sleep infinity"}})
    result, summary = deploy(repo, "switch", "--limit", "dex5550")
    assert result.returncode == 0, result.stdout + result.stderr
    row = summary["dex5550"]
    assert row["result"] == "changed"
    assert row["warnings"] == ["check backup-disk was failing before this deploy and still is: "
                               "it does not judge this deploy"]
    assert generation("dex5550") == before + 1


def test_a_rollback_that_hits_a_full_boot_partition_is_rollback_failed(repo):
    deploy(repo, "switch", "--limit", "razer")
    before = generation("razer")
    # The new generation fills the boot partition and fails: its rollback must write the boot
    # loader's default back, and cannot.
    add_fault(repo, "razer", {"fill-boot": {"type": "oneshot", "execStart": (
        "/bin/sh -c 'dd if=/dev/zero of=/boot/filler bs=64k; "
        "dd if=/dev/zero of=/boot/filler-small bs=512; exit 1'")}})
    try:
        result, summary = deploy(repo, "switch", "--limit", "razer")
        assert result.returncode == 2, result.stdout + result.stderr
        row = summary["razer"]
        assert row["result"] == "rollback-failed"
        assert row["reason"].startswith(
            "switch-to-configuration switch exited 4 (failed units: fill-boot.service); the "
            "rollback failed too: switch-to-configuration switch exited 1")
        assert re.search(r"; it runs the new system; it boots generation \d+ next$",
                         row["reason"]), row["reason"]
        assert f"razer: ROLLBACK FAILED: {row['reason']}" in result.stdout
        assert generation("razer") == before  # the profile went back; the boot loader did not
    finally:
        on("razer", "rm -f /boot/filler /boot/filler-small")
        nixfleet("lab", "reset", "razer")


def test_a_switch_that_cuts_the_connection_reports_its_real_result(repo):
    deploy(repo, "switch", "--limit", "dex5550")
    before = generation("dex5550")
    # As a network or VPN restart does to the deployer's connection: every SSH session on the
    # host ends mid-activation (sshd itself keeps running, so new connections are taken).
    add_fault(repo, "dex5550", {"cut-ssh": {"execStart": (
        "/bin/sh -c 'pkill -KILL -f \"^sshd: root\"; exec sleep infinity'")}})
    result, summary = deploy(repo, "switch", "--limit", "dex5550")
    assert result.returncode == 0, result.stdout + result.stderr
    row = summary["dex5550"]
    assert row["result"] == "changed", row
    assert row["reason"] == "switch done; confirmed over a fresh SSH connection"
    assert generation("dex5550") == before + 1
    assert on("dex5550", "systemctl is-active cut-ssh").stdout.strip() == "active"


def test_a_killed_deploy_step_returns_within_seconds_and_the_next_deploy_works(tmp_path):
    host = "razer"
    from tests.lab.test_deploys import copy_of_the_configuration

    repo_ = copy_of_the_configuration(tmp_path)
    release = f"/tmp/nixfleet-release-{uuid.uuid4().hex}"  # a build this host never made
    (repo_ / "nix" / "lab" / "faults" / f"{host}.build-gate").write_text(f"{release}\n")
    running = subprocess.Popen(deploy_argv("switch", "--limit", host), cwd=repo_,
                               env=lab_env(repo_), text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        wait_until(lambda: on(host, "pgrep -f build-toplevel.py", check=False).returncode == 0,
                   60, "the build to start")
        # The deploy step's own process (bash, the oldest with its command line; pyinfra's
        # sh -c runs it), as the OOM killer or an admin would. ([n]: not this shell itself.)
        on(host, "kill -KILL $(pgrep -o -f '^bash -c .*[n]ixfleet-deploy hostname=razer')")
        killed = time.monotonic()
        stdout, _ = running.communicate(timeout=30)
        assert time.monotonic() - killed < 10
        row = summary_of(stdout)[host]
        assert row["result"] == "failed"
        assert row["reason"] == f"the deploy step on {host} was killed after its flake step"
        assert on(host, "ls -A /run/nixfleet").stdout == ""  # no holder left behind
    finally:
        if running.poll() is None:
            running.kill()
            running.communicate()
        on(host, f"touch {release}")  # lets the orphaned build finish
    (repo_ / "nix" / "lab" / "faults" / f"{host}.build-gate").unlink()
    result, summary = deploy(repo_, "switch", "--limit", host)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary[host]["result"] in ("changed", "unchanged")

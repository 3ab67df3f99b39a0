"""`nixfleet status` on the lab (issue 23): after a verified switch every host is up to date
and verified (exit 0); a file edited in razer's flake directory is named (exit 1); a deployer
killed after the switch leaves its host not verified, and the next plain deploy verifies it;
a damaged record of the flake directory gives the right drift list; the NixOS exporter's
metrics of the last deploy and the verification change after a deploy and a verification."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.conftest import (
    HOSTS,
    ROOT,
    configuration_with_its_checks,
    on,
    reset_after_the_module,
    wait_until,
)
from tests.lab.test_deploys import deploy, deploy_argv, lab_env

pytestmark = pytest.mark.usefixtures("lab")


def status(repo: Path, *args: str) -> tuple[int, dict, str]:
    """`nixfleet status --json` and the table, from `repo`."""
    run = [sys.executable, "-m", "nixfleet", "status"]
    result = subprocess.run([*run, "--json", *args], cwd=repo, capture_output=True, text=True,
                            timeout=120, env=lab_env(repo))
    assert result.stdout.strip(), result.stderr
    table = subprocess.run([*run, *args], cwd=repo, capture_output=True, text=True,
                           timeout=120, env={**lab_env(repo), "COLUMNS": "200"})
    assert table.returncode == result.returncode, table.stdout + table.stderr
    return result.returncode, json.loads(result.stdout), table.stdout


@pytest.fixture(scope="module")
def switched() -> None:
    """The whole lab switched to the repository's configuration, and verified."""
    result, summary = deploy(ROOT, "switch", verify=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {row["result"] for row in summary.values()} <= {"changed", "unchanged"}, summary


def test_after_a_verified_switch_every_host_is_up_to_date_and_verified(switched):
    code, report, table = status(ROOT)
    assert code == 0, table
    assert [h["host"] for h in report["hosts"]] == list(HOSTS)
    for host in report["hosts"]:
        assert host["flake_state"] == "up-to-date", host
        assert host["verified_state"] == "verified", host
        assert host["running"] == host["profile"] and host["failed_units"] == [], host
        assert host["generation"] is not None and host["store_free"] > 0, host
    assert report["problems"] == [] and report["ok"]
    assert f"{len(HOSTS)} of {len(HOSTS)} hosts up to date, verified and healthy" in table
    just = os.path.join(os.path.dirname(sys.executable), "just")
    recipe = subprocess.run([just, "status", "--limit", "razer"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=lab_env(ROOT))
    assert recipe.returncode == 0, recipe.stdout + recipe.stderr


def test_a_file_edited_in_razers_flake_directory_is_named(switched):
    on("razer", "cp -a /etc/nixos/flake.nix /root/flake.nix.saved && "
                "echo '# edited by hand' >> /etc/nixos/flake.nix")
    try:
        code, report, table = status(ROOT)
    finally:
        on("razer", "mv -f /root/flake.nix.saved /etc/nixos/flake.nix")
    assert code == 1
    assert report["problems"] == [
        "razer: flake directory hand-edited on the host: edited flake.nix"], table
    row = next(h for h in report["hosts"] if h["host"] == "razer")
    assert row["flake_state"] == "hand-edited" and row["flake_files"] == ["edited flake.nix"]
    assert "razer: flake directory hand-edited on the host: edited flake.nix" in table
    assert status(ROOT, "--limit", "razer")[0] == 0  # restored


def test_a_damaged_record_gives_the_right_drift_list(switched):
    """razer's record of its flake directory filled with garbage and one file edited: status
    and the next deploy say the record is damaged and name exactly the edited file (no piece
    of the garbage as a deleted file, the edited file not as added)."""
    on("razer", "cp -a /etc/nixos/flake.nix /root/flake.nix.saved && "
                "echo '# edited by hand' >> /etc/nixos/flake.nix && "
                "head -c 3000 /dev/urandom | base64 > /var/lib/nixfleet/flake.sha256")
    try:
        code, report, table = status(ROOT, "--limit", "razer")
        assert code == 1
        (row,) = report["hosts"]
        assert row["flake_state"] == "record-damaged" and row["flake_files"] == ["flake.nix"]
        assert report["problems"] == [
            "razer: record damaged: the whole directory is compared with this repository; "
            "1 files differ: flake.nix"], table
        result, summary = deploy(ROOT, "switch", "--limit", "razer")
        assert result.returncode == 0, result.stdout + result.stderr
        assert summary["razer"]["drift"] == [
            "record damaged: the whole directory is compared with this repository",
            "edited flake.nix"]
        backup = summary["razer"]["backup"]
        assert backup and on("razer", f"cat {backup}/flake.nix").stdout.endswith(
            "# edited by hand\n")
        assert status(ROOT, "--limit", "razer")[0] == 0
    finally:
        on("razer", "rm -rf /root/flake.nix.saved /etc/nixos.nixfleet-backup-*")


# dex5550 back to first boot once the tests that deploy to it are done, not after each: each
# deploys a change of its own (a unit no other test has) and reads what changed from there.
reset_dex5550_after_the_module = reset_after_the_module("dex5550")


@pytest.fixture
def repo(tmp_path, reset_dex5550_after_the_module) -> Path:
    """A copy of the configuration with its verification suite; dex5550 is reset after the
    module."""
    return configuration_with_its_checks(tmp_path)


def test_a_deployer_killed_after_the_switch_leaves_it_unverified_until_the_next_deploy(repo):
    (repo / "nix" / "lab" / "faults").mkdir(exist_ok=True)
    (repo / "nix" / "lab" / "faults" / "dex5550.json").write_text(
        json.dumps({"status-marker": {"execStart": "/bin/sleep infinity"}}))
    running = subprocess.Popen(deploy_argv("switch", "--limit", "dex5550", verify=True),
                               cwd=repo, env=lab_env(repo), text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert running.stdout is not None
        for line in running.stdout:  # the switch is done and confirmed: kill the deployer
            if line.startswith("nixfleet: verifying"):
                break
        else:
            pytest.fail("the deploy ended before its verification")
    finally:
        os.killpg(running.pid, signal.SIGKILL)
        running.communicate()
    code, report, table = status(repo, "--limit", "dex5550")
    assert code == 1
    (row,) = report["hosts"]
    assert row["flake_state"] == "up-to-date" and row["last_deploy"]["result"] == "changed"
    assert row["verified_state"] == "not-verified", row
    assert report["problems"] == [
        f"dex5550: not verified: it runs {row['running']}, which no verification checked "
        "(nixfleet verify, or the next deploy)"]
    # The next plain deploy changes nothing and verifies it, saying why.
    result, summary = deploy(repo, "switch", "--limit", "dex5550", verify=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary["dex5550"]["result"] == "unchanged"
    assert summary["dex5550"]["verification"]["failures"] == []
    assert (f"nixfleet: dex5550: unchanged, verified because it runs {row['running']}, which "
            "no verification checked") in result.stdout
    code, report, table = status(repo, "--limit", "dex5550")
    assert code == 0, table
    assert report["hosts"][0]["verified_state"] == "verified"


def metrics(host: str) -> dict[str, str]:
    """The NixOS exporter's nixos_last_* and nixos_system_verified samples on the host."""
    text = on(host, "curl -s localhost:9101/metrics").stdout
    return dict(line.rsplit(" ", 1) for line in text.splitlines()
                if line.startswith(("nixos_last_deploy", "nixos_system_verified",
                                    "nixos_last_verification")))


def test_the_exporter_follows_a_deploy_and_a_verification(repo):
    before = metrics("dex5550")
    (repo / "nix" / "lab" / "faults").mkdir(exist_ok=True)
    (repo / "nix" / "lab" / "faults" / "dex5550.json").write_text(
        json.dumps({"metrics-marker": {"execStart": "/bin/sleep infinity"}}))
    result, summary = deploy(repo, "switch", "--limit", "dex5550")  # not verified
    assert summary["dex5550"]["result"] == "changed", result.stdout + result.stderr
    deploy_id = result.stdout.split("/summary.json")[0].rsplit("/", 1)[1]  # .deploy-logs/ID
    info = f'nixos_last_deploy_info{{deploy_id="{deploy_id}",result="changed"}}'
    wait_until(lambda: info in metrics("dex5550"), 90, "the exporter to read the journal")
    after = metrics("dex5550")
    assert after["nixos_system_verified"] == "0.0" and after["nixos_last_deploy_success"] == "1.0"
    assert float(after["nixos_last_deploy_timestamp"]) > float(
        before.get("nixos_last_deploy_timestamp", "0"))
    verified = subprocess.run([sys.executable, "-m", "nixfleet", "verify", "--limit", "dex5550"],
                              cwd=repo, capture_output=True, text=True, timeout=300,
                              env=lab_env(repo))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    wait_until(lambda: metrics("dex5550").get("nixos_system_verified") == "1.0", 30,
               "the exporter to read the verification")
    assert float(metrics("dex5550")["nixos_last_verification_timestamp"]) > float(
        after.get("nixos_last_verification_timestamp", "0"))

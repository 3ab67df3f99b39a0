"""Secrets on the lab hosts: after a switch each host holds exactly the secrets it is a
recipient of in /run/agenix, decrypted with its own host key, with the rules' owner, group and
mode; `nixfleet secrets status --hosts` proves it without moving a value."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nixfleet.inventory import load_inventory_file
from nixfleet.lab.config import lab_paths
from nixfleet.lab.secrets import lab_fleet, lab_store
from nixfleet.secrets.store import SecretStore
from tests.lab.conftest import HOSTS, ROOT, nixfleet, on
from tests.lab.test_deploys import deploy

pytestmark = pytest.mark.usefixtures("lab")
LAB_ENV = {"NIXFLEET_TARGET": "lab"}


def status_hosts(repo: Path = ROOT, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nixfleet", "secrets", "status", "--hosts", *args], cwd=repo,
        capture_output=True, text=True, timeout=300,
        env={**os.environ, **LAB_ENV, "PYTHONPATH": str(ROOT),
             "NIXFLEET_INVENTORY": str(repo / "inventory.py")})


def lab_values() -> tuple[dict[str, str], SecretStore]:
    """sha256 of each lab secret's value, decrypted here with the lab's admin key."""
    saved = os.environ.get("NIXFLEET_TARGET")
    os.environ.update(LAB_ENV)
    try:
        fleet = load_inventory_file(ROOT / "inventory.py")
    finally:
        if saved is None:
            del os.environ["NIXFLEET_TARGET"]
        else:
            os.environ["NIXFLEET_TARGET"] = saved
    paths = lab_paths()
    store = lab_store(lab_fleet(fleet.hosts.values(), paths, fleet.groups), ROOT, paths)
    assert store is not None
    return {name: store.sha256(name) for name in store.rules.secrets}, store


def agenix_on(host: str) -> dict[str, tuple[str, str]]:
    """name -> (sha256, 'owner group mode') of /run/agenix on a host, read independently."""
    output = on(host, "cd /run/agenix && for f in *; do "
                      "echo \"$f $(sha256sum < $f | cut -c1-64) $(stat -c '%U %G %a' $f)\"; done")
    result = {}
    for line in output.stdout.splitlines():
        name, digest, rest = line.split(" ", 2)
        result[name] = (digest, rest)
    return result


@pytest.fixture(scope="module")
def switched():
    result, summary = deploy(ROOT, "switch")
    assert result.returncode == 0, result.stderr
    assert set(summary) == set(HOSTS)


def test_after_a_switch_every_host_holds_exactly_its_secrets(switched):
    hashes, store = lab_values()
    for host in HOSTS:
        found = agenix_on(host)
        expected = {name: rule for name, rule in store.rules.secrets.items()
                    if host in rule.owners}
        assert set(found) == set(expected), host
        for name, rule in expected.items():
            spec = rule.spec(host)
            assert found[name] == (hashes[name],
                                   f"{spec.owner} {spec.group} {int(spec.mode, 8):o}"), name
        assert on(host, "readlink /run/agenix").stdout.startswith("/run/agenix.d/")
    assert "wifi-password" in agenix_on("razer")
    assert agenix_on("razer")["api-openai"][1] == "olafkfreund users 600"
    assert agenix_on("p510")["docker-auth"][1] == "root docker 440"
    assert not any("wifi-password" in agenix_on(h) for h in ("p620", "p510", "dex5550"))
    # Decrypted with the host's own key: no other host key is a recipient of wifi-password.
    assert on("p620", "age -d -i /etc/ssh/ssh_host_ed25519_key "
                      "/etc/nixos/secrets/wifi-password.age", check=False).returncode != 0


def test_the_delivery_check_passes_and_shows_no_value(switched):
    result = status_hosts()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == list(HOSTS)
    assert all(": ok: " in line for line in lines)
    assert "razer: ok: 12 secrets" in result.stdout
    hashes, _ = lab_values()
    assert "lab-dummy" not in result.stdout + result.stderr
    assert not any(h in result.stdout for h in hashes.values())


def test_the_delivery_check_finds_a_wrong_mode_owner_content_and_stray_file(switched):
    on("razer", "chmod 644 /run/agenix/smtp-password && chown nobody /run/agenix/api-openai"
                " && echo changed > /run/agenix/github-token && echo x > /run/agenix/stray"
                " && rm /run/agenix/docker-auth")
    try:
        result = status_hosts(ROOT, "--limit", "razer")
    finally:  # activating again writes a fresh agenix generation
        on("razer", "/run/current-system/bin/switch-to-configuration test")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "razer: api-openai: owner is nobody, expected olafkfreund",
        "razer: docker-auth: missing from /run/agenix (expected root:docker 0440)",
        "razer: smtp-password: mode is 0644, expected 0400",
        "razer: github-token: content differs from the local value (sha256 mismatch)",
        "razer: stray: in /run/agenix but the host is not a recipient",
    ]
    assert result.stderr.strip() == "nixfleet: error: 5 problems on 1 host"
    assert status_hosts(ROOT, "--limit", "razer").returncode == 0


@pytest.fixture
def repo(tmp_path):
    """A copy of the configuration whose rules can be changed."""
    shutil.copy(ROOT / "inventory.py", tmp_path / "inventory.py")
    shutil.copytree(ROOT / "group_data", tmp_path / "group_data")
    shutil.copytree(ROOT / "nix" / "lab", tmp_path / "nix" / "lab")
    shutil.copytree(ROOT / "secrets", tmp_path / "secrets")
    yield tmp_path
    result, _ = deploy(ROOT, "switch")
    assert result.returncode == 0, result.stderr


def test_a_secret_removed_from_a_hosts_rules_disappears_after_the_next_switch(switched, repo):
    rules = repo / "secrets" / "rules.py"
    old = '"github-token": {"recipients": ["allUsers", "workstations"]}'
    assert old in rules.read_text()
    rules.write_text(rules.read_text().replace(old, old.replace("workstations", "p620")))
    result, summary = deploy(repo, "switch")
    assert result.returncode == 0, result.stderr
    assert summary["razer"]["result"] == "changed"
    assert {summary[h]["result"] for h in ("p620", "p510", "dex5550")} == {"unchanged"}
    assert "github-token" not in agenix_on("razer")
    assert "github-token" in agenix_on("p620")
    check = status_hosts(repo)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "razer: ok: 11 secrets" in check.stdout
    # Against the repository's own rules, razer now misses it.
    stale = status_hosts(ROOT, "--limit", "razer")
    assert stale.returncode == 1
    assert "razer: github-token: missing from /run/agenix" in stale.stdout


def test_a_corrupted_age_file_fails_activation_on_that_host_only(switched, repo):
    before = agenix_on("razer")
    lab_file = lab_paths().state / "secrets" / "wifi-password.age"
    good = lab_file.read_bytes()
    damaged = bytearray(good)
    damaged[-5] ^= 0xFF  # in the payload: the header still names razer's key
    lab_file.write_bytes(bytes(damaged))
    try:
        result, summary = deploy(repo, "switch")
    finally:
        lab_file.write_bytes(good)
    assert result.returncode == 1
    assert summary["razer"]["result"] in ("failed", "rolled-back")
    assert summary["razer"]["reason"].startswith("switch-to-configuration switch exited 2")
    assert {summary[h]["result"] for h in ("p620", "p510", "dex5550")} == {"unchanged"}
    # razer still holds its secrets as before, none of them half-written.
    assert agenix_on("razer") == before


def test_a_reset_host_keeps_its_key_so_no_secret_and_no_other_host_changes(switched):
    nixfleet("lab", "reset", "dex5550")  # a lab from before kept keys gets one kept now
    settle, _ = deploy(ROOT, "switch")
    assert settle.returncode == 0, settle.stderr
    secrets_dir = lab_paths().state / "secrets"
    files = {p.name: p.read_bytes() for p in secrets_dir.iterdir()}
    key = on("dex5550", "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout
    nixfleet("lab", "reset", "dex5550")
    assert on("dex5550", "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout == key
    assert {p.name: p.read_bytes() for p in secrets_dir.iterdir()} == files
    assert "postgres-password" in agenix_on("dex5550")  # first boot decrypted them already
    result, summary = deploy(ROOT, "switch")
    assert result.returncode == 0, result.stderr
    assert {h: r["result"] for h, r in summary.items()} == dict.fromkeys(HOSTS, "unchanged")
    check = status_hosts()
    assert check.returncode == 0, check.stdout + check.stderr

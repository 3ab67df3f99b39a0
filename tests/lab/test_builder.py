"""deploy.buildOn = HOST on the lab: razer and dex5550 built on p620 (the fleet's binary cache
server) in one Nix invocation, signed there with the fleet's key and fetched from p620's cache
by the targets; a system signed by another key refused; p620 stopped mid-deploy; dex5550 built
on p510, which runs no cache, and fetched from its store over SSH.

The tests run in one copy of the configuration where razer and dex5550 name p620; razer and
dex5550 are reset after the module.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from nixfleet.lab.secrets import BINARY_CACHE_KEY_NAME
from tests.lab.conftest import ROOT, nixfleet, on, wait_until
from tests.lab.test_deploys import (
    current_system,
    deploy,
    deploy_argv,
    generation,
    lab_env,
    summary_of,
)

pytestmark = pytest.mark.usefixtures("lab")
TARGETS = ("razer", "dex5550")
NIX = "NIX_CONFIG='experimental-features = nix-command' nix"
PYTHON = sys.executable


def build_on(repo: Path, host: str, **deploy_settings: str) -> None:
    """The host's inventory entry gets `deploy` with these settings."""
    inventory = repo / "inventory.py"
    text = inventory.read_text()
    entry = text.index(f'("{host}", {{')
    at = text.index('"hardware_class"', entry)
    inventory.write_text(f"{text[:at]}\"deploy\": {deploy_settings!r},\n        {text[at:]}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    directory = tmp_path_factory.mktemp("builder")
    shutil.copy(ROOT / "inventory.py", directory / "inventory.py")
    for name in ("group_data", "secrets", "nix"):
        shutil.copytree(ROOT / name, directory / name)
    (directory / "nix" / "lab" / "faults").mkdir(exist_ok=True)
    for host in TARGETS:
        build_on(directory, host, buildOn="p620")
    yield directory
    nixfleet("lab", "reset", *TARGETS)


def change(repo: Path, *hosts: str) -> None:
    """A new system for each host: one more unit (every such change is a new derivation)."""
    unit = f"web-{uuid.uuid4().hex[:8]}"
    for host in hosts:
        (repo / "nix" / "lab" / "faults" / f"{host}.json").write_text(
            f'{{"{unit}": {{"execStart": "/bin/sleep infinity"}}}}')


def limit(*hosts: str) -> list[str]:
    return [argument for host in hosts for argument in ("--limit", host)]


def test_targets_built_on_p620_fetch_its_signed_systems_and_build_nothing(repo):
    change(repo, *TARGETS)
    result, summary = deploy(repo, "switch", *limit(*TARGETS))
    assert result.returncode == 0, result.stdout + result.stderr
    # Both in one Nix invocation on p620.
    assert len(re.findall(r"^nixfleet: p620 built 2 of 2 systems in [\d.]+ s", result.stdout,
                          re.MULTILINE)) == 1, result.stdout
    for host in TARGETS:
        row = summary[host]
        assert (row["result"], row["built_on"]) == ("changed", "p620"), row
        assert row["fetched_bytes"] > 0
        system = row["toplevel"]
        assert f"-nixos-system-{host}-" in system  # its own
        assert current_system(host) == system
        # Signed with the fleet's key, on p620.
        signatures = on(host, f"{NIX} path-info --sigs {system}").stdout.split()[1:]
        assert any(s.startswith(f"{BINARY_CACHE_KEY_NAME}:") for s in signatures), signatures
        # No build ran here: the system's derivation never was in this store, nor a build log.
        assert on(host, f"test -e $(nix-store -q --deriver {system})", check=False).returncode
        assert on(host, f"{NIX} log {system}", check=False).returncode != 0
        # The row says where it was built, the line below what it fetched.
        assert re.search(rf"│ {host} +│ switch .*│ p620 +│", result.stdout), result.stdout
        assert re.search(rf"{host}: built on p620, fetched \d", result.stdout)
        # p620 keeps it from its garbage collector until a newer build replaces it.
        assert on("p620", f"readlink /var/lib/nixfleet/builds/*/roots/{host}").stdout.split() \
            .count(system) == 1


def test_a_system_signed_by_another_key_is_refused_and_the_host_is_unchanged(repo):
    key = "/run/agenix/binary-cache-key"
    before = (generation("dex5550"), current_system("dex5550"))
    # p620 signs (and its cache serves) with a key that is not the fleet's.
    on("p620", f"cp {key} /root/fleet-key && nix-store --generate-binary-cache-key other-1 "
               f"/root/other-key /root/other-key.pub && cp /root/other-key {key}")
    try:
        change(repo, "dex5550")
        result, summary = deploy(repo, "switch", "--limit", "dex5550")
    finally:
        on("p620", f"cp /root/fleet-key {key} && rm /root/fleet-key /root/other-key*")
    assert result.returncode == 1, result.stdout + result.stderr
    row = summary["dex5550"]
    assert row["result"] == "failed"
    assert row["reason"].startswith("the system built on p620 was refused or not fetched: ")
    assert "signature" in row["reason"]
    assert (generation("dex5550"), current_system("dex5550")) == before


def test_a_builder_stopped_mid_deploy_fails_its_targets_or_they_build_for_themselves(repo):
    before = (generation("razer"), current_system("razer"))
    release = f"/tmp/nixfleet-release-{uuid.uuid4().hex}"  # p620's build of razer waits for it
    gate = repo / "nix" / "lab" / "faults" / "razer.build-gate"
    gate.write_text(f"{release}\n")
    change(repo, "razer")
    running = subprocess.Popen(deploy_argv("switch", "--limit", "razer"), cwd=repo,
                               env=lab_env(repo), text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        wait_until(lambda: on("p620", "pgrep -f build-toplevel.py", check=False).returncode == 0,
                   60, "p620 to build razer's system")
        on("p620", "systemctl poweroff", check=False)
        stdout, stderr = running.communicate(timeout=120)
        row = summary_of(stdout)["razer"]
        assert row["result"] == "failed", stdout + stderr
        assert row["reason"].startswith("builder p620 could not be reached or was cut off"), row
        assert (generation("razer"), current_system("razer")) == before
        # p620 still down: with deploy.buildFallback, razer builds its system itself.
        gate.unlink()
        build_on(repo, "razer", buildOn="p620", buildFallback="target")
        result, summary = deploy(repo, "switch", "--limit", "razer")
        assert result.returncode == 0, result.stdout + result.stderr
        row = summary["razer"]
        assert (row["result"], row["built_on"]) == ("changed", "target"), row
        assert "builder p620 could not be reached" in row["reason"]
        assert "built on the host instead (deploy.buildFallback)" in row["reason"]
        assert current_system("razer") == row["toplevel"] != before[1]
    finally:
        if running.poll() is None:
            running.kill()
            running.communicate()
        nixfleet("lab", "up")


def test_a_builder_without_a_binary_cache_serves_its_targets_over_ssh(repo):
    """dex5550 built on p510, which runs no cache: p510 gets the signing key (the rules say
    so), serves its store over SSH to the fleet's fetch key (nix.sshServe), and dex5550 fetches
    from it directly."""
    rules = repo / "secrets" / "rules.py"
    text = rules.read_text()
    signers = '"binary-cache-key": {"recipients": ["allUsers", "p620"]}'
    assert signers in text
    rules.write_text(text.replace(signers, signers.replace('"p620"]', '"p620", "p510"]')))
    build_on(repo, "dex5550", buildOn="p510")  # a later "deploy" than the module's: it wins
    try:
        # The lab's secrets encrypted to the rules of this copy (p510 receives the key).
        up = subprocess.run([PYTHON, "-m", "nixfleet", "lab", "up"], cwd=repo,
                            env=lab_env(repo), capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        result, _ = deploy(repo, "switch", "--limit", "p510")  # the builder's sshServe first
        assert result.returncode == 0, result.stdout + result.stderr
        assert 'restrict,command="nix-store --serve" ssh-ed25519 ' in \
            on("p510", "cat /root/.ssh/authorized_keys").stdout
        change(repo, "dex5550")
        result, summary = deploy(repo, "switch", "--limit", "dex5550")
        assert result.returncode == 0, result.stdout + result.stderr
        row = summary["dex5550"]
        assert (row["result"], row["built_on"]) == ("changed", "p510"), row
        assert row["fetched_bytes"] > 0
        assert re.search(r"dex5550: built on p510, fetched [\d.]+ MiB over SSH", result.stdout)
        system = row["toplevel"]
        assert current_system("dex5550") == system
        signatures = on("dex5550", f"{NIX} path-info --sigs {system}").stdout.split()[1:]
        assert any(s.startswith(f"{BINARY_CACHE_KEY_NAME}:") for s in signatures), signatures
        assert on("dex5550", f"test -e $(nix-store -q --deriver {system})",
                  check=False).returncode
        # The fetch key runs nothing on p510 but a read-only nix-store --serve.
        login = on("dex5550", "ssh -i /run/agenix/builder-ssh-key -o BatchMode=yes "
                              "-o StrictHostKeyChecking=no root@p510 id", check=False)
        assert "uid=" not in login.stdout, login.stdout
    finally:
        nixfleet("lab", "reset", "p510")
        nixfleet("lab", "up")  # the lab's secrets back to the repository's rules

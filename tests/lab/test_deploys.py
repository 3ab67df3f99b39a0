"""Deploys against the lab: pyinfra inventory.py deploys/X.py, as users run them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.conftest import HOSTS, ROOT, nixfleet, on

pytestmark = pytest.mark.usefixtures("lab")
PYINFRA = os.path.join(os.path.dirname(sys.executable), "pyinfra")
DEX_DEVELOPMENT = '"development": {"enable": True, "python": True, "nix": True, "shell": True},'


def deploy(repo: Path, name: str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a deploy file on the lab from `repo`; return the process and its summary by host."""
    result = subprocess.run(
        [PYINFRA, "inventory.py", str(ROOT / "deploys" / f"{name}.py"), "-y", *args],
        cwd=repo, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NIXFLEET_TARGET": "lab",
             "PYTHONPATH": str(ROOT), "NIXFLEET_INVENTORY": str(repo / "inventory.py")})
    found = re.search(r"summary: (\S+summary\.json)", result.stdout)
    summary = {r["host"]: r for r in json.loads(Path(found[1]).read_text())} if found else {}
    return result, summary


def generation(host: str) -> int:
    return int(on(host, "readlink /nix/var/nix/profiles/system").stdout.strip()[7:-5])


def current_system(host: str) -> str:
    return on(host, "readlink /run/current-system").stdout.strip()


@pytest.fixture
def changed_repo(tmp_path):
    """A copy of the configuration with one change: dex5550 also develops in Go."""
    for name in ("inventory.py",):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "group_data", tmp_path / "group_data")
    shutil.copytree(ROOT / "nix" / "lab", tmp_path / "nix" / "lab")
    shutil.copytree(ROOT / "secrets", tmp_path / "secrets")  # the rules: which host gets which
    inventory = tmp_path / "inventory.py"
    text = inventory.read_text()
    assert DEX_DEVELOPMENT in text
    inventory.write_text(text.replace(DEX_DEVELOPMENT, DEX_DEVELOPMENT.replace(
        '"nix": True', '"nix": True, "go": True')))
    yield tmp_path
    nixfleet("lab", "reset", "dex5550")


def test_switch_the_fleet_then_a_second_switch_is_a_no_op():
    first, summary = deploy(ROOT, "switch")
    assert first.returncode == 0, first.stderr
    assert set(summary) == set(HOSTS)
    generations = {h: generation(h) for h in HOSTS}
    second, summary = deploy(ROOT, "switch")
    assert second.returncode == 0, second.stderr
    assert {h: r["result"] for h, r in summary.items()} == dict.fromkeys(HOSTS, "unchanged")
    assert {h: generation(h) for h in HOSTS} == generations
    for host, row in summary.items():
        assert row["generation_before"] == row["generation_after"] == str(generations[host])
    assert "nixfleet deploy" in second.stdout and "unchanged" in second.stdout


def test_a_change_switches_only_that_host_and_shows_the_closure_difference(changed_repo):
    deploy(ROOT, "switch")
    before = {h: generation(h) for h in HOSTS}
    result, summary = deploy(changed_repo, "switch")
    assert result.returncode == 0, result.stderr
    assert summary["dex5550"]["result"] == "changed"
    assert generation("dex5550") == before["dex5550"] + 1
    assert "go: ∅ → 1.23.4, +11.1 KiB" in summary["dex5550"]["diff"]
    assert summary["dex5550"]["closure_delta"].startswith("+")
    for host in ("p620", "razer", "p510"):
        assert summary[host]["result"] == "unchanged"
        assert generation(host) == before[host]


def test_limit_nvidia_touches_only_razer_and_p510():
    result, summary = deploy(ROOT, "switch", "--limit", "nvidia")
    assert result.returncode == 0, result.stderr
    assert sorted(summary) == ["p510", "razer"]
    typo, _ = deploy(ROOT, "switch", "--limit", "nvidai")
    assert typo.returncode != 0
    assert "--limit 'nvidai' matches no host or group" in typo.stderr


def test_each_action_does_only_what_it_says(changed_repo):
    host = "dex5550"
    deploy(ROOT, "switch", "--limit", host)
    gen, system = generation(host), current_system(host)

    _, built = deploy(changed_repo, "build", "--limit", host)
    assert built[host]["result"] == "built"
    assert (generation(host), current_system(host)) == (gen, system)

    _, dry = deploy(changed_repo, "dry_activate", "--limit", host)
    assert dry[host]["result"] == "built"
    assert dry[host]["would"] == []  # a new package and no new unit: nothing to (re)start
    assert (generation(host), current_system(host)) == (gen, system)

    _, tested = deploy(changed_repo, "test", "--limit", host)
    assert tested[host]["result"] == "changed"
    assert generation(host) == gen and current_system(host) != system

    _, booted = deploy(changed_repo, "boot", "--limit", host)
    assert booted[host]["result"] == "changed"
    assert generation(host) == gen + 1
    assert on(host, "readlink -f /nix/var/nix/profiles/system").stdout.strip() \
        == current_system(host)  # boot made the tested system the default, activating nothing


def test_rollback_returns_to_the_previous_generation(changed_repo):
    host = "dex5550"
    deploy(ROOT, "switch", "--limit", host)
    gen, system = generation(host), current_system(host)
    deploy(changed_repo, "switch", "--limit", host)
    assert generation(host) == gen + 1
    result, summary = deploy(ROOT, "rollback", "--limit", host)
    assert result.returncode == 0, result.stderr
    assert summary[host]["result"] == "changed"
    assert summary[host]["reason"] == f"rolled back to generation {gen}"
    assert (generation(host), current_system(host)) == (gen, system)


def test_a_build_failure_leaves_the_host_on_its_old_generation(changed_repo):
    host = "dex5550"
    gen, system = generation(host), current_system(host)
    toplevel = changed_repo / "nix" / "lab" / "toplevel.nix"
    toplevel.write_text(toplevel.read_text().replace("let\n", "let\n  broken = ;\n", 1))
    result, summary = deploy(changed_repo, "switch", "--limit", host)
    assert result.returncode == 1
    assert summary[host]["result"] == "failed"
    assert summary[host]["reason"].startswith("build failed: ")
    assert (generation(host), current_system(host)) == (gen, system)


def test_a_host_that_is_down_is_reported_while_the_others_deploy(changed_repo):
    on("p510", "systemctl stop ssh.socket ssh.service", check=False)
    try:
        result, summary = deploy(changed_repo, "switch")
    finally:
        nixfleet("lab", "reset", "p510")
    assert result.returncode == 1
    assert summary["p510"]["result"] == "unreachable"
    assert summary["dex5550"]["result"] == "changed"
    assert {summary[h]["result"] for h in ("p620", "razer")} == {"unchanged"}


def test_a_second_deploy_to_a_locked_host_fails_at_once(changed_repo):
    host = "dex5550"
    builder = changed_repo / "nix" / "lab" / "build-toplevel.py"
    builder.write_text("import time\ntime.sleep(4)\n" + builder.read_text())
    slow = subprocess.Popen(
        [PYINFRA, "inventory.py", str(ROOT / "deploys" / "switch.py"), "-y", "--limit", host],
        cwd=changed_repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NIXFLEET_TARGET": "lab", "PYTHONPATH": str(ROOT),
             "NIXFLEET_INVENTORY": str(changed_repo / "inventory.py")})
    try:
        deadline = time.monotonic() + 30
        while on(host, "test -d /run/nixfleet/deploy.lock", check=False).returncode != 0:
            assert time.monotonic() < deadline, "the first deploy never took the lock"
        started = time.monotonic()
        second, summary = deploy(ROOT, "switch", "--limit", host)
        waited = time.monotonic() - started
    finally:
        slow.wait(timeout=120)
    assert slow.returncode == 0
    assert second.returncode == 1
    assert summary[host]["result"] == "locked"
    assert re.fullmatch(r"locked by root@\S+ \(deploy [0-9-]+\) since \d{4}-\d\d-\d\d "
                        r"\d\d:\d\d:\d\d UTC", summary[host]["reason"])
    assert waited < 4  # it did not wait for the lock


def test_a_stale_lock_is_taken_over():
    host = "razer"
    on(host, "mkdir -p /run/nixfleet/deploy.lock && "
             "echo \"$(( $(date +%s) - 7200 )) old-deploy someone@elsewhere\" "
             "> /run/nixfleet/deploy.lock/owner")
    result, summary = deploy(ROOT, "switch", "--limit", host)
    assert result.returncode == 0, result.stderr
    assert summary[host]["result"] in ("changed", "unchanged")
    assert on(host, "test -e /run/nixfleet/deploy.lock", check=False).returncode != 0

"""`nixfleet update --deploy` on the lab: the lab flake's input labpkgs (nix/lab/labpkgs, the
package versions) moves, the lock follows, the hosts build and switch, and the lock is
committed; a build or a deploy that fails puts the lock back and commits nothing.

Each test runs in a copy of the configuration that is a git repository of its own (never this
checkout), on dex5550, which is reset before each test and after the last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.conftest import ROOT, nixfleet, on, reset_after_the_module
from tests.unit.repo_support import CONFIGURATION, copy_repository

pytestmark = pytest.mark.usefixtures("lab")
VERSIONS = Path("nix") / "lab" / "labpkgs" / "versions.json"
LOCK = Path("nix") / "lab" / "flake.lock"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          cwd=repo, check=True, capture_output=True, text=True).stdout


# Each test starts with its own reset: one after each test too was a second one in a row.
reset_dex5550_after_the_module = reset_after_the_module("dex5550")


@pytest.fixture
def repo(tmp_path: Path, reset_dex5550_after_the_module) -> Path:
    """The configuration (with the verification suite: deploys verify) committed in a git
    repository of its own."""
    repo = copy_repository(tmp_path / "repo", (*CONFIGURATION, "tests/fleet"))
    git(repo, "commit", "-qm", "configuration")
    nixfleet("lab", "reset", "dex5550")  # generation 1 of this configuration
    return repo


def upstream(repo: Path, message: str, **versions: str | None) -> None:
    """labpkgs moves (as nixpkgs does upstream): new versions, committed; the lock stays."""
    path = repo / VERSIONS
    data = json.loads(path.read_text())
    for name, version in versions.items():
        if version is None:
            data.pop(name)
        else:
            data[name] = version
    path.write_text(json.dumps(data, indent=2) + "\n")
    git(repo, "commit", "-qam", message)


def update(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NIXFLEET_TARGET": "lab", "PYTHONPATH": str(ROOT),
           "NIXFLEET_INVENTORY": str(repo / "inventory.py"),
           **{f"GIT_{who}_{part}": value for who in ("AUTHOR", "COMMITTER")
              for part, value in (("NAME", "t"), ("EMAIL", "t@example.org"))}}
    return subprocess.run([sys.executable, "-m", "nixfleet", "update", *args], cwd=repo,
                          capture_output=True, text=True, timeout=400, env=env,
                          stdin=subprocess.DEVNULL)


def packages(host: str) -> list[str]:
    closure = on(host, "nix-store -qR /run/current-system").stdout.split()
    return sorted(p.split("-", 1)[1] for p in closure if "-coreutils-" in p or "-bash-" in p)


def nar_hash(lock: bytes) -> str:
    return json.loads(lock)["nodes"]["labpkgs"]["locked"]["narHash"]


@pytest.mark.parametrize("rollout", [[], ["--canary"]], ids=["switch", "canary"])
def test_update_deploy_builds_switches_and_commits_the_lock(repo, rollout):
    before = (repo / LOCK).read_bytes()
    head = git(repo, "rev-parse", "HEAD").strip()
    upstream(repo, "labpkgs: coreutils 9.6", coreutils="9.6")
    assert packages("dex5550") == ["bash-5.2.37", "coreutils-9.5"]

    result = update(repo, "--deploy", *rollout, "--limit", "dex5550")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "dex5550: 1 package changed, closure" in "\n".join(lines)
    assert "  upgraded: coreutils 9.5 -> 9.6" in lines
    assert packages("dex5550") == ["bash-5.2.37", "coreutils-9.6"]

    after = (repo / LOCK).read_bytes()
    assert nar_hash(after) != nar_hash(before)
    # One new commit: the lock alone, as it is in the work tree.
    assert git(repo, "rev-list", "--count", f"{head}..HEAD").strip() == "2"
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == [str(LOCK)]
    assert git(repo, "show", f"HEAD:{LOCK}").encode() == after
    assert git(repo, "status", "--porcelain", "--", "nix").strip() == ""
    message = git(repo, "log", "-1", "--format=%B").splitlines()
    assert message[0] == "nix/lab/flake.lock: update labpkgs"
    assert f"  labpkgs: {nar_hash(before)} -> {nar_hash(after)}" in message
    assert "Built on: dex5550" in message
    assert f"Deployed (switch{', canary' if rollout else ''}): dex5550" in message
    assert "  upgraded: coreutils 9.5 -> 9.6" in message
    commit = git(repo, "rev-parse", "--short", "HEAD").strip()
    assert f"nix/lab/flake.lock: committed {commit}: update labpkgs" in lines

    again = update(repo, "--deploy", "--limit", "dex5550")
    assert again.returncode == 0, again.stderr
    assert "nix/lab/flake.lock: unchanged: nothing to build or commit" in again.stdout
    assert git(repo, "rev-list", "--count", f"{head}..HEAD").strip() == "2"


def test_a_deploy_that_fails_its_gate_restores_the_lock_and_commits_nothing(repo):
    current = on("dex5550", "readlink /run/current-system").stdout.strip()
    upstream(repo, "labpkgs: coreutils 9.6", coreutils="9.6")
    faults = repo / "nix" / "lab" / "faults"
    faults.mkdir()
    (faults / "dex5550.json").write_text(json.dumps(
        {"broken": {"execStart": "/bin/false", "type": "oneshot"}}))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a unit that fails")
    before = (repo / LOCK).read_bytes()
    log = git(repo, "log", "--format=%H %s")

    result = update(repo, "--deploy", "--limit", "dex5550")
    assert result.returncode == 1, result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("nixfleet: error")]
    assert errors == ["nixfleet: error: the deploy failed: dex5550 (rolled-back); the hosts are "
                      "as its gate left them; nix/lab/flake.lock restored, nothing committed"]
    assert "  upgraded: coreutils 9.5 -> 9.6" in result.stdout.splitlines()  # it was built
    assert (repo / LOCK).read_bytes() == before
    assert git(repo, "log", "--format=%H %s") == log
    assert git(repo, "status", "--porcelain", "--", "nix").strip() == ""
    # The gate rolled the host back to what it ran.
    assert on("dex5550", "readlink /run/current-system").stdout.strip() == current


def test_a_build_that_fails_restores_the_lock_and_deploys_nothing(repo):
    generation = on("dex5550", "readlink /nix/var/nix/profiles/system").stdout.strip()
    upstream(repo, "labpkgs: coreutils dropped", coreutils=None)  # the lab flake needs it
    before = (repo / LOCK).read_bytes()
    log = git(repo, "log", "--format=%H %s")

    result = update(repo, "--deploy", "--limit", "dex5550")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "nixfleet: error: the build failed: dex5550 (failed); nix/lab/flake.lock restored, "
        "nothing committed")
    assert "deploy switch" not in result.stdout
    assert (repo / LOCK).read_bytes() == before
    assert git(repo, "log", "--format=%H %s") == log
    assert on("dex5550", "readlink /nix/var/nix/profiles/system").stdout.strip() == generation

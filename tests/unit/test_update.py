"""`nixfleet update`'s pieces: the closure difference per host (added, removed, upgraded), the
commit message, the commit of the lock file alone, and the lock put back on any failure; its
bad inputs are one line and a non-zero exit. The whole flow on the lab:
tests/lab/test_update_lab.py."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from nixfleet.flake_inputs import InputChange, LockedInput
from nixfleet.update import (
    ChangeKind,
    DeployRun,
    HostChanges,
    PackageChange,
    Update,
    UpdateFailed,
    commit_message,
    compare_versions,
    parse_diff_line,
)
from tests.unit.repo_support import copy_repository, git, nixfleet

# --- the closure difference ---------------------------------------------------------------


@pytest.mark.parametrize(("line", "change", "kind"), [
    ("go: ∅ → 1.23.4, +11.1 KiB", PackageChange("go", (), ("1.23.4",), "+11.1 KiB"),
     ChangeKind.ADDED),
    ("docker: 27.3.1 → ∅, -11.1 KiB", PackageChange("docker", ("27.3.1",), (), "-11.1 KiB"),
     ChangeKind.REMOVED),
    ("coreutils: 9.5 → 9.6", PackageChange("coreutils", ("9.5",), ("9.6",)),
     ChangeKind.UPGRADED),
    ("linux: 6.6.63 → 6.6.9, -120.0 KiB", PackageChange("linux", ("6.6.63",), ("6.6.9",),
                                                         "-120.0 KiB"), ChangeKind.DOWNGRADED),
    ("firefox: 133.0, 133.0.3 → 134.0, +2048.5 KiB",
     PackageChange("firefox", ("133.0", "133.0.3"), ("134.0",), "+2048.5 KiB"),
     ChangeKind.UPGRADED),
    ("nixos-system-p620: +12.0 KiB", PackageChange("nixos-system-p620", (), (), "+12.0 KiB"),
     ChangeKind.CHANGED),
    ("glibc: 2.40-36 → 2.40-66", PackageChange("glibc", ("2.40-36",), ("2.40-66",)),
     ChangeKind.UPGRADED),
])
def test_each_diff_closures_line_is_one_change(line, change, kind):
    assert parse_diff_line(line) == change
    assert change.kind is kind


@pytest.mark.parametrize("line", ["", "no colon here", "name: words only"])
def test_lines_that_are_no_change_are_skipped(line):
    assert parse_diff_line(line) is None


@pytest.mark.parametrize(("a", "b", "order"), [
    ("9.5", "9.6", -1), ("6.6.63", "6.6.9", 1), ("1.0", "1.0", 0), ("1.0", "1.0.1", -1),
    ("2.4pre1", "2.4", -1), ("1.2a", "1.2.1", -1), ("24.11", "25.05", -1),
])
def test_versions_compare_as_nix_compares_them(a, b, order):
    assert compare_versions(a, b) == order
    assert compare_versions(b, a) == -order


ROW = {"host": "p620", "result": "built", "reason": "built, not activated",
       "closure_before": 2_621_440, "closure_after": 2_633_728, "closure_delta": "+12.0 KiB",
       "diff": ["coreutils: 9.5 → 9.6", "go: ∅ → 1.23.4, +11.1 KiB",
                "docker: 27.3.1 → ∅, -11.1 KiB", "bash: 5.2.37 → 5.2.32"]}


def test_a_host_s_changes_are_shown_by_kind_with_the_closure_size():
    assert HostChanges.from_summary(ROW).lines() == [
        "p620: 4 packages changed, closure 2.5 MiB -> 2.5 MiB (+12.0 KiB)",
        "  added: go 1.23.4 (+11.1 KiB)",
        "  removed: docker 27.3.1 (-11.1 KiB)",
        "  upgraded: coreutils 9.5 -> 9.6",
        "  downgraded: bash 5.2.37 -> 5.2.32",
    ]


def test_a_host_without_package_changes_and_a_failed_host():
    same = {**ROW, "diff": [], "closure_after": ROW["closure_before"], "closure_delta": None}
    assert HostChanges.from_summary(same).lines() == [
        "p620: no package changes, closure 2.5 MiB -> 2.5 MiB (+0.0 KiB)"]
    failed = {"host": "razer", "result": "failed", "reason": "build failed: boom", "diff": []}
    assert HostChanges.from_summary(failed).lines() == ["razer: failed: build failed: boom"]
    assert HostChanges.from_summary(failed).failed


# --- the commit message -------------------------------------------------------------------


def locked(rev: str | None, nar: str | None = None) -> LockedInput:
    return LockedInput("x", rev, 1_733_000_000, nar)


def test_the_commit_message_names_each_input_s_revisions_and_the_hosts():
    changes = [InputChange("nixpkgs", locked("a" * 40), locked("b" * 40)),
               InputChange("agenix", locked("c" * 40), locked("c" * 40)),
               InputChange("labpkgs", None, locked(None, "sha256-new="))]
    hosts = [HostChanges.from_summary(ROW),
             HostChanges.from_summary({**ROW, "host": "razer", "diff": []})]
    assert commit_message("nix/flake.lock", changes, hosts, "switch") == f"""\
nix/flake.lock: update nixpkgs, labpkgs

Inputs:
  nixpkgs: {"a" * 40} -> {"b" * 40}
  labpkgs: - -> sha256-new=

Built on: p620, razer
Deployed (switch): p620, razer

p620: 4 packages changed, closure 2.5 MiB -> 2.5 MiB (+12.0 KiB)
  added: go 1.23.4 (+11.1 KiB)
  removed: docker 27.3.1 (-11.1 KiB)
  upgraded: coreutils 9.5 -> 9.6
  downgraded: bash 5.2.37 -> 5.2.32
razer: no package changes, closure 2.5 MiB -> 2.5 MiB (+12.0 KiB)
"""
    built_only = commit_message("nix/flake.lock", changes[:1], hosts[1:], None)
    assert "Deployed" not in built_only and "Built on: razer" in built_only


# --- the flow, with a stand-in deployer -----------------------------------------------------


@pytest.fixture(autouse=True)
def identity(monkeypatch):
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "t")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "t@example.org")


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def log(repo: Path) -> str:
    return subprocess.run(["git", "log", "--format=%H %s"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A committed configuration whose flake's input `pkgs` is a local git repository with a
    commit newer than the locked one."""
    pkgs = tmp_path / "pkgs"
    pkgs.mkdir()
    (pkgs / "flake.nix").write_text("{ outputs = _: { version = 1; }; }\n")
    git(pkgs, "init", "-q")
    commit_all(pkgs, "1")
    config = tmp_path / "config"
    (config / "nix").mkdir(parents=True)
    (config / "inventory.py").write_text("")
    (config / "nix" / "flake.nix").write_text(
        '{ inputs.pkgs.url = "git+file://' + str(pkgs) + '"; outputs = { self, pkgs }: { }; }\n')
    git(config, "init", "-q")
    git(config, "add", "-A")  # Nix reads a git flake's tracked files
    subprocess.run(["nix", "--extra-experimental-features", "nix-command flakes", "flake",
                    "lock", str(config / "nix")], check=True, capture_output=True)
    commit_all(config, "configuration")
    (pkgs / "flake.nix").write_text("{ outputs = _: { version = 2; }; }\n")
    commit_all(pkgs, "2")
    return config


class Deployer:
    """Records each deploy and answers with `results` by action (default: all built)."""

    def __init__(self, **results: DeployRun | BaseException):
        self.results = results
        self.calls: list[tuple[str, list[str], bool]] = []

    def __call__(self, action: str, limits: Sequence[str], canary: bool) -> DeployRun:
        self.calls.append((action, list(limits), canary))
        result = self.results.get(action, DeployRun(0, [ROW]))
        if isinstance(result, BaseException):
            raise result
        return result


def flow(config: Path, deployer: Deployer, **options) -> Update:
    return Update(config, config / "nix", deployer, out=lambda line: None, **options)


def test_a_successful_update_commits_the_lock_file_alone(config):
    before = (config / "nix" / "flake.lock").read_bytes()
    (config / "inventory.py").write_text("# staged, not part of the update\n")
    git(config, "add", "inventory.py")
    deployer = Deployer()
    changes, commit = flow(config, deployer, deploy=True, canary=True, limits=["p620"]).run()
    assert [c.name for c in changes if c.changed] == ["pkgs"]
    assert deployer.calls == [("build", ["p620"], False), ("switch", ["p620"], True)]
    assert commit
    shown = subprocess.run(["git", "show", "--name-only", "--format=%B", "HEAD"], cwd=config,
                           capture_output=True, text=True, check=True).stdout
    assert shown.startswith("nix/flake.lock: update pkgs\n")
    assert "Deployed (switch, canary): p620" in shown
    assert shown.rstrip().endswith("nix/flake.lock")  # the only file of the commit
    assert (config / "nix" / "flake.lock").read_bytes() != before
    status = subprocess.run(["git", "status", "--porcelain"], cwd=config, capture_output=True,
                            text=True, check=True).stdout
    assert status == "M  inventory.py\n"  # still staged, not committed


@pytest.mark.parametrize(("results", "message", "returncode"), [
    ({"build": DeployRun(1, [{**ROW, "result": "failed", "reason": "build failed: x"}])},
     "the build failed: p620 (failed)", 1),
    ({"build": DeployRun(0, [])}, "the build reached no host (see --limit)", 1),
    ({"switch": DeployRun(1, [{**ROW, "result": "rolled-back"}])},
     "the deploy failed: p620 (rolled-back); the hosts are as its gate left them", 1),
    ({"switch": DeployRun(2, [{**ROW, "result": "rollback-failed"}])},
     "the deploy failed: p620 (rollback-failed); the hosts are as its gate left them", 2),
    ({"switch": DeployRun(1, [{**ROW, "result": "changed"}])},  # verification failed
     "the deploy failed: exit status 1; the hosts are as its gate left them", 1),
])
def test_any_failure_restores_the_lock_and_commits_nothing(config, results, message,
                                                           returncode):
    before = (config / "nix" / "flake.lock").read_bytes()
    history = log(config)
    with pytest.raises(UpdateFailed) as failed:
        flow(config, Deployer(**results), deploy=True).run()
    assert str(failed.value) == f"{message}; nix/flake.lock restored, nothing committed"
    assert failed.value.returncode == returncode
    assert (config / "nix" / "flake.lock").read_bytes() == before
    assert log(config) == history


def test_an_interrupt_restores_the_lock_too(config, capsys):
    before = (config / "nix" / "flake.lock").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        flow(config, Deployer(switch=KeyboardInterrupt()), deploy=True).run()
    assert (config / "nix" / "flake.lock").read_bytes() == before
    assert "nixfleet: nix/flake.lock restored, nothing committed" in capsys.readouterr().err


def test_a_first_lock_that_fails_is_removed_again(config):
    git(config, "rm", "-q", "nix/flake.lock")
    git(config, "commit", "-qm", "no lock")
    with pytest.raises(UpdateFailed):
        flow(config, Deployer(build=DeployRun(1, []))).run()
    assert not (config / "nix" / "flake.lock").exists()


def test_nothing_moved_builds_nothing(config):
    flow(config, Deployer()).run()
    history = log(config)
    deployer = Deployer()
    _, commit = flow(config, deployer).run()
    assert commit is None and deployer.calls == [] and log(config) == history


# --- bad input: one line, non-zero ----------------------------------------------------------


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("nixfleet")]


def test_an_unknown_input_names_those_there_are(config):
    result = nixfleet(config, "update", "--input", "nixpkgs")
    assert result.returncode == 1
    assert error_lines(result) == [
        "nixfleet: error: no input 'nixpkgs' in nix/flake.nix; inputs: pkgs"]


def test_a_configuration_outside_git_is_refused(config, tmp_path):
    outside = tmp_path / "outside"
    (outside / "nix").mkdir(parents=True)
    (outside / "inventory.py").write_text("")
    (outside / "nix" / "flake.nix").write_text((config / "nix" / "flake.nix").read_text())
    result = nixfleet(outside, "update", GIT_CEILING_DIRECTORIES=str(tmp_path))
    assert result.returncode == 1
    assert error_lines(result) == [
        f"nixfleet: error: {outside} is not in a git repository: `nixfleet update` commits "
        "the lock file with git (git init, and commit the configuration)"]


def test_a_lock_file_with_changes_of_its_own_is_refused(config):
    lock = config / "nix" / "flake.lock"
    lock.write_text(json.dumps(json.loads(lock.read_text())) + "\n")
    result = nixfleet(config, "update")
    assert result.returncode == 1
    assert error_lines(result) == [
        "nixfleet: error: nix/flake.lock has uncommitted changes: commit or discard them "
        "first (`git diff -- nix/flake.lock`)"]
    git(config, "rm", "-q", "--cached", "nix/flake.lock")
    git(config, "commit", "-qm", "untracked lock")
    result = nixfleet(config, "update")
    assert error_lines(result) == [
        "nixfleet: error: nix/flake.lock is not committed: commit it (or remove it) first"]


def test_canary_without_deploy_is_refused(config):
    result = nixfleet(config, "update", "--canary")
    assert result.returncode == 1
    assert error_lines(result) == [
        "nixfleet: error: --canary is how --deploy rolls out: add --deploy"]


def test_without_network_it_is_one_line_and_the_lock_is_untouched(tmp_path):
    repo = copy_repository(tmp_path / "repo")
    git(repo, "commit", "-qm", "configuration")
    result = nixfleet(repo, "update", "--deploy")
    assert result.returncode == 1
    [line] = error_lines(result)
    assert line.startswith("nixfleet: error: cannot update nix/flake.lock: the flake's inputs "
                           "cannot be fetched here (no network?): unable to download")
    assert not (repo / "nix" / "flake.lock").exists()
    assert "deploy" not in result.stdout

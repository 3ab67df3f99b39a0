"""Deploys against the lab: pyinfra inventory.py deploys/X.py, as users run them."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.lab.conftest import HOSTS, ROOT, nixfleet, on, reset_after_the_module, wait_until

pytestmark = pytest.mark.usefixtures("lab")
PYINFRA = os.path.join(os.path.dirname(sys.executable), "pyinfra")
DEX_DEVELOPMENT = '"development": {"enable": True, "python": True, "nix": True, "shell": True},'


def lab_env(repo: Path) -> dict[str, str]:
    return {**os.environ, "NIXFLEET_TARGET": "lab", "PYTHONPATH": str(ROOT),
            "NIXFLEET_INVENTORY": str(repo / "inventory.py")}


def deploy_argv(name: str, *args: str, verify: bool = False) -> list[str]:
    """pyinfra running a deploy file; without post-deploy verification unless asked (these
    tests check the deploy itself, mostly from copies of the configuration without
    tests/fleet; tests/lab/test_verify_lab.py checks deploys with it)."""
    return [PYINFRA, "inventory.py", str(ROOT / "deploys" / f"{name}.py"), "-y", *args,
            *(() if verify else ("--data", "no_verify=true"))]


def summary_of(stdout: str) -> dict:
    found = re.search(r"summary: (\S+summary\.json)", stdout)
    return {r["host"]: r for r in json.loads(Path(found[1]).read_text())} if found else {}


def deploy(repo: Path, name: str, *args: str,
           verify: bool = False) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a deploy file on the lab from `repo`; return the process and its summary by host."""
    result = subprocess.run(deploy_argv(name, *args, verify=verify), cwd=repo,
                            capture_output=True, text=True, timeout=300, env=lab_env(repo))
    return result, summary_of(result.stdout)


def generation(host: str) -> int:
    return int(on(host, "readlink /nix/var/nix/profiles/system").stdout.strip()[7:-5])


def current_system(host: str) -> str:
    return on(host, "readlink /run/current-system").stdout.strip()


# dex5550 back to first boot once these tests are done, not after each: each test that changes
# it starts by deploying the plain configuration (which undoes the one before), and those that
# do not deploy it compare its state before and after themselves.
reset_dex5550_after_the_module = reset_after_the_module("dex5550")


@pytest.fixture
def changed_repo(tmp_path, reset_dex5550_after_the_module):
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
    return tmp_path


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
        assert row["generation_before"] == row["generation_after"] == generations[host]
        assert row["reason"] == "already active"
    assert "nixfleet deploy" in second.stdout and "unchanged" in second.stdout
    # Decided from facts, as pyinfra users expect: no command ran on any host.
    assert re.search(r"nixos-rebuild switch\s+4\s+-\s+-\s+4", second.stderr + second.stdout)


def dry_run(repo: Path) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    result = subprocess.run(
        [PYINFRA, "inventory.py", str(ROOT / "deploys" / "switch.py"), "--dry"],
        cwd=repo, capture_output=True, text=True, timeout=300, env=lab_env(repo))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("what would happen") == 1  # one summary
    assert "summary:" not in result.stdout  # nothing was deployed, no log written
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│")}
    return result, rows


def test_dry_run_changes_nothing_and_says_what_would_happen(changed_repo):
    deploy(ROOT, "switch")
    before = {h: (generation(h), current_system(h)) for h in HOSTS}
    result, rows = dry_run(ROOT)
    assert re.search(r"nixos-rebuild switch\s+-\s+-", result.stderr)  # pyinfra: no change
    assert all("unchanged" in rows[h] and "already active" in rows[h] for h in HOSTS), rows
    _, rows = dry_run(changed_repo)
    # dex5550's data is part of every host's flake: each would receive it; only dex5550's
    # system changes (its toplevel, evaluated on the deployer, is not the one it runs).
    assert "would-change" in rows["dex5550"] and \
        "send 1 changed flake files, build, switch" in rows["dex5550"], rows
    assert all("would-change" in rows[h] and "send 1 changed flake files: flake only"
               in rows[h] for h in HOSTS if h != "dex5550"), rows
    assert {h: (generation(h), current_system(h)) for h in HOSTS} == before


@pytest.mark.parametrize("typed", [None, "\n", "n\n"], ids=["dev-null", "enter", "n"])
def test_declining_the_confirmation_deploys_nothing_and_says_so(changed_repo, typed):
    """Without a terminal nothing is deployed, whatever stdin holds (/dev/null, an Enter piped
    in, "n"): one line, exit 1, no traceback. A push would rewrite dex5550's flake."""
    record = "cat /var/lib/nixfleet/flake.sha256 2>/dev/null; true"
    before = on("dex5550", record).stdout
    result = subprocess.run(
        [PYINFRA, "inventory.py", str(ROOT / "deploys" / "push.py"), "--limit", "dex5550"],
        input=typed, stdin=subprocess.DEVNULL if typed is None else None, cwd=changed_repo,
        capture_output=True, text=True, timeout=300, env=lab_env(changed_repo))
    assert result.returncode == 1, result.stderr
    assert result.stderr.endswith("nixfleet: nothing was deployed\n"), result.stderr[-2000:]
    assert "exception" not in result.stderr and "bug report" not in result.stderr
    assert "Beginning operation run" not in result.stderr
    assert result.stdout == ""
    assert on("dex5550", record).stdout == before


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
    deploy(ROOT, "switch")
    on("p510", "systemctl stop ssh.socket ssh.service", check=False)
    try:
        result, summary = deploy(changed_repo, "switch")
    finally:
        nixfleet("lab", "reset", "p510")
    assert result.returncode == 1
    assert summary["p510"]["result"] == "unreachable"
    assert summary["dex5550"]["result"] == "changed"
    assert {summary[h]["result"] for h in ("p620", "razer")} == {"unchanged"}


def copy_of_the_configuration(directory: Path) -> Path:
    shutil.copy(ROOT / "inventory.py", directory / "inventory.py")
    for name in ("group_data", "secrets", "nix/lab"):
        shutil.copytree(ROOT / name, directory / name)
    (directory / "nix" / "lab" / "faults").mkdir(exist_ok=True)
    return directory


def lock_free(host: str) -> bool:
    return on(host, "flock -n /var/lib/nixfleet true", check=False).returncode == 0


def test_a_deploy_that_finds_the_lock_held_is_one_line_naming_the_holder():
    """Another deploy holds dex5550's lock (flock on /var/lib/nixfleet, described in
    /run/nixfleet/holder): the deploy prints one line naming it and its summary, nothing of
    the protocol, pyinfra's errors or its "Success"; the row has the generation the deploy read;
    exit 1."""
    hold = ("mkdir -p /run/nixfleet /var/lib/nixfleet; exec 9</var/lib/nixfleet; flock 9; "
            "echo \"$(date +%s) 20261207-101010-7 bob@desk\" > /run/nixfleet/holder; sleep 120")
    on("dex5550", f"systemd-run --unit=nixfleet-test-holder bash -c {shlex.quote(hold)}")
    try:
        wait_until(lambda: on("dex5550", "test -s /run/nixfleet/holder", check=False)
                   .returncode == 0, 10, "the holder")
        result, summary = deploy(ROOT, "build", "--limit", "dex5550")
    finally:
        on("dex5550", "systemctl stop nixfleet-test-holder; rm -f /run/nixfleet/holder")
    reason = summary["dex5550"]["reason"]
    assert re.fullmatch(r"locked by bob@desk \(deploy 20261207-101010-7\) since "
                        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", reason), reason
    assert summary["dex5550"]["result"] == "locked"
    assert summary["dex5550"]["generation_before"] == summary["dex5550"]["generation_after"] \
        == generation("dex5550")
    said = [line for line in result.stderr.splitlines() if "locked" in line]
    assert said == [f"nixfleet: dex5550: {reason}"], result.stderr
    for noise in ("NIXFLEET ", "executed 0 commands", "No hosts remaining", "Error:"):
        assert noise not in result.stderr + result.stdout, noise
    # pyinfra's own status line of the host ("[dex5550]    Success"): it was not deployed.
    assert not re.search(r"\[dex5550\]\s+Success", result.stderr + result.stdout), result.stderr
    assert result.returncode == 1


def test_eight_deploys_at_once_one_runs_and_seven_are_locked_out(tmp_path):
    """Rounds of 8 deploys to one host started together: the one that takes the lock holds
    it (its build waits for a file) until the other 7 have answered `locked by` it. The lock's
    protocol under many more rounds is deploy.sh's own unit test (tests/unit/test_deploy_script.py,
    a round there costs a second, here eight pyinfra runs); these check the whole chain."""
    host = "p620"
    repo = copy_of_the_configuration(tmp_path)
    try:
        for round_ in range(5):
            release = f"/tmp/nixfleet-release-{uuid.uuid4().hex}"  # a new build every round
            (repo / "nix" / "lab" / "faults" / f"{host}.build-gate").write_text(
                f"{release}\n")
            deploys = [subprocess.Popen(deploy_argv("switch", "--limit", host), cwd=repo,
                                        env=lab_env(repo), text=True, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE) for _ in range(8)]
            wait_until(lambda ds=deploys: sum(d.poll() is not None for d in ds) >= 7, 120,
                       "seven deploys to answer")
            on(host, f"touch {release}")
            outputs = [d.communicate(timeout=120) for d in deploys]
            rows = [summary_of(out)[host] for out, _ in outputs]
            results = sorted(r["result"] for r in rows)
            assert results == ["changed"] + ["locked"] * 7, (round_, rows)
            holder = next(i for i, r in enumerate(rows) if r["result"] == "changed")
            found = re.search(r"/([^/\s]+)/summary\.json", outputs[holder][0])
            assert found, outputs[holder]
            holder_id = found[1]
            for row, deploy_process in zip(rows, deploys, strict=True):
                if row["result"] == "locked":
                    assert re.fullmatch(rf"locked by root@\S+ \(deploy {holder_id}\) since "
                                        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", row["reason"])
                    assert deploy_process.returncode == 1
            assert on(host, "ls -A /run/nixfleet").stdout == ""  # no leftovers
    finally:
        nixfleet("lab", "reset", host)


def test_a_deploy_killed_mid_build_frees_the_lock_at_once(tmp_path):
    """The deployer is killed (SIGKILL) while the host builds: the host's deploy ends at its
    next heartbeat (a second), so the next deploy goes in."""
    host = "razer"
    repo = copy_of_the_configuration(tmp_path)
    release = f"/tmp/nixfleet-release-{uuid.uuid4().hex}"  # a build this host never made
    (repo / "nix" / "lab" / "faults" / f"{host}.build-gate").write_text(f"{release}\n")
    killed = subprocess.Popen(deploy_argv("switch", "--limit", host), cwd=repo,
                              env=lab_env(repo), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: on(host, "pgrep -f build-toplevel.py", check=False).returncode == 0,
                   60, "the build to start")
        assert not lock_free(host)
        killed.kill()
        killed.wait()
        wait_until(lambda: lock_free(host), 5, "the lock to be free")
        result, summary = deploy(ROOT, "switch", "--limit", host)
        assert result.returncode == 0, result.stdout + result.stderr
        assert summary[host]["result"] in ("changed", "unchanged")
        assert on(host, "ls -A /run/nixfleet").stdout == ""
    finally:
        on(host, f"touch {release}")  # lets the orphaned build finish


DAMAGE = {
    "a stray nested directory": ("mkdir -p /etc/nixos/nixos && cp /etc/nixos/flake.nix "
                                 "/etc/nixos/nixos/", ["added nixos/flake.nix"], True),
    "a deleted file": ("rm /etc/nixos/toplevel.nix", ["deleted toplevel.nix"], False),
    "an edited file": ("echo '# local edit' >> /etc/nixos/flake.nix", ["edited flake.nix"], True),
    "a wrong record": ("echo 'wrong' > /var/lib/nixfleet/flake.sha256", None, False),
    "a wrong last deploy": ("sed -i 's/^[0-9a-f]*/0000/' /var/lib/nixfleet/last-deploy", None,
                            False),
    "an empty stray directory": ("mkdir /etc/nixos/empty", ["added empty"], True),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_flake_directory_is_converged_by_the_next_deploy(damage):
    host = "dex5550"
    command, drift, backed_up = DAMAGE[damage]
    deploy(ROOT, "switch", "--limit", host)
    wanted = on(host, "cat /var/lib/nixfleet/flake.sha256").stdout
    gen = generation(host)
    on(host, command)
    result, summary = deploy(ROOT, "switch", "--limit", host)
    assert result.returncode == 0, result.stdout + result.stderr
    row = summary[host]
    assert row["result"] in ("changed", "unchanged") and generation(host) == gen
    listing = on(host, "cd /etc/nixos && find . -type f -printf '%P\\0' | LC_ALL=C sort -z "
                       "| xargs -0 sha256sum --").stdout
    assert listing == wanted == on(host, "cat /var/lib/nixfleet/flake.sha256").stdout
    assert on(host, "find /etc/nixos -mindepth 1 -type d -empty").stdout == ""
    if drift is not None:
        assert row["drift"] == drift
    if backed_up:
        assert row["backup"].startswith("/etc/nixos.nixfleet-backup-")
        assert on(host, f"test -d {row['backup']}", check=False).returncode == 0
        assert "kept what it replaced in" in result.stdout
        on(host, f"rm -rf {row['backup']}")
    else:
        assert row["backup"] is None
    _, summary = deploy(ROOT, "switch", "--limit", host)
    assert summary[host]["result"] == "unchanged" and summary[host]["drift"] == []
    assert on(host, "ls -A /run/nixfleet").stdout == ""

"""nixfleet's host-side deploy step (nixfleet/remote/deploy.sh with health.sh) run for real,
unprivileged: its paths under tmp_path, stand-ins for nix, nix-env, systemd-run and systemctl
(tests/unit/deploy_script_support.py), its output read with nixfleet.remote.protocol."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nixfleet.flake import flake_hash, manifest
from nixfleet.outcome import Action, Result
from nixfleet.remote import protocol
from tests.unit.deploy_script_support import (
    DIFF,
    HOSTNAME,
    OWNER,
    WOULD,
    Host,
    holders,
    lock_is_free,
)

FILES = {"flake.nix": b"{ outputs = _: { }; }\n", "hosts/web1.json": b'{"role": "web"}\n'}
NEWER = {**FILES, "flake.nix": b"{ outputs = _: { x = 1; }; }\n"}


@pytest.fixture
def host(tmp_path: Path) -> Host:
    """A host that runs system-a as generation 1; `nix build` gives system-b."""
    host = Host(tmp_path)
    host.builds(host.system("b", size=3145728))
    return host


def store(host: Host, name: str) -> Path:
    return host.store / f"system-{name}"


# --- the actions ----------------------------------------------------------------------------


def test_switch_sets_a_new_generation_and_activates_it(host: Host):
    run = host.deploy(Action.SWITCH, FILES)
    out = run.outcome
    assert (run.returncode, out.result, out.reason) == (0, Result.CHANGED, "switch done")
    assert (out.generation_before, out.generation_after) == (1, 2)
    assert host.generation() == 2 and host.profile_system() == store(host, "b")
    assert host.current_system() == store(host, "b")
    assert host.activations() == ["system-b switch"]
    assert out.toplevel == str(store(host, "b")) and run.values["built_on"] == "target"
    assert out.diff == [DIFF]  # the colours of diff-closures taken out
    assert (out.closure_before, out.closure_after, out.closure_delta) == \
        (1048576, 3145728, "+2.0 MiB")
    assert out.flake == "changed" and host.flake_files() == FILES
    assert set(out.phases) == {"lock", "flake", "build", "activate", "gate"}
    attr = f'path:{host.flake}#nixosConfigurations."{HOSTNAME}".config.system.build.toplevel'
    assert host.calls("nix build") == [f"nix build {attr} --no-link --json"]
    assert (host.state / "last-deploy").read_text() == f"{flake_hash(FILES)} {out.toplevel}\n"
    assert list(host.run.iterdir()) == []  # no holder file, no scripts left


def test_test_activates_without_touching_the_profile(host: Host):
    run = host.deploy(Action.TEST, FILES)
    assert (run.outcome.result, run.outcome.reason) == (Result.CHANGED, "test done")
    assert host.current_system() == store(host, "b")
    assert host.generation() == 1 and host.profile_system() == store(host, "a")
    assert (run.outcome.generation_before, run.outcome.generation_after) == (1, 1)
    assert host.activations() == ["system-b test"]


def test_boot_sets_the_profile_and_leaves_the_running_system(host: Host):
    run = host.deploy(Action.BOOT, FILES)
    assert (run.outcome.result, run.outcome.reason) == (Result.CHANGED, "boot done")
    assert host.generation() == 2 and host.profile_system() == store(host, "b")
    assert host.current_system() == store(host, "a")
    assert host.activations() == ["system-b boot"]
    assert "gate" not in run.outcome.phases  # no health gate: nothing changed live


def test_build_keeps_a_gc_root_and_activates_nothing(host: Host):
    run = host.deploy(Action.BUILD, FILES)
    assert (run.outcome.result, run.outcome.reason) == (Result.BUILT, "built, not activated")
    assert run.outcome.toplevel == str(store(host, "b"))
    assert host.activations() == [] and host.generation() == 1
    assert host.current_system() == store(host, "a")
    assert host.calls("nix-store") == [
        f"nix-store --add-root {host.state}/last-build --indirect --realise {store(host, 'b')}"]


def test_dry_activate_reports_what_would_change(host: Host):
    run = host.deploy(Action.DRY_ACTIVATE, FILES)
    assert (run.outcome.result, run.outcome.reason) == \
        (Result.BUILT, "dry-activate: nothing was changed")
    assert run.outcome.would == list(WOULD)
    assert host.activations() == ["system-b dry-activate"]
    assert host.generation() == 1 and host.current_system() == store(host, "a")
    assert host.calls("nix-store") == []


def test_a_failed_dry_activate_fails(host: Host):
    host.builds(host.system("broken", code=4))
    run = host.deploy(Action.DRY_ACTIVATE, FILES)
    assert (run.returncode, run.outcome.result, run.outcome.reason) == \
        (1, Result.FAILED, "switch-to-configuration dry-activate exited 4")


def test_push_writes_the_flake_and_builds_nothing(host: Host):
    run = host.deploy(Action.PUSH, FILES)
    assert (run.returncode, run.outcome.result, run.outcome.reason) == \
        (0, Result.CHANGED, "flake pushed")
    assert host.flake_files() == FILES and run.outcome.flake == "changed"
    assert host.calls("nix") == [] and host.activations() == []
    assert (run.outcome.generation_before, run.outcome.generation_after) == (1, 1)


def test_a_failed_build_fails_with_nix_s_last_line(host: Host):
    host.build_fails("error: attribute 'web1' missing")
    run = host.deploy(Action.SWITCH, FILES)
    assert (run.returncode, run.outcome.result) == (1, Result.FAILED)
    assert run.outcome.reason == "build failed: error: attribute 'web1' missing"
    assert host.activations() == [] and host.generation() == 1


def test_a_failed_build_names_nix_s_error_not_its_hint(host: Host):
    # Nix 2.8 ends an evaluation error with a hint and an empty line after the error.
    host.build_fails("error: builder for '/nix/store/x.drv' failed with exit code 1\n\n"
                     "(use '--show-trace' to show detailed location information)")
    run = host.deploy(Action.SWITCH, FILES)
    assert run.outcome.reason == \
        "build failed: error: builder for '/nix/store/x.drv' failed with exit code 1"


def test_a_system_built_by_the_deployer_is_not_built_again(host: Host):
    prebuilt = host.system("local")
    run = host.deploy(Action.SWITCH, FILES, prebuilt=prebuilt)
    assert (run.outcome.result, run.values["built_on"]) == (Result.CHANGED, "deployer")
    assert host.calls("nix build") == [] and host.current_system() == prebuilt
    missing = host.deploy(Action.SWITCH, NEWER, prebuilt=host.store / "system-gone")
    assert (missing.outcome.result, missing.outcome.reason) == (
        Result.FAILED, f"the system built elsewhere ({host.store}/system-gone) is not in the store")


def test_rollback_mode_switches_to_an_earlier_generation(host: Host):
    host.deploy(Action.SWITCH, FILES)
    back = host.deploy(Action.ROLLBACK)
    assert (back.returncode, back.outcome.result, back.outcome.reason) == \
        (0, Result.CHANGED, "rolled back to generation 1")
    assert (back.outcome.generation_before, back.outcome.generation_after) == (2, 1)
    assert host.current_system() == store(host, "a") and host.profile_system() == store(host, "a")
    forth = host.deploy(Action.ROLLBACK, target_generation=2)
    assert (forth.outcome.result, forth.outcome.reason) == \
        (Result.CHANGED, "rolled back to generation 2")
    assert host.current_system() == store(host, "b") and host.generation() == 2
    assert host.activations() == ["system-b switch", "system-a switch", "system-b switch"]


def test_rollback_mode_without_an_earlier_generation_fails(host: Host):
    none = host.deploy(Action.ROLLBACK)
    assert (none.returncode, none.outcome.result, none.outcome.reason) == \
        (1, Result.FAILED, "no generation before 1 to roll back to")
    missing = host.deploy(Action.ROLLBACK, target_generation=9)
    assert missing.outcome.reason == "no generation 9 to roll back to"
    assert host.generation() == 1 and host.activations() == []


def test_health_mode_runs_the_gate_alone(host: Host):
    ok = host.deploy(Action.SWITCH, tarball=None, **protocol.health_arguments([], 1))
    assert (ok.returncode, ok.values["gate"]) == (0, "passed")
    sick = host.deploy(Action.SWITCH, tarball=None, mode="health", health_timeout=0,
                       checks=f"file\t1\ttest -e {host.root}/nothing\n")
    assert (sick.returncode, sick.values["gate"]) == (1, "failed")
    assert sick.values["reason"] == "health check failed: check file: command failed"


# --- nothing to do --------------------------------------------------------------------------


def test_a_second_switch_of_the_same_flake_is_a_no_op(host: Host):
    host.deploy(Action.SWITCH, FILES)
    again = host.deploy(Action.SWITCH, FILES)
    assert again.outcome.result == Result.UNCHANGED and again.outcome.reason == "already active"
    assert again.outcome.flake == "unchanged"
    assert (again.outcome.generation_before, again.outcome.generation_after) == (2, 2)
    assert len(host.calls("nix build")) == 1  # decided from last-deploy, before building
    assert not (host.profile.parent / "system-3-link").exists()
    assert host.activations() == ["system-b switch"]
    # A host that no longer runs it (rolled back by hand) is switched again.
    host.deploy(Action.ROLLBACK)
    third = host.deploy(Action.SWITCH, FILES)
    assert third.outcome.result == Result.CHANGED and host.current_system() == store(host, "b")


def test_a_second_boot_is_a_no_op(host: Host):
    host.deploy(Action.BOOT, FILES)
    again = host.deploy(Action.BOOT, FILES)
    assert (again.outcome.result, again.outcome.reason) == \
        (Result.UNCHANGED, "already the boot default")
    assert len(host.calls("nix build")) == 1 and host.generation() == 2


def test_a_build_that_gives_the_running_system_is_already_active(host: Host):
    host.builds(store(host, "a"))
    run = host.deploy(Action.SWITCH, FILES)
    assert (run.outcome.result, run.outcome.reason) == (Result.UNCHANGED, "already active")
    assert host.activations() == [] and host.generation() == 1
    assert len(host.calls("nix build")) == 1


# --- the lock -------------------------------------------------------------------------------


def _wait_for(condition: Callable[[], object], failure: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.01)


LOCKED = re.compile(r"locked by (\S+) \(deploy (\S+)\) since "
                    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")


def test_eight_deploys_at_once_one_runs_and_seven_are_told_who_holds_the_lock(host: Host):
    """The lock's protocol under many rounds (the lab's test of the whole chain, eight pyinfra
    deploys a round, runs a few)."""
    host.build_takes(1)
    rounds = 20
    for round_ in range(rounds):
        files = {**FILES, "flake.nix": f"round {round_}".encode()}
        host.builds(host.system(f"round{round_}"))
        tarball = host.tarball(files)  # what every deployer saw before they all started
        started = [host.start(Action.SWITCH, files, tarball=tarball) for _ in range(8)]
        runs = [host.finished(Action.SWITCH, *s) for s in started]
        winners = [r for r in runs if r.outcome.result == Result.CHANGED]
        losers = [r for r in runs if r.outcome.result == Result.LOCKED]
        assert len(winners) == 1 and len(losers) == 7, [r.outcome for r in runs]
        for loser in losers:
            assert loser.returncode == protocol.EXIT_LOCKED
            match = LOCKED.fullmatch(loser.outcome.reason)
            assert match, loser.outcome.reason
            assert match.group(1, 2) == (OWNER, winners[0].deploy_id)
            since = datetime.strptime(match[3], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            assert abs(datetime.now(UTC) - since) < timedelta(minutes=1)
        assert host.current_system() == store(host, f"round{round_}")
        assert list(host.run.iterdir()) == []
    assert host.generation() == rounds + 1


def test_a_locked_out_deploy_removes_its_uploaded_delta(host: Host):
    host.build_takes(30)
    holder, _ = host.start(Action.SWITCH, FILES)
    try:
        _wait_for(lambda: host.calls("nix build"), "the first deploy never started building")
        tarball = host.tarball({**FILES, "flake.nix": b"other"}, upload=True)
        run = host.deploy(Action.SWITCH, FILES, tarball=tarball)
        assert run.outcome.result == Result.LOCKED
        assert not Path(tarball).exists()
    finally:
        host.release_builds()
        holder.wait(timeout=30)


def test_a_contender_never_finds_the_lock_without_its_holder(host: Host):
    """Holders come and go quickly while contenders ask: each `locked by` names a deploy."""
    for round_ in range(3):
        files = {**FILES, "flake.nix": f"quick {round_}".encode()}
        host.builds(host.system(f"quick{round_}"))
        tarball = host.tarball(files)
        started = [host.start(Action.SWITCH, files, tarball=tarball) for _ in range(8)]
        for run in (host.finished(Action.SWITCH, *s) for s in started):
            if run.outcome.result == Result.LOCKED:
                assert LOCKED.fullmatch(run.outcome.reason), run.outcome.reason
                assert "(deploy ?)" not in run.outcome.reason


def test_nothing_the_deploy_started_holds_its_connection_after_it_ends(host: Host):
    """The deployer's SSH command ends when every holder of the channel has closed it: a
    process left behind with it (the heartbeat's sleep) would make every deploy wait."""
    arguments = host.arguments(Action.SWITCH, FILES)
    process = subprocess.Popen(protocol.argv(arguments), env=host.env(), text=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert process.wait(timeout=60) == 0
    pipes = {f"pipe:[{os.fstat(p.fileno()).st_ino}]" for p in (process.stdout, process.stderr)}
    others = [f"{proc.name} {(proc / 'cmdline').read_bytes()!r}"
              for proc in Path("/proc").iterdir() if proc.name.isdigit()
              and proc.name != str(os.getpid()) and _holds(proc, pipes)]
    assert others == []


def _holds(proc: Path, targets: set[str]) -> bool:
    with contextlib.suppress(OSError):
        return any(os.readlink(fd) in targets for fd in (proc / "fd").iterdir())
    return False


def test_a_holder_killed_mid_build_frees_the_lock(host: Host):
    host.build_takes(30)
    process, _ = host.start(Action.SWITCH, FILES)
    try:
        _wait_for(lambda: host.calls("nix build"), "the first deploy never started building")
        os.kill(process.pid, signal.SIGKILL)  # bash itself: the direct child
        process.wait(timeout=10)
        # Free the moment the holder is gone: no child of it may keep the lock's descriptor.
        free = lock_is_free(host.state)
        assert free, f"the killed deploy's lock is still held by {holders(host.state)}"
    finally:
        host.release_builds()  # the orphaned stand-in build ends too
    started = time.monotonic()
    run = host.deploy(Action.SWITCH, FILES)
    assert (run.outcome.result, run.outcome.reason) == (Result.CHANGED, "switch done")
    assert time.monotonic() - started < 5
    assert list(host.run.iterdir()) == []


def test_a_build_orphaned_by_a_killed_deploy_cannot_answer_for_the_next(host: Host):
    # Deploy 1 (the flake FILES, building system-x) is killed while it builds; its build goes
    # on and ends while deploy 2 (NEWER, building system-y) is reading its own build's output.
    host.build_hands_off()
    host.builds(host.system("x"))
    process, _ = host.start(Action.SWITCH, FILES)
    _wait_for(lambda: (host.root / "first-build").exists(), "the first build never started")
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    _wait_for(lambda: lock_is_free(host.state), "the killed deploy still holds the lock")
    host.builds(host.system("y"))
    run = host.deploy(Action.SWITCH, NEWER)
    assert run.outcome.toplevel == str(store(host, "y")), \
        "deploy 2 read the orphaned build's output (both write state_dir/build.out)"
    assert host.current_system() == store(host, "y")


def test_a_deploy_whose_deployer_is_gone_ends_and_frees_the_lock(host: Host):
    host.build_takes(30)
    arguments = host.arguments(Action.SWITCH, FILES)
    process = subprocess.Popen(protocol.argv(arguments), env=host.env(), text=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: host.calls("nix build"), "the deploy never started building")
        assert process.stdout is not None
        process.stdout.close()  # the SSH connection dropped: the next heartbeat line fails
        assert process.wait(timeout=5) != 0
    finally:
        host.release_builds()
    assert lock_is_free(host.state) and list(host.run.iterdir()) == []
    assert host.activations() == []


# --- the flake directory --------------------------------------------------------------------


def test_a_delta_writes_changed_files_and_removes_unlisted_ones(host: Host):
    old = {**FILES, "hosts/old/db1.json": b"{}", "modules/x.nix": b"{ }"}
    host.deploy(Action.PUSH, old)
    run = host.deploy(Action.PUSH, NEWER)
    assert run.outcome.result == Result.CHANGED and run.outcome.flake == "changed"
    assert host.flake_files() == NEWER
    assert not (host.flake / "hosts" / "old").exists() and not (host.flake / "modules").exists()
    assert host.record() == manifest(NEWER)
    assert run.outcome.drift == [] and run.outcome.backup is None
    assert host.leftovers() == []


def test_a_changed_file_is_a_new_file_not_written_through_a_link(host: Host):
    # The new directory starts as hard links to the old one's files: a changed file must be
    # replaced, never written in place (that would change the old file's other links).
    host.deploy(Action.PUSH, FILES)
    elsewhere = host.root / "flake.nix.link"
    os.link(host.flake / "flake.nix", elsewhere)
    run = host.deploy(Action.PUSH, NEWER)
    assert run.outcome.result == Result.CHANGED and host.flake_files() == NEWER
    assert elsewhere.read_bytes() == FILES["flake.nix"]
    assert (host.flake / "hosts" / "web1.json").stat().st_nlink == 1  # the old one is gone


def test_an_uploaded_delta_is_applied_and_removed(host: Host):
    tarball = host.tarball(FILES, upload=True)
    run = host.deploy(Action.PUSH, FILES, tarball=tarball)
    assert run.outcome.result == Result.CHANGED and host.flake_files() == FILES
    assert not Path(tarball).exists()


def test_a_delta_computed_against_a_stale_view_changes_nothing(host: Host):
    host.deploy(Action.PUSH, FILES)
    # The deployer believed the host already had NEWER's flake.nix: it sends no file.
    stale = host.tarball(NEWER, seen=NEWER)
    run = host.deploy(Action.PUSH, NEWER, tarball=stale)
    assert (run.returncode, run.outcome.result) == (1, Result.FAILED)
    assert "changed since this deploy read it" in run.outcome.reason
    assert host.flake_files() == FILES and host.record() == manifest(FILES)
    assert host.leftovers() == []
    # Nothing sent because the deployer saw NEWER there: checked again under the lock.
    unsent = host.deploy(Action.SWITCH, NEWER, tarball="-")
    assert unsent.outcome.result == Result.FAILED and host.calls("nix") == []
    assert "changed since this deploy read it" in unsent.outcome.reason


def _nested_flake(flake: Path) -> None:
    (flake / "nixos").mkdir()
    (flake / "nixos" / "flake.nix").write_text("a copy of the flake\n")


def _edit(flake: Path) -> None:
    (flake / "hosts" / "web1.json").write_text("edited by hand\n")


def _empty_directory(flake: Path) -> None:
    (flake / "scratch").mkdir()


@pytest.mark.parametrize(("damage", "drift", "kept"), [
    (_nested_flake, ["added nixos/flake.nix"], {"nixos/flake.nix": b"a copy of the flake\n"}),
    (_edit, ["edited hosts/web1.json"], {"hosts/web1.json": b"edited by hand\n"}),
    (lambda flake: (flake / "flake.nix").unlink(), ["deleted flake.nix"], None),
    (_empty_directory, ["added scratch"], {}),
], ids=["nested-flake", "edited", "deleted", "empty-directory"])
def test_damage_is_reported_backed_up_and_converged(host: Host, damage, drift, kept):
    host.deploy(Action.PUSH, FILES)
    damage(host.flake)
    run = host.deploy(Action.PUSH, FILES)  # the delta computed from the damaged directory
    assert (run.outcome.result, run.outcome.drift) == (Result.CHANGED, drift)
    assert host.flake_files() == FILES and host.strays() == []
    assert host.record() == manifest(FILES)
    if kept is None:
        assert run.outcome.backup is None and host.leftovers() == []
    else:
        backup = Path(run.outcome.backup or "")
        assert backup == host.flake.parent / f"nixos.nixfleet-backup-{run.deploy_id}"
        assert {k: (backup / k).read_bytes() for k in kept} == kept
        assert host.leftovers() == [backup.name]


RECORD_DAMAGED = "record damaged: the whole directory is compared with this repository"


@pytest.mark.parametrize("garbage", [
    "\x00\x01 not a record at all\n{ outputs = 1; }\n",
    "deadbeef  flake.nix\n",  # a short hash
    None,  # a path twice
], ids=["garbage", "short-hash", "path-twice"])
def test_a_damaged_record_is_said_and_the_directory_compared_with_what_is_wanted(
        host: Host, garbage):
    host.deploy(Action.PUSH, FILES)
    (host.flake / "hosts" / "web1.json").write_text("edited by hand\n")
    (host.flake / "notes.txt").write_text("mine\n")
    (host.flake / "flake.nix").unlink()
    record = host.state / "flake.sha256"
    text = record.read_text()
    record.write_text(text + text.splitlines()[0] + "\n" if garbage is None else
                      text[:70] + garbage + text[70:])
    run = host.deploy(Action.PUSH, FILES)
    # Named from what is wanted: no piece of the garbage is a "deleted" file, and the edited
    # file is "edited", not "added".
    assert (run.outcome.result, run.outcome.drift) == (Result.CHANGED, [
        RECORD_DAMAGED, "deleted flake.nix", "edited hosts/web1.json", "added notes.txt"])
    assert host.flake_files() == FILES and host.record() == manifest(FILES)
    assert run.outcome.backup is not None
    # The next deploy finds a sound record again.
    assert host.deploy(Action.PUSH, FILES).outcome.drift == []


def test_a_damaged_record_where_nothing_is_sent_is_rewritten(host: Host):
    host.deploy(Action.PUSH, FILES)
    (host.state / "flake.sha256").write_text("garbage\n")
    run = host.deploy(Action.PUSH, FILES, tarball="-")
    assert (run.outcome.result, run.outcome.drift) == (Result.CHANGED, [RECORD_DAMAGED])
    assert host.record() == manifest(FILES) and run.outcome.backup is None


def test_the_newest_three_backups_are_kept_and_the_summary_says_which_went(host: Host):
    host.deploy(Action.PUSH, FILES)
    backups = []
    for round_ in range(5):
        (host.flake / "hosts" / "web1.json").write_text(f"edit {round_}\n")
        run = host.deploy(Action.PUSH, FILES)
        backups.append(run.outcome.backup)
        removed = backups[:-3]
        assert run.outcome.backups_removed == (removed[-1:] if round_ >= 3 else []), round_
        assert sorted(host.leftovers()) == sorted(Path(str(b)).name for b in backups[-3:])
    assert run.values["backup_removed"] == backups[1]


def test_a_swap_cut_short_after_the_old_directory_moved_is_undone(host: Host):
    host.deploy(Action.PUSH, FILES)
    delta = host.tarball(NEWER)  # computed before the cut
    host.flake.rename(host.flake.parent / "nixos.nixfleet-old")
    (host.flake.parent / "nixos.nixfleet-new").mkdir()
    (host.flake.parent / "nixos.nixfleet-new" / "flake.nix").write_text("half written")
    run = host.deploy(Action.PUSH, NEWER, tarball=delta)
    assert run.outcome.result == Result.CHANGED and run.outcome.drift == []
    assert host.flake_files() == NEWER and host.leftovers() == []


def test_a_leftover_new_directory_is_removed(host: Host):
    host.deploy(Action.PUSH, FILES)
    (host.flake.parent / "nixos.nixfleet-new").mkdir()
    (host.flake.parent / "nixos.nixfleet-new" / "junk").write_text("half written")
    run = host.deploy(Action.PUSH, FILES)
    assert (run.outcome.result, run.outcome.flake) == (Result.CHANGED, "unchanged")
    assert host.flake_files() == FILES and host.leftovers() == []


# --- rollback after a failed activation or gate ---------------------------------------------


@pytest.mark.parametrize("action", [Action.SWITCH, Action.TEST])
def test_a_failed_activation_rolls_back_at_once(host: Host, action: Action):
    host.builds(host.system("broken", code=4))
    run = host.deploy(action, FILES, checks=host.healthy_check(), watchdog=30)
    out = run.outcome
    assert (run.returncode, out.result) == (1, Result.ROLLED_BACK)
    assert out.reason == f"switch-to-configuration {action} exited 4 (failed units: none)"
    assert run.values["regate"] == "passed"
    assert host.current_system() == store(host, "a")
    assert host.generation() == 1 and out.generation_after == 1
    assert host.activations() == [f"system-broken {action}", f"system-a {action}"]
    assert host.calls("systemctl stop") == [
        f"systemctl stop nixfleet-confirm-{run.deploy_id}.timer"]
    assert not (host.state / "last-deploy").exists()


# --- what was failing before the deploy does not judge it ---------------------------------


def test_a_unit_failed_before_the_switch_is_a_warning_not_a_failure(host: Host):
    # As NixOS's switch-to-configuration: exit 4 because a unit is failed, one that was failed
    # already (thermald on an AMD host).
    host.units_failed("thermald.service")
    host.builds(host.system("b2", code=4))
    run = host.deploy(Action.SWITCH, FILES, checks=host.healthy_check().replace(
        str(host.current), str(host.store / "system-a")), watchdog=30)
    out = run.outcome
    assert (run.returncode, out.result, out.reason) == (0, Result.CHANGED, "switch done")
    assert out.warnings == ["unit thermald.service was failing before this deploy and still "
                            "is: it does not judge this deploy"]
    assert protocol.failing_before(run.stdout.splitlines()) == ["unit thermald.service"]
    assert host.current_system() == store(host, "b2") and host.generation() == 2


def test_with_strict_units_a_unit_failed_before_fails_the_switch(host: Host):
    host.units_failed("thermald.service")
    host.builds(host.system("b2", code=4))
    run = host.deploy(Action.SWITCH, FILES, strict_units=1)
    assert (run.returncode, run.outcome.result) == (1, Result.ROLLED_BACK)
    assert run.outcome.reason == \
        "switch-to-configuration switch exited 4 (failed units: thermald.service)"
    assert host.generation() == 1


def test_a_unit_that_newly_fails_still_rolls_back(host: Host):
    host.units_failed("thermald.service")
    host.builds(host.system("broken", code=4, fails="broken.service"))
    run = host.deploy(Action.SWITCH, FILES)
    assert (run.returncode, run.outcome.result) == (1, Result.ROLLED_BACK)
    assert run.outcome.reason == \
        "switch-to-configuration switch exited 4 (failed units: broken.service)"
    assert host.current_system() == store(host, "a")


def test_a_check_failing_before_and_after_does_not_roll_back(host: Host):
    checks = f"backup-disk\t1\ttest -e {host.root}/mounted\n"
    run = host.deploy(Action.SWITCH, FILES, checks=checks)
    out = run.outcome
    assert (run.returncode, out.result) == (0, Result.CHANGED)
    assert out.warnings == ["check backup-disk was failing before this deploy and still is: "
                            "it does not judge this deploy"]
    assert host.current_system() == store(host, "b")


def test_a_check_that_passed_before_and_fails_after_rolls_back(host: Host):
    run = host.deploy(Action.SWITCH, FILES, checks=host.healthy_check())
    assert run.outcome.result == Result.ROLLED_BACK and run.outcome.warnings == []


def test_a_check_whose_command_is_gone_is_named_broken(host: Host):
    # The check's program came with the old system; the new one does not have it.
    probe = store(host, "a") / "bin" / "probe"
    probe.write_text("#!/bin/sh\nexit 0\n")
    probe.chmod(0o755)
    run = host.deploy(Action.SWITCH, FILES, checks=f"probe\t1\t{host.current}/bin/probe\n")
    assert run.outcome.result == Result.ROLLED_BACK
    assert run.outcome.reason == ("health check failed: check probe is broken: its command "
                                  "was not found or cannot run")


def test_a_rollback_that_fails_is_its_own_result(host: Host):
    host.builds(host.system("broken", code=4, fails="broken.service"))
    host.activation_exits(store(host, "a"), 1)  # say ENOSPC writing the boot loader
    run = host.deploy(Action.SWITCH, FILES)
    out = run.outcome
    assert (run.returncode, out.result) == (2, Result.ROLLBACK_FAILED)
    assert out.reason == (
        "switch-to-configuration switch exited 4 (failed units: broken.service); the rollback "
        "failed too: switch-to-configuration switch exited 1 (failed units: broken.service); "
        "it runs the system from before this deploy; it boots generation 1 next")
    assert "regate" not in run.values


# --- the journal, a lost connection, a killed step ------------------------------------------


def test_every_protocol_line_also_goes_to_the_journal(host: Host):
    first = host.deploy(Action.SWITCH, FILES)
    journal = host.state / f"result-{first.deploy_id}"
    assert journal.read_text().splitlines() == [
        line for line in first.stdout.splitlines() if line.startswith(protocol.PREFIX)]
    second = host.deploy(Action.SWITCH, NEWER)  # the last deploy's journal only
    assert sorted(p.name for p in host.state.glob("result-*")) == \
        [f"result-{second.deploy_id}"]


def test_a_killed_deploy_step_closes_its_output_and_leaves_no_holder(host: Host):
    host.build_takes(30)
    arguments = host.arguments(Action.SWITCH, FILES)
    process = subprocess.Popen(protocol.argv(arguments), env=host.env(), text=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: host.calls("nix build"), "the deploy never started building")
        assert (host.run / "holder").exists()
        process.kill()  # SIGKILL: no trap of deploy.sh runs
        started = time.monotonic()
        assert process.stdout is not None
        process.stdout.read()  # end of file: nothing of the step holds its output any more
        assert time.monotonic() - started < 3
        _wait_for(lambda: not (host.run / "holder").exists(), "the holder was left behind")
    finally:
        host.release_builds()
        process.wait()
    journal = (host.state / f"result-{arguments['deploy_id']}").read_text()
    assert "NIXFLEET result=" not in journal and "NIXFLEET phase_flake=" in journal
    _wait_for(lambda: lock_is_free(host.state), "the lock was not freed")
    assert host.deploy(Action.SWITCH, FILES).outcome.result == Result.CHANGED


def test_a_failed_boot_activation_rolls_the_profile_back(host: Host):
    host.builds(host.system("broken", code=4))
    run = host.deploy(Action.BOOT, FILES)
    assert (run.outcome.result, run.outcome.reason) == \
        (Result.ROLLED_BACK, "switch-to-configuration boot exited 4 (failed units: none)")
    assert host.generation() == 1 and host.current_system() == store(host, "a")
    assert "regate" not in run.values
    # The old default goes back into the bootloader too, not only into the profile.
    assert host.activations() == ["system-broken boot", "system-a boot"]


def test_a_failed_health_gate_rolls_back(host: Host):
    run = host.deploy(Action.SWITCH, FILES, checks=host.healthy_check())
    assert (run.returncode, run.outcome.result) == (1, Result.ROLLED_BACK)
    assert run.outcome.reason == "health check failed: check healthy: command failed"
    assert run.values["regate"] == "passed"
    assert host.current_system() == store(host, "a") and host.generation() == 1
    assert host.activations() == ["system-b switch", "system-a switch"]


def test_without_rollback_a_failed_gate_leaves_the_new_system(host: Host):
    run = host.deploy(Action.SWITCH, FILES, checks=host.healthy_check(), rollback=0)
    assert (run.returncode, run.outcome.result) == (1, Result.FAILED)
    assert run.outcome.reason == "health check failed: check healthy: command failed"
    assert host.current_system() == store(host, "b") and host.generation() == 2
    assert "regate" not in run.values and host.activations() == ["system-b switch"]


# --- the watchdog ---------------------------------------------------------------------------


def test_a_switch_arms_a_watchdog_whose_command_reverts_it(host: Host):
    run = host.deploy(Action.SWITCH, FILES, watchdog=30)
    unit = f"nixfleet-confirm-{run.deploy_id}"
    assert run.outcome.result == Result.CHANGED and run.values["watchdog"] == unit
    assert len(host.calls("systemd-run")) == 1
    args = (host.root / "systemd-run.args").read_text().splitlines()
    assert args[:-1] == ["--quiet", f"--unit={unit}", "--on-active=30s",
                         f"--description=nixfleet: back to the system before deploy "
                         f"{run.deploy_id} unless confirmed",
                         "--timer-property=AccuracySec=100ms", "--property=Type=oneshot",
                         "/bin/sh", "-c"]
    revert = args[-1]
    assert ";" not in revert  # systemd escapes it when it reloads the transient unit
    assert f"{host.bin}/nix-env -p {host.profile} --switch-generation 1" in revert
    assert f"{store(host, 'a')}/bin/switch-to-configuration switch" in revert
    assert list(host.run.iterdir()) == []  # the command is inline: nothing left to run
    # What the timer would run: back to generation 1 and system-a, and a note of it.
    os.spawnvpe(os.P_WAIT, "/bin/sh", ["/bin/sh", "-c", revert], host.env())
    assert host.generation() == 1 and host.current_system() == store(host, "a")
    assert (host.state / f"rolled-back-{run.deploy_id}").read_text() == \
        "no confirmation within 30s\n"


def test_a_test_watchdog_reverts_without_the_profile(host: Host):
    host.deploy(Action.TEST, FILES, watchdog=30)
    revert = (host.root / "systemd-run.args").read_text().splitlines()[-1]
    assert revert.startswith(f"{store(host, 'a')}/bin/switch-to-configuration test || true")
    assert "nix-env" not in revert


def test_no_watchdog_when_none_is_asked(host: Host):
    run = host.deploy(Action.SWITCH, FILES, watchdog=0)
    assert run.outcome.result == Result.CHANGED and "watchdog" not in run.values
    assert host.calls("systemd-run") == []

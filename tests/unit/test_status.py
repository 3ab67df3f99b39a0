"""`nixfleet status` without hosts: the parsers of what a host keeps (the flake record, the
last deploy's journal, the verification record), how a host's answer is judged, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nixfleet.commands.status import Asked, judge
from nixfleet.facts.errors import FactParseError
from nixfleet.facts.parsers.status import (
    parse_journals,
    parse_record,
    parse_verified,
    verified_line,
)
from nixfleet.facts.status import parse_status, status_command

ROOT = Path(__file__).resolve().parents[2]
A, B, C = "a" * 64, "b" * 64, "c" * 64
RUNNING = "/nix/store/" + "r" * 32 + "-nixos-system-razer-26.05.lab"
OTHER = "/nix/store/" + "o" * 32 + "-nixos-system-razer-26.05.lab"


def test_a_record_is_sha256sum_lines():
    assert parse_record(f"{A}  flake.nix\n{B}  hosts/razer.json\n") == {
        "flake.nix": A, "hosts/razer.json": B}
    assert parse_record("") == {}


@pytest.mark.parametrize("text", [
    f"{A}  flake.nix\ngarbage here\n",         # not a record line
    f"{A[:-1]}  flake.nix\n",                 # a short hash
    f"{A.upper()}  flake.nix\n",               # not sha256sum's hex
    f"{A} flake.nix\n",                        # one space
    f"{A}  flake.nix\n{B}  flake.nix\n",       # a path twice
    f"{A}  \n",                                # no path
    "\x00\x01\x02binary",
])
def test_a_damaged_record_is_none(text):
    assert parse_record(text) is None


def test_the_verification_record():
    record = parse_verified(verified_line(RUNNING, 1700000000, True))
    assert record is not None and record.toplevel == RUNNING and record.time == 1700000000
    assert record.passed
    assert not parse_verified(verified_line(RUNNING, 1, False)).passed  # type: ignore[union-attr]
    assert parse_verified("") is None


@pytest.mark.parametrize("text", ["garbage", f"{RUNNING} soon passed", f"{RUNNING} 1 maybe",
                                  "relative/x 1 passed"])
def test_a_damaged_verification_record_is_one_error(text):
    with pytest.raises(FactParseError):
        parse_verified(text)


def test_the_newest_journal_is_the_last_deploy():
    lines = ["file 20261207-101010-1", "NIXFLEET result=failed",
             "file 20261207-121212-2", "NIXFLEET started=1700000000 alice@deployer",
             "some build output", "NIXFLEET drift=edited flake.nix",
             "NIXFLEET toplevel=" + RUNNING, "NIXFLEET result=changed",
             "NIXFLEET reason=switch done", "NIXFLEET generation_after=7"]
    journal = parse_journals(lines)
    assert journal is not None
    assert (journal.deploy_id, journal.started, journal.owner, journal.result) == (
        "20261207-121212-2", 1700000000, "alice@deployer", "changed")
    assert journal.generation_after == 7 and journal.drift == ("edited flake.nix",)
    assert parse_journals([]) is None


def answer(files: dict[str, str], record: str, verified: str = "", journal: str = "",
           failed: str = "", booted: str = RUNNING) -> list[str]:
    """What status_command prints, as the parts a host would answer with."""
    deploy = ["generation /nix/var/nix/profiles/system-7-link", f"current {RUNNING}",
              f"profile {RUNNING}", "last-deploy ", "record ", f"verified {verified}",
              "boot-fs /boot 536870912 268435456", f"booted {booted}",
              "store-free 10737418240",
              *(f"{sha}  ./{path}" for path, sha in files.items())]
    return ["#nixfleet:status:deploy", *deploy, "#nixfleet:status:record",
            *record.splitlines(), "#nixfleet:status:journal", *journal.splitlines(),
            "#nixfleet:status:generations", "#nixfleet:status:system",
            "#nixfleet:status:failed", *failed.splitlines(), "#nixfleet:status:end"]


WANTED = {"flake.nix": A, "hosts/razer.json": B}
RECORD = f"{A}  flake.nix\n{B}  hosts/razer.json\n"


def judged(lines: list[str]):
    return judge("razer", parse_status(lines), WANTED, [], 16 * 2**20)


def test_up_to_date_and_verified_is_no_problem():
    row = judged(answer(WANTED, RECORD, verified_line(RUNNING, 1700000000, True)))
    assert row.flake == "up to date" and row.verified_state == "verified"
    assert row.system == "running = profile = booted"
    assert row.problems == [] and row.ok


def test_a_hand_edited_file_names_host_and_file():
    row = judged(answer({**WANTED, "flake.nix": C}, RECORD, verified_line(RUNNING, 1, True)))
    assert row.flake_state == "hand-edited" and row.flake_files == ["edited flake.nix"]
    assert row.problems == ["razer: flake directory hand-edited on the host: edited flake.nix"]


def test_a_host_behind_counts_the_files_that_differ():
    old = {"flake.nix": C, "hosts/razer.json": B, "gone.nix": A}
    record = "".join(f"{sha}  {path}\n" for path, sha in old.items())
    row = judged(answer(old, record, verified_line(RUNNING, 1, True)))
    assert row.flake_state == "behind" and row.flake_files == ["flake.nix", "gone.nix"]
    assert row.flake == "behind: 2 files differ"
    assert len(row.problems) == 1 and row.problems[0].startswith("razer: flake behind")


def test_a_damaged_record_compares_the_whole_directory_with_the_repository():
    row = judged(answer({**WANTED, "flake.nix": C}, "garbage\n" + RECORD,
                        verified_line(RUNNING, 1, True)))
    assert row.flake_state == "record-damaged" and row.flake_files == ["flake.nix"]
    assert row.flake.startswith("record damaged: the whole directory is compared with this "
                                "repository; 1 files differ: flake.nix")


def test_a_system_never_verified_or_verified_as_another_is_a_problem():
    never = judged(answer(WANTED, RECORD))
    assert never.verified_state == "not-verified"
    assert never.problems == [f"razer: not verified: it runs {RUNNING}, which no verification "
                              "checked (nixfleet verify, or the next deploy)"]
    other = judged(answer(WANTED, RECORD, verified_line(OTHER, 1, True)))
    assert other.verified_state == "not-verified"
    failed = judged(answer(WANTED, RECORD, verified_line(RUNNING, 1, False)))
    assert failed.verified_state == "failed" and len(failed.problems) == 1


def test_failed_units_a_failed_deploy_and_a_switch_since_boot():
    journal = "file 20261207-121212-2\nNIXFLEET result=rolled-back\nNIXFLEET reason=gate"
    row = judged(answer(WANTED, RECORD, verified_line(RUNNING, 1, True), journal=journal,
                        failed="broken.service loaded failed failed Broken", booted=OTHER))
    assert row.failed_units == ["broken.service"]
    assert "razer: failed units: broken.service" in row.problems
    assert "razer: last deploy 20261207-121212-2: rolled-back: gate" in row.problems
    assert row.system == "switched since boot (same kernel and initrd)"


def test_an_answer_cut_short_is_unreachable_with_the_reason():
    row = judge("razer", "ssh: Connection refused", WANTED, [], 0)
    assert not row.reachable and row.problems == ["razer: unreachable: ssh: Connection refused"]
    with pytest.raises(FactParseError):
        parse_status(answer(WANTED, RECORD)[:-1])


def test_the_command_is_valid_sh():
    result = subprocess.run(["sh", "-n", "-c", status_command("/etc/nixos")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--limit", "nope"], "nope"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(args, message):
    result = subprocess.run([sys.executable, "-m", "nixfleet", "status", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nixfleet: error: ") and message in lines[0]
    assert result.stdout == ""


# --- the commands started before the inventory is loaded -------------------------------------


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`ssh` on PATH that logs its arguments (one line per start) and answers after a while."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "started"
    (bin_dir / "ssh").write_text(f'#!/bin/sh\necho "$*" >> {log}\nsleep 0.3\necho answer\n')
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return log


def started(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_the_last_runs_commands_start_early_and_only_the_very_same_one_is_used(fake_ssh,
                                                                                tmp_path):
    inventory = tmp_path / "inventory.py"
    first = Asked(inventory)
    first.start_remembered()  # nothing remembered yet
    wanted = {"razer": ["ssh", "razer", "status"], "p510": ["ssh", "p510", "status"]}
    for process in first.ask(wanted):
        assert process.communicate()[0] == "answer\n"
    first.remember(wanted)

    second = Asked(inventory)
    second.start_remembered()  # both started before the inventory is read
    now = {"razer": ["ssh", "razer", "status"], "p510": ["ssh", "p510", "other"]}
    asking = second.ask(now)
    # razer's early command is used; p510's is not the one wanted: ended, the right one started.
    assert [p.args for p in asking] == [now["razer"], now["p510"]]
    assert [p.communicate()[0] for p in asking] == ["answer\n", "answer\n"]
    assert second.started == {}
    # razer's command started once per run; p510's right one once. (p510's early one may be
    # ended before it logs anything.)
    log = started(fake_ssh)
    assert (log.count("razer status"), log.count("p510 other")) == (2, 1), log


def test_what_was_started_early_and_not_wanted_is_ended(fake_ssh, tmp_path):
    inventory = tmp_path / "inventory.py"
    Asked(inventory).remember({"razer": ["ssh", "razer", "status"]})
    asked = Asked(inventory)
    asked.start_remembered()
    (_, process), = asked.started.values()
    asked.ask({})  # say, the inventory did not load, or --limit left razer out
    assert process.returncode is not None and asked.started == {}


@pytest.mark.parametrize("text", ['{"razer": ["sh", "-c", "touch /tmp/x"]}', "not json",
                                  '["ssh"]', '{"razer": "ssh razer"}'])
def test_a_damaged_or_foreign_remembered_file_starts_nothing(fake_ssh, tmp_path, text):
    asked = Asked(tmp_path / "inventory.py")
    asked.path.parent.mkdir(parents=True)
    asked.path.write_text(text)
    asked.start_remembered()
    assert asked.started == {} and started(fake_ssh) == []

"""The deployer's side of a deploy step that ended without a result (nixfleet.safety.recover):
the host's journal read over fresh connections, the step waited for while it still holds the
lock, and one line when it was killed or never reached again. Also the reboot's wait for the
host's new boot (nixfleet.safety.reboot), which reads the host the same way."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from nixfleet import safety
from nixfleet.outcome import Action, Result
from nixfleet.remote import protocol
from nixfleet.ssh import Answer

ID = "20261207-120000-1"
JOURNAL = ["NIXFLEET phase_lock=0.01", "NIXFLEET generation_before=4", "NIXFLEET flake=changed",
           "NIXFLEET phase_flake=0.05"]
DONE = [*JOURNAL, "NIXFLEET phase_activate=0.4", "NIXFLEET result=changed",
        "NIXFLEET reason=switch done", "NIXFLEET generation_after=5"]


def answers(monkeypatch: pytest.MonkeyPatch, *replies: Answer | None) -> list[str]:
    """fresh_ssh answers these in turn (the last one from then on); returns the commands."""
    commands: list[str] = []

    def fresh_ssh(host: Any, command: str, timeout: float = 60) -> Answer | None:
        commands.append(command)
        return replies[min(len(commands), len(replies)) - 1]

    monkeypatch.setattr(safety, "fresh_ssh", fresh_ssh)
    monkeypatch.setattr(safety.time, "sleep", lambda seconds: None)
    return commands


def host_answer(journal: list[str], holder: str, generation: int = 5) -> Answer:
    return Answer(True, "\n".join([*journal, f"holder={holder}",
                                   f"profile=system-{generation}-link"]) + "\n", "")


HOST = SimpleNamespace(name="web1")


def outcome(lines: list[str]):
    return protocol.parse("web1", Action.SWITCH, lines)


def test_a_step_that_finished_after_the_connection_dropped_gives_its_real_result(monkeypatch):
    commands = answers(monkeypatch, host_answer(JOURNAL, ID), host_answer(DONE, ""))
    out = outcome(safety.recover(HOST, ID, 60))  # type: ignore[arg-type]
    assert (out.result, out.reason, out.generation_after) == (Result.CHANGED, "switch done", 5)
    assert len(commands) == 2  # asked again while the step still held the lock
    assert f"/var/lib/nixfleet/result-{ID}" in commands[0]


def test_a_killed_step_is_said_to_be_killed_after_its_last_step(monkeypatch):
    answers(monkeypatch, host_answer(JOURNAL, ""))
    out = outcome(safety.recover(HOST, ID, 60))  # type: ignore[arg-type]
    assert (out.result, out.reason) == \
        (Result.FAILED, "the deploy step on web1 was killed after its flake step")
    assert (out.generation_before, out.generation_after) == (4, 5)


def test_a_step_that_never_took_the_lock_changed_nothing(monkeypatch):
    answers(monkeypatch, host_answer([], "another-deploy"))
    out = outcome(safety.recover(HOST, ID, 60))  # type: ignore[arg-type]
    assert out.result is Result.FAILED
    assert out.reason == ("the deploy step on web1 ended before it took the deploy lock (the "
                          "connection dropped or it was killed); nothing was changed")


def test_a_host_that_does_not_answer_again_is_unreachable_and_left_to_its_watchdog(monkeypatch):
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(safety.time, "monotonic", lambda: next(clock))
    commands = answers(monkeypatch, None)
    out = outcome(safety.recover(HOST, ID, 30))  # type: ignore[arg-type]
    assert out.result is Result.UNREACHABLE
    assert out.reason == ("the connection to web1 was lost and it did not answer again 30s "
                          "later; a switch not confirmed returns to the system before by itself "
                          "(its watchdog)")
    assert 2 <= len(commands) <= 5  # bounded


def test_a_reboot_waits_for_a_whole_answer_from_the_new_boot(monkeypatch):
    """A session that the old system's shutdown cuts off answers nothing: that is no new boot
    id, and the gate must not run on a host that is still going down (it did, in CI, and
    reported "unreachable after the reboot")."""
    booted = Answer(True, "new-id\n/nix/store/a-system\n/nix/store/a-system\n", "")
    commands = answers(monkeypatch, Answer(True, "old-id\n", ""), Answer(True, "", ""),
                       Answer(False, "", ""), None, booted, Answer(True, "", ""))
    out = safety.reboot(HOST, {"result": "changed"}, "GATE", None,  # type: ignore[arg-type]
                        only_if_required=False)
    assert out is not None and out.reason == "rebooted into the new generation, healthy"
    assert commands[1] == "systemctl reboot"
    assert [c.startswith("cat /proc/sys/kernel/random/boot_id;") for c in commands[2:5]] == \
        [True] * 3 and commands[5] == "GATE"


def test_a_reboot_into_another_system_than_the_default_is_rolled_back(monkeypatch):
    booted = Answer(True, "new-id\n/nix/store/old-system\n/nix/store/a-system\n", "")
    commands = answers(monkeypatch, Answer(True, "old-id\n", ""), Answer(True, "", ""), booted,
                       Answer(True, "NIXFLEET generation_after=4\n", ""))
    out = safety.reboot(HOST, {"result": "changed"}, "GATE", "BACK",  # type: ignore[arg-type]
                        only_if_required=False)
    assert out is not None and (out.result, out.generation_after) == (Result.ROLLED_BACK, 4)
    assert out.reason == ("after the reboot it runs /nix/store/old-system, not "
                          "/nix/store/a-system; rolled back")
    assert commands[-1] == "BACK"

"""The step runner (nixfleet.steps) behind `nixfleet validate` and the CI pipeline (scripts/ci):
steps in parallel, time limits that end the whole process group, dependents skipped, Markdown
and JUnit reports."""

from __future__ import annotations

import os
import time
from xml.etree import ElementTree

import pytest

from nixfleet.errors import NixfleetError
from nixfleet.steps import Outcome, Status, Step, command_step, junit_xml, markdown, run_steps


def sleeper(seconds: float, outcome: Outcome) -> Step:
    def run() -> Outcome:
        time.sleep(seconds)
        return outcome
    return Step(f"sleep-{seconds}-{outcome.status}", run)


def test_independent_steps_run_at_once():
    steps = [Step(f"s{i}", sleeper(0.5, Outcome(Status.PASSED, "ok")).run) for i in range(3)]
    report = run_steps("demo", steps, jobs=3)
    assert report.ok and [r.status for r in report.results] == [Status.PASSED] * 3
    assert 0.5 <= report.wall < 1.2  # not 1.5 s one after another
    assert report.seconds >= 1.5


def test_a_step_waits_for_what_it_needs_and_is_skipped_when_that_fails():
    order: list[str] = []

    def step(name: str, status: Status, needs: tuple[str, ...] = ()) -> Step:
        def run() -> Outcome:
            order.append(name)
            return Outcome(status, name)
        return Step(name, run, needs=needs)

    report = run_steps("demo", [step("late", Status.PASSED, ("build",)),
                                step("deep", Status.PASSED, ("late",)),
                                step("build", Status.FAILED),
                                step("other", Status.PASSED)], jobs=1)
    by_name = {r.name: r for r in report.results}
    assert [r.name for r in report.results] == ["late", "deep", "build", "other"]  # as given
    assert order == ["build", "other"]
    assert by_name["late"].outcome == Outcome(Status.SKIPPED,
                                              "needs build, which did not pass")
    assert by_name["deep"].outcome == Outcome(Status.SKIPPED, "needs late, which did not pass")
    assert not report.ok
    assert report.counts() == "1 passed, 2 skipped, 1 failed"


def test_errors_in_a_step_are_its_failure_not_the_runs():
    def broken() -> Outcome:
        raise NixfleetError("inventory.py: host razer: gpu: unknown field")

    def buggy() -> Outcome:
        table: dict[str, Outcome] = {}
        return table["missing"]

    report = run_steps("demo", [Step("a", broken), Step("b", buggy),
                                Step("c", lambda: Outcome(Status.WARNING, "careful"))])
    a, b, c = report.results
    assert a.outcome.summary == "inventory.py: host razer: gpu: unknown field"
    assert b.status is Status.FAILED and b.outcome.summary == "KeyError: 'missing'"
    assert c.status is Status.WARNING and c.status.ok


def test_needs_that_cannot_be_met_are_an_error():
    with pytest.raises(NixfleetError, match="steps need unknown steps: nowhere"):
        run_steps("demo", [Step("a", lambda: Outcome(Status.PASSED, ""), needs=("nowhere",))])
    with pytest.raises(NixfleetError, match="steps need each other: a, b"):
        run_steps("demo", [Step("a", lambda: Outcome(Status.PASSED, ""), needs=("b",)),
                           Step("b", lambda: Outcome(Status.PASSED, ""), needs=("a",))])


def test_a_command_past_its_time_limit_is_ended_with_its_children(tmp_path):
    child = tmp_path / "child.pid"
    step = command_step("hang", ["sh", "-c", f"sleep 60 & echo $! > {child}; echo started; "
                                 "wait"], timeout=1, log_dir=tmp_path / "logs")
    start = time.monotonic()
    [result] = run_steps("demo", [step]).results
    assert time.monotonic() - start < 10
    assert result.status is Status.FAILED
    assert result.outcome.summary == "timed out after 1 s"
    assert result.outcome.problems == ("started",)
    assert result.log == tmp_path / "logs" / "hang.log"
    pid = int(child.read_text())
    with pytest.raises(ProcessLookupError):  # the background sleep went with it
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)


def test_a_command_step_keeps_its_output_and_reports_its_exit(tmp_path):
    ok = command_step("ok", ["sh", "-c", "echo one; echo two"], 10, tmp_path)
    bad = command_step("bad", ["sh", "-c", "echo trying; echo 'it broke' >&2; exit 3"], 10,
                       tmp_path)
    missing = command_step("missing", [str(tmp_path / "no-such-tool")], 10, tmp_path)
    report = run_steps("demo", [ok, bad, missing])
    assert [r.outcome.summary for r in report.results] == [
        "two", "exit 3: it broke", "cannot run " + str(tmp_path / "no-such-tool") +
        ": No such file or directory"]
    assert report.results[1].outcome.problems == ("trying", "it broke")
    assert (tmp_path / "ok.log").read_text() == "one\ntwo\n"


def test_markdown_and_junit_reports(tmp_path):
    report = run_steps("nixfleet ci", [
        Step("ruff", lambda: Outcome(Status.PASSED, "All checks passed!")),
        Step("unit", lambda: Outcome(Status.FAILED, "exit 1: 1 failed, 99 passed",
                                     ("FAILED tests/unit/test_x.py::test_y - assert 1 == 2",))),
        Step("lab", lambda: Outcome(Status.PASSED, ""), needs=("unit",))])
    text = markdown(report)
    assert text.startswith("# nixfleet ci: FAILED\n\n1 passed, 1 skipped, 1 failed in ")
    assert "| ruff | ✅ passed |" in text
    assert "| unit | ❌ failed |" in text and "| lab | ⏭️ skipped |" in text
    assert "## unit: failed\n\n```\nFAILED tests/unit/test_x.py::test_y - assert 1 == 2\n```" \
        in text
    suite = ElementTree.fromstring(junit_xml(report)).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    unit = suite.find("testcase[@name='unit']/failure")
    assert unit is not None and unit.get("message") == "exit 1: 1 failed, 99 passed"
    assert suite.find("testcase[@name='lab']/skipped") is not None

"""Named steps run in parallel where independent, and their report: a table, Markdown and
JUnit XML. `nixfleet validate` runs its checks with it, scripts/ci the CI pipeline.

A step is a function returning an Outcome; the runner times it, turns a NixfleetError into a
failure with its message, and skips a step whose `needs` did not pass. Command steps
(`command_step`) run a process group with a time limit and keep its output in a log file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from xml.etree import ElementTree

from nixfleet.errors import NixfleetError


class Status(StrEnum):
    PASSED = "passed"
    WARNING = "warning"  # passed, with something the user should know (never fails a run)
    SKIPPED = "skipped"
    FAILED = "failed"

    @property
    def ok(self) -> bool:
        return self is not Status.FAILED


@dataclass(frozen=True)
class Outcome:
    """What a step found: its status, one line, and one line per problem."""

    status: Status
    summary: str
    problems: tuple[str, ...] = ()

    @classmethod
    def of(cls, problems: Sequence[str], passed: str, failed: str | None = None) -> Outcome:
        """Failed with `problems` (summary `failed`, default "N problems"), else passed."""
        if not problems:
            return cls(Status.PASSED, passed)
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        return cls(Status.FAILED, failed or count, tuple(problems))


@dataclass(frozen=True)
class Step:
    """+ name: short id (`--skip NAME`); + run: does the work; + needs: steps that must pass
    first; + title: what it checks, for the report."""

    name: str
    run: Callable[[], Outcome]
    title: str = ""
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepResult:
    name: str
    title: str
    outcome: Outcome
    seconds: float
    log: Path | None = None

    @property
    def status(self) -> Status:
        return self.outcome.status


@dataclass
class Report:
    """The results of one run, in the steps' order."""

    name: str
    results: list[StepResult] = field(default_factory=list)
    wall: float = 0.0  # seconds from the first step's start to the last one's end

    @property
    def ok(self) -> bool:
        return all(r.status.ok for r in self.results)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.results)

    def counts(self) -> str:
        """"6 passed, 1 skipped" in Status order."""
        return ", ".join(f"{n} {s}" for s in Status
                         if (n := sum(r.status is s for r in self.results)))

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "steps": [{
            "name": r.name, "title": r.title, "status": str(r.status),
            "summary": r.outcome.summary, "problems": list(r.outcome.problems),
            "seconds": round(r.seconds, 3), "log": str(r.log) if r.log else None,
        } for r in self.results]}


def run_steps(name: str, steps: Sequence[Step], jobs: int = 4,
              progress: Callable[[StepResult], None] | None = None) -> Report:
    """Run `steps`, at most `jobs` at once, each as soon as the steps it needs have passed;
    `progress` hears of each result as it comes."""
    by_name = {s.name: s for s in steps}
    unknown = sorted({n for s in steps for n in s.needs} - set(by_name))
    if unknown:
        raise NixfleetError(f"{name}: steps need unknown steps: {', '.join(unknown)}")
    start = time.monotonic()
    done: dict[str, StepResult] = {}
    running: dict[Future[StepResult], str] = {}
    pending = list(steps)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while pending or running:
            progressed = True
            while progressed:  # a skipped step may let a step before it be skipped too
                progressed = False
                for step in list(pending):
                    failed = [n for n in step.needs
                              if n in done and done[n].status in (Status.FAILED, Status.SKIPPED)]
                    if failed:
                        done[step.name] = StepResult(step.name, step.title, Outcome(
                            Status.SKIPPED, f"needs {', '.join(failed)}, which did not pass"),
                            0.0)
                        if progress:
                            progress(done[step.name])
                    elif all(n in done for n in step.needs) and len(running) < jobs:
                        running[pool.submit(_timed, step)] = step.name
                    else:
                        continue
                    pending.remove(step)
                    progressed = True
            if running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    result = done[running.pop(future)] = future.result()
                    if progress:
                        progress(result)
            elif pending:  # nothing runs and nothing can start: the needs form a cycle
                raise NixfleetError(f"{name}: steps need each other: "
                                    f"{', '.join(s.name for s in pending)}")
    return Report(name, [done[s.name] for s in steps], time.monotonic() - start)


def _timed(step: Step) -> StepResult:
    start = time.monotonic()
    try:
        outcome = step.run()
    except NixfleetError as error:
        outcome = Outcome(Status.FAILED, str(error), (str(error),))
    except Exception as error:  # a bug in one step must not hide the other steps' results
        outcome = Outcome(Status.FAILED, f"{type(error).__name__}: {error}",
                          (f"{type(error).__name__}: {error}",))
    return StepResult(step.name, step.title, outcome, time.monotonic() - start,
                      getattr(step.run, "log", None))


# --- commands as steps -----------------------------------------------------------------------


class CommandRun:
    """A command run as a step: its own process group, killed at `timeout`; output in `log`."""

    def __init__(self, argv: Sequence[str], timeout: float, log: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.argv, self.timeout, self.log, self.cwd, self.env = list(argv), timeout, log, cwd, env

    def __call__(self) -> Outcome:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as output:
            try:
                process = subprocess.Popen(self.argv, stdout=output, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, cwd=self.cwd, env=self.env,
                                           start_new_session=True)
            except OSError as error:
                return Outcome(Status.FAILED, f"cannot run {self.argv[0]}: {error.strerror}")
            try:
                code = process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                return Outcome(Status.FAILED, f"timed out after {self.timeout:g} s",
                               tuple(tail(self.log)))
        if code == 0:
            return Outcome(Status.PASSED, last_line(self.log) or "exit 0")
        return Outcome(Status.FAILED, f"exit {code}: {last_line(self.log)}",
                       tuple(tail(self.log)))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the step's whole process group, SIGKILL if it is still there after 5 s."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def command_step(name: str, argv: Sequence[str], timeout: float, log_dir: Path, title: str = "",
                 needs: Sequence[str] = (), cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> Step:
    return Step(name, CommandRun(argv, timeout, log_dir / f"{name}.log", cwd, env),
                title or " ".join(argv), tuple(needs))


def tail(path: Path, lines: int = 30) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def last_line(path: Path) -> str:
    return next(iter(tail(path, 1)), "")


# --- reports ---------------------------------------------------------------------------------


STYLE = {Status.PASSED: "green", Status.WARNING: "yellow", Status.SKIPPED: "yellow",
         Status.FAILED: "red"}


def print_report(report: Report) -> None:
    """The table of steps (result, time, one line each), then each problem on its own line."""
    from rich.text import Text

    from nixfleet import console as tables

    out = tables.console()
    table = tables.table("step", "result", "time", "details", title=report.name)
    for r in report.results:
        table.add_row(r.name, Text(str(r.status), style=STYLE[r.status]), f"{r.seconds:.1f}s",
                      Text(r.outcome.summary))
    tables.print_table(table, out)
    for r in report.results:
        if r.status is not Status.PASSED:
            for problem in r.outcome.problems:  # one line each, never wrapped: grep finds it
                out.print(Text(f"{r.name}: {problem}"), soft_wrap=True)
    verdict = "ok" if report.ok else "FAILED"
    out.print(Text(f"{report.name}: {verdict}: {report.counts()} in {report.wall:.1f}s"))


def markdown(report: Report, details: int = 40) -> str:
    """A Markdown report: the table, then the problems (or the log's tail) of each failure."""
    verdict = "passed" if report.ok else "FAILED"
    lines = [f"# {report.name}: {verdict}", "", f"{report.counts()} in {report.wall:.0f} s.", "",
             "| step | result | time | details |", "|---|---|---|---|"]
    for r in report.results:
        mark = {Status.PASSED: "✅", Status.WARNING: "⚠️", Status.SKIPPED: "⏭️",
                Status.FAILED: "❌"}[r.status]
        lines.append(f"| {r.name} | {mark} {r.status} | {r.seconds:.1f}s | "
                     f"{_cell(r.outcome.summary)} |")
    for r in report.results:
        if r.status is Status.PASSED or not (r.outcome.problems or r.log):
            continue
        lines += ["", f"## {r.name}: {r.status}", ""]
        if r.title:
            lines += [f"`{r.title}`", ""]
        body = list(r.outcome.problems[-details:])
        if body:
            lines += ["```", *body, "```"]
        if r.log:
            lines += ["", f"Full output: `{r.log}`"]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def junit_xml(report: Report) -> str:
    """JUnit XML: one test case per step (failure with its problems, skipped with why)."""
    suite = ElementTree.Element("testsuite", {
        "name": report.name, "tests": str(len(report.results)),
        "failures": str(sum(r.status is Status.FAILED for r in report.results)),
        "skipped": str(sum(r.status is Status.SKIPPED for r in report.results)),
        "time": f"{report.wall:.3f}"})
    for r in report.results:
        case = ElementTree.SubElement(suite, "testcase", {
            "classname": report.name, "name": r.name, "time": f"{r.seconds:.3f}"})
        if r.status is Status.FAILED:
            failure = ElementTree.SubElement(case, "failure", {"message": r.outcome.summary})
            failure.text = "\n".join(r.outcome.problems)
        elif r.status is Status.SKIPPED:
            ElementTree.SubElement(case, "skipped", {"message": r.outcome.summary})
        elif r.status is Status.WARNING:
            ElementTree.SubElement(case, "system-out").text = "\n".join(
                [r.outcome.summary, *r.outcome.problems])
        if r.log:
            ElementTree.SubElement(case, "system-err").text = f"full output: {r.log}"
    suites = ElementTree.Element("testsuites")
    suites.append(suite)
    ElementTree.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(
        suites, encoding="unicode") + "\n"

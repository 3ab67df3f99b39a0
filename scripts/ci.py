"""The CI pipeline (`just ci`, run by scripts/ci after scripts/setup): every step of
scripts/test, independent ones in parallel, each with a time limit, then a Markdown report and
JUnit XML. scripts/test stays the plain sequential suite that .ci/run calls.

    preflight   the tools the steps need are on PATH (scripts/setup installs them)
    ruff        ruff check .
    mypy        mypy
    validate    nixfleet validate: generated files, Nix syntax and checks, secrets and the
                plaintext check, promtool/amtool, nix flake check where nixpkgs is reachable
    unit        the unit tests (2 workers)
    lab         the lab tests, after the unit tests pass: they need the machine to themselves
                more than they need to start early

Written to --report DIR (default .ci-report/): report.md, junit.xml (one test case per step),
logs/STEP.log (each step's whole output), unit.xml, lab.xml and validate.xml (their own JUnit).
Exit 1 when a step failed or ran out of time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from nixfleet.steps import (
    Outcome,
    Step,
    StepResult,
    command_step,
    junit_xml,
    markdown,
    print_report,
    run_steps,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Tools the steps run, and the Debian package that has each (scripts/setup installs them).
TOOLS = {"nix-instantiate": "nix-bin", "promtool": "prometheus", "amtool":
         "prometheus-alertmanager", "git": "git", "ssh": "openssh-client", "age": "age"}
LAB_TOOLS = {"systemd-nspawn": "systemd-container", "debootstrap": "debootstrap"}
TIMEOUTS = {"ruff": 300, "mypy": 900, "validate": 900, "unit": 1800, "lab": 3600}
ORDER = ("preflight", "ruff", "mypy", "validate", "unit", "lab")


def preflight(lab: bool) -> Outcome:
    tools = {**TOOLS, **(LAB_TOOLS if lab else {})}
    missing = [f"{tool} not found (Debian: {package}; scripts/setup installs it)"
               for tool, package in tools.items() if shutil.which(tool) is None]
    missing += [f"{name} not found in {BIN} (scripts/setup makes the virtualenv)"
                for name in ("ruff", "mypy", "pytest", "nixfleet") if not (BIN / name).exists()]
    return Outcome.of(missing, f"{len(tools) + 4} tools present")


def pipeline(report: Path, selected: tuple[str, ...], timeouts: dict[str, float]) -> list[Step]:
    logs = report / "logs"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    def command(name: str, argv: list[str], needs: tuple[str, ...] = ("preflight",)) -> Step:
        return command_step(name, argv, timeouts.get(name, TIMEOUTS[name]), logs, cwd=ROOT,
                            env=env, needs=needs)

    steps = {
        "preflight": Step("preflight", lambda: preflight("lab" in selected), "tools on PATH"),
        "ruff": command("ruff", [str(BIN / "ruff"), "check", "."]),
        "mypy": command("mypy", [str(BIN / "mypy")]),
        "validate": command("validate", [str(BIN / "nixfleet"), "validate", "--junit",
                                         str(report / "validate.xml")]),
        "unit": command("unit", [str(BIN / "pytest"), "tests/unit", "-n", "2", "-q",
                                 f"--junitxml={report / 'unit.xml'}"]),
        "lab": command("lab", [str(BIN / "pytest"), "tests/lab", "-q",
                               f"--junitxml={report / 'lab.xml'}"], ("preflight", "unit")),
    }
    chosen = [steps[name] for name in ORDER if name in selected]
    # A step left out is not waited for.
    return [Step(s.name, s.run, s.title, tuple(n for n in s.needs if n in selected))
            for s in chosen]


def names(values: list[str]) -> list[str]:
    found = [n.strip() for value in values for n in value.split(",") if n.strip()]
    unknown = [n for n in found if n not in ORDER]
    if unknown:
        raise SystemExit(f"ci: error: no step {', '.join(unknown)}; steps: {', '.join(ORDER)}")
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/ci", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], metavar="STEP[,STEP]",
                        help="run only these steps")
    parser.add_argument("--skip", action="append", default=[], metavar="STEP[,STEP]",
                        help="leave these steps out (e.g. --skip lab)")
    parser.add_argument("--timeout", action="append", default=[], metavar="STEP=SECONDS",
                        help="another time limit for a step (default: " +
                        ", ".join(f"{k} {v}s" for k, v in TIMEOUTS.items()) + ")")
    parser.add_argument("--jobs", type=int, default=4, help="steps at once (default 4)")
    parser.add_argument("--report", type=Path, default=ROOT / ".ci-report", metavar="DIR",
                        help="where report.md, junit.xml and logs/ go (default .ci-report)")
    parser.add_argument("--no-setup", action="store_true",
                        help="scripts/ci: do not run scripts/setup first")
    return parser.parse_args(argv)


def timeouts_of(values: list[str]) -> dict[str, float]:
    timeouts = {}
    for value in values:
        name, _, seconds = value.partition("=")
        if name not in TIMEOUTS or not seconds.replace(".", "", 1).isdigit():
            raise SystemExit(f"ci: error: --timeout {value}: want STEP=SECONDS, STEP one of "
                             f"{', '.join(TIMEOUTS)}")
        timeouts[name] = float(seconds)
    return timeouts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only, skip = names(args.only), names(args.skip)
    selected = tuple(n for n in ORDER if (not only or n in only) and n not in skip)
    report_dir = args.report.resolve()
    if report_dir.exists():
        shutil.rmtree(report_dir)
    report_dir.mkdir(parents=True)

    def progress(result: StepResult) -> None:
        print(f"ci: {result.name}: {result.status} ({result.seconds:.1f}s) "
              f"{result.outcome.summary}", flush=True)

    print(f"ci: running {', '.join(selected)} (at most {args.jobs} at once); "
          f"logs in {report_dir / 'logs'}", flush=True)
    report = run_steps("nixfleet ci", pipeline(report_dir, selected, timeouts_of(args.timeout)),
                       jobs=args.jobs, progress=progress)
    (report_dir / "report.md").write_text(markdown(report))
    (report_dir / "junit.xml").write_text(junit_xml(report))
    print_report(report)
    print(f"report: {report_dir / 'report.md'}; JUnit: {report_dir / 'junit.xml'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

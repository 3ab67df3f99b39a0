"""The CI pipeline (`just ci` = scripts/ci, steps run by nixfleet.steps: test_steps.py): the
selected steps, their reports, a failing step's output in them, and scripts/test left as what
.ci/run calls."""

from __future__ import annotations

import os
from pathlib import Path
from xml.etree import ElementTree

from tests.unit.repo_support import ROOT, just


def test_just_ci_runs_the_selected_steps_and_writes_its_reports(tmp_path):
    """The real pipeline, two of its steps (the whole suite would run this test again)."""
    report = tmp_path / "report"
    result = just(ROOT, "ci", "--no-setup", "--only", "preflight,validate", "--report",
                  str(report), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ci: preflight: passed" in result.stdout
    assert "ci: validate: passed" in result.stdout
    assert sorted(p.name for p in report.iterdir()) == [
        "junit.xml", "logs", "report.md", "validate.xml"]
    assert "| validate | ✅ passed |" in (report / "report.md").read_text()
    cases = ElementTree.parse(report / "junit.xml").getroot().iter("testcase")
    assert [c.get("name") for c in cases] == ["preflight", "validate"]
    assert "nixfleet validate: ok" in (report / "logs" / "validate.log").read_text()


def test_ci_fails_on_a_failing_step_with_its_output_in_the_report(tmp_path):
    report = tmp_path / "report"
    result = just(ROOT, "ci", "--no-setup", "--only", "validate", "--timeout", "validate=0.01",
                  "--report", str(report), timeout=600)
    assert result.returncode == 1
    assert "ci: validate: failed" in result.stdout
    assert "| validate | ❌ failed |" in (report / "report.md").read_text()
    assert "timed out after 0.01 s" in (report / "report.md").read_text()


def test_ci_refuses_an_unknown_step():
    result = just(ROOT, "ci", "--no-setup", "--skip", "lab,docs")
    assert result.returncode != 0
    assert "ci: error: no step docs; steps: preflight, ruff, mypy, validate, unit, lab" in \
        result.stderr


def test_scripts_test_stays_what_ci_run_calls():
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("exec scripts/test")
    assert os.access(ROOT / "scripts" / "test", os.X_OK)
    assert os.access(ROOT / "scripts" / "ci", os.X_OK)
    assert Path(ROOT / "scripts" / "ci").read_text().count("scripts/setup") >= 1


def test_the_package_license_is_an_spdx_string_that_setuptools_takes_without_a_warning():
    """scripts/setup's install printed setuptools' deprecation of `project.license` as a
    table; the SPDX string form needs setuptools 77 (PEP 639)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert project["build-system"]["requires"] == ["setuptools>=77"]

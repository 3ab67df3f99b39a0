"""pyinfra, run as a subprocess, imports nixfleet and its dependencies from wherever this
process imports them: one virtualenv, or (the Nix package) one store path per dependency."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nixfleet import pyinfra_run
from nixfleet.cli import build_parser
from nixfleet.commands.deploy import cmd_deploy
from nixfleet.pyinfra_run import pyinfra_environment, run_pyinfra

PACKAGE_PARENT = str(Path(pyinfra_run.__file__).resolve().parent.parent)


def as_installed_by_nix(monkeypatch, tmp_path: Path) -> list[str]:
    """sys.path as a Nix-wrapped nixfleet has it: the interpreter's own directories, then one
    site-packages per dependency (store paths outside the interpreter's prefix)."""
    python = tmp_path / "store" / "python3-3.13"
    own = [str(python / "lib" / "python3.13"), str(python / "lib" / "python3.13" / "site-packages")]
    dependencies = [str(tmp_path / "store" / f"python3.13-{name}" / "lib" / "python3.13" /
                        "site-packages") for name in ("pydantic-2.12", "rich-14", "httpx-0.28")]
    monkeypatch.setattr(sys, "prefix", str(python))
    monkeypatch.setattr(sys, "path", [*own, *dependencies, "/elsewhere/lib"])
    monkeypatch.delenv("PYTHONPATH", raising=False)
    return dependencies


def test_pyinfra_gets_the_dependencies_outside_the_interpreter(monkeypatch, tmp_path):
    dependencies = as_installed_by_nix(monkeypatch, tmp_path)
    path = pyinfra_environment()["PYTHONPATH"].split(os.pathsep)
    assert path == [PACKAGE_PARENT, *dependencies]


def test_a_pythonpath_of_the_caller_is_kept_after_nixfleets(monkeypatch, tmp_path):
    dependencies = as_installed_by_nix(monkeypatch, tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/mine", dependencies[0]]))
    path = pyinfra_environment()["PYTHONPATH"].split(os.pathsep)
    assert path == [PACKAGE_PARENT, *dependencies, "/mine"]


def test_in_one_virtualenv_only_nixfleet_is_added(monkeypatch, tmp_path):
    venv = tmp_path / "venv"
    monkeypatch.setattr(sys, "prefix", str(venv))
    monkeypatch.setattr(sys, "path", ["/usr/lib/python3.11",
                                      str(venv / "lib" / "python3.11" / "site-packages")])
    monkeypatch.delenv("PYTHONPATH", raising=False)
    assert pyinfra_environment()["PYTHONPATH"] == PACKAGE_PARENT


def test_both_ways_of_running_pyinfra_pass_it(monkeypatch, tmp_path, root):
    dependencies = as_installed_by_nix(monkeypatch, tmp_path)
    seen: list[str] = []

    def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        seen.append(kwargs["env"]["PYTHONPATH"])
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    run_pyinfra(root / "inventory.py", ["debug-inventory", "--json"])
    cmd_deploy(build_parser().parse_args(["--inventory", str(root / "inventory.py"), "deploy",
                                          "switch"]))
    assert seen == [os.pathsep.join([PACKAGE_PARENT, *dependencies])] * 2

"""The Justfile's recipes, the original's names: each one run through `just` on a temporary
copy of the repository (the faults validate finds: test_validate.py; ci: test_ci.py;
ping-hosts against the lab: tests/lab/test_ping_lab.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.unit.repo_support import ROOT, VENV_BIN, copy_repository, git, just, nixfleet

# Every recipe of the original Justfile (shared/docs/system-reference.md), and its status
# recipes, which are aliases here.
ORIGINAL = ["validate", "validate-quick", "check-syntax", "test-host", "test-all", "check",
            "test-modules", "format", "ci", "deploy", "p620", "razer", "p510", "dex5550",
            "deploy-all", "update", "update-flake", "update-input", "ping-hosts"]
ALIASES = ["grafana-status", "prometheus-status", "node-exporter-status"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return copy_repository(tmp_path / "repo")


# --- the list ------------------------------------------------------------------------------


def test_just_list_shows_every_recipe_with_one_line_each():
    result = subprocess.run([str(VENV_BIN / "just"), "--justfile", str(ROOT / "Justfile"),
                             "--list"], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()[1:]
    listed = {line.split()[0]: line for line in lines}
    assert len(listed) == len(lines)
    missing = [name for name in ORIGINAL if name not in listed and name != "perf-test"]
    assert not missing
    undocumented = [name for name, line in listed.items() if " # " not in line]
    assert not undocumented, undocumented
    for alias in ALIASES:
        assert alias in listed["monitoring-status"]


def test_the_readme_maps_every_original_recipe_to_its_command():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Commands of the original Justfile", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `just") or
            line.startswith("| `manage") or line.startswith("| `grafana")]
    originals = " ".join(row.split("|")[1] for row in rows)
    for name in [*ORIGINAL, *ALIASES]:
        assert re.search(rf"`(just )?{re.escape(name)}( [A-Z]+)?`|/ `?{re.escape(name)}`",
                         originals), name
    for row in rows:
        assert row.count("|") >= 4 and row.split("|")[3].strip(), row  # a state for each


# --- validate, validate-quick, check ---------------------------------------------------------


def test_check_flake_says_in_one_line_that_nixpkgs_cannot_be_fetched(repo):
    """`just check`: the flake check was asked for and could not run: exit 1, one line."""
    result = just(repo, "check")
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if line.startswith("nixfleet")
              and line != "nixfleet check-flake"]  # just echoes the recipe's command
    assert line.startswith("nixfleet: error: nix flake check: not run: the flake's inputs "
                           "(nixpkgs, ...) cannot be fetched here; run it where GitHub is "
                           "reachable: unable to download")
    assert not (repo / "nix" / "flake.lock").exists()  # never written


@pytest.mark.parametrize(("recipe", "steps"), [("validate", 10), ("validate-quick", 8)])
def test_the_recipes_run_it_and_fail_with_it(repo, recipe, steps):
    ok = just(repo, recipe)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    [verdict] = [line for line in ok.stdout.splitlines() if line.startswith(
        f"nixfleet validate{' --quick' if recipe.endswith('quick') else ''}: ok:")]
    assert sum(map(int, re.findall(r"(\d+) (?:passed|warning|skipped)", verdict))) == steps
    (repo / "nix" / "hosts" / "p510.json").write_text("{}\n")
    broken = just(repo, recipe)
    assert broken.returncode == 1
    assert "generated: nix/hosts/p510.json: stale (run `nixfleet generate`)" in broken.stdout


# --- check-syntax, test-modules ------------------------------------------------------------


def test_check_syntax_names_each_parse_error_and_fails(repo):
    assert just(repo, "check-syntax").returncode == 0
    (repo / "nix" / "modules" / "broken.nix").write_text("{ a = ; }\n")
    result = just(repo, "check-syntax")
    assert result.returncode == 1
    assert re.search(r"^nix/modules/broken\.nix:1:7: syntax error", result.stdout, re.M)


def test_test_modules_finds_a_module_nothing_imports(repo):
    assert just(repo, "test-modules").returncode == 0
    (repo / "nix" / "modules" / "orphan.nix").write_text("{ ... }: { }\n")
    git(repo, "add", "nix/modules/orphan.nix")
    result = just(repo, "test-modules")
    assert result.returncode == 1
    assert "nix/modules/orphan.nix: not imported by nix/modules/default.nix" in result.stdout


# --- format --------------------------------------------------------------------------------


def stand_in(directory: Path, name: str, body: str) -> None:
    """A stand-in tool for PATH: a shell script that never runs another tool of that name."""
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def minimal_path(*first: Path) -> str:
    """Our tools first, then only the system's directories."""
    return os.pathsep.join([*map(str, first), str(VENV_BIN), "/usr/bin", "/bin"])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small project with the Justfile: badly formatted Python and Nix, a venv to skip."""
    project = tmp_path / "project"
    (project / "nix" / "lib").mkdir(parents=True)
    shutil.copy(ROOT / "Justfile", project)
    (project / "inventory.py").write_text("hosts=[ 'p620' ,'razer']\n")
    (project / "nix" / "lib" / "a.nix").write_text("{ a=1; }\n")
    (project / "nix" / "flake.nix").write_text("{ outputs = _: {}; }\n")
    (project / ".venv").mkdir()
    (project / ".venv" / "skipped.nix").write_text("{}\n")
    return project


def test_format_runs_ruff_and_says_which_nix_formatter_to_install(project):
    if any(shutil.which(t, path=minimal_path()) for t in ("nixfmt", "alejandra")):
        pytest.skip("a Nix formatter is installed here")
    result = just(project, "format", PATH=minimal_path())
    assert result.returncode == 0, result.stderr
    assert (project / "inventory.py").read_text() == 'hosts = ["p620", "razer"]\n'
    assert ("format: 2 .nix files left as they are: no Nix formatter on PATH; install nixfmt "
            "(nixpkgs: nixfmt-rfc-style, the nixpkgs style) or alejandra") in result.stderr
    assert (project / "nix" / "lib" / "a.nix").read_text() == "{ a=1; }\n"


@pytest.mark.parametrize("formatter", ["nixfmt", "alejandra"])
def test_format_uses_the_nix_formatter_on_path(project, tmp_path, formatter):
    log = tmp_path / "calls"
    stand_in(tmp_path / "bin", formatter, f'echo "{formatter} $*" >> {log}')
    result = just(project, "format", PATH=minimal_path(tmp_path / "bin"))
    assert result.returncode == 0, result.stderr
    quiet = " --quiet" if formatter == "alejandra" else ""
    assert log.read_text().splitlines() == [
        f"{formatter}{quiet} ./nix/flake.nix ./nix/lib/a.nix"] or sorted(
        log.read_text().split()) == sorted(
        [formatter, *quiet.split(), "./nix/flake.nix", "./nix/lib/a.nix"])


def test_format_takes_paths_from_where_it_is_called(project, tmp_path):
    log = tmp_path / "calls"
    stand_in(tmp_path / "bin", "nixfmt", f'echo "nixfmt $*" >> {log}')
    (project / "group_data").mkdir()
    (project / "group_data" / "all.py").write_text("x=1\n")
    result = subprocess.run(
        [str(VENV_BIN / "just"), "--justfile", str(project / "Justfile"), "format", "lib",
         "../group_data/all.py"], cwd=project / "nix", capture_output=True, text=True,
        env={**os.environ, "PATH": minimal_path(tmp_path / "bin")})
    assert result.returncode == 0, result.stderr
    assert log.read_text() == "nixfmt lib/a.nix\n"
    assert (project / "group_data" / "all.py").read_text() == "x = 1\n"
    assert (project / "inventory.py").read_text() == "hosts=[ 'p620' ,'razer']\n"  # not given


# --- update, update-flake, update-input ----------------------------------------------------


# `nixfleet update` checks that git can commit before it changes anything.
IDENTITY: dict[str, Any] = {f"GIT_{who}_{part}": value for who in ("AUTHOR", "COMMITTER")
            for part, value in (("NAME", "t"), ("EMAIL", "t@example.org"))}


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", message)


@pytest.fixture
def local_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A configuration whose flake's inputs are local git repositories (no network needed)."""
    inputs = {}
    for name in ("pkgs", "tools"):
        source = tmp_path / name
        source.mkdir()
        (source / "flake.nix").write_text("{ outputs = _: { version = 1; }; }\n")
        git(source, "init", "-q")
        commit(source, "1")
        inputs[name] = source
    config = tmp_path / "config"
    (config / "nix").mkdir(parents=True)
    shutil.copy(ROOT / "Justfile", config)
    (config / "inventory.py").write_text("")
    (config / "nix" / "flake.nix").write_text(
        "{\n  inputs.pkgs.url = \"git+file://" + str(inputs["pkgs"]) + "\";\n"
        "  inputs.tools.url = \"git+file://" + str(inputs["tools"]) + "\";\n"
        "  outputs = { self, pkgs, tools }: { };\n}\n")
    git(config, "init", "-q")
    git(config, "add", "-A")
    return config, inputs["pkgs"]


def lock_rows(output: str) -> dict[str, list[str]]:
    return {cells[0]: cells[1:] for line in output.splitlines()
            if len(cells := [c.strip() for c in line.strip("│").split("│")]) == 3
            and cells[0] in ("pkgs", "tools")}


def test_update_flake_locks_every_input_and_shows_each_change(local_inputs):
    """`nixfleet update-flake`, the lock alone (the recipes run `nixfleet update`, which
    builds and commits too: test_update.py, tests/lab/test_update_lab.py)."""
    config, pkgs = local_inputs
    first = nixfleet(config, "update-flake")
    assert first.returncode == 0, first.stderr
    rows = lock_rows(first.stdout)
    assert set(rows) == {"pkgs", "tools"} and all(before == "-" for before, _ in rows.values())
    assert "nix/flake.lock: 2 inputs changed (pkgs, tools); commit it to deploy them" in \
        first.stdout
    lock = json.loads((config / "nix" / "flake.lock").read_text())
    rev = lock["nodes"]["pkgs"]["locked"]["rev"]
    assert rows["pkgs"][1].startswith(rev[:12])

    (pkgs / "flake.nix").write_text("{ outputs = _: { version = 2; }; }\n")
    commit(pkgs, "2")
    second = nixfleet(config, "update-flake", "pkgs")
    assert second.returncode == 0, second.stderr
    rows = lock_rows(second.stdout)
    assert rows["pkgs"][0].startswith(rev[:12]) and not rows["pkgs"][1].startswith(rev[:12])
    assert rows["tools"][0] == rows["tools"][1]
    assert "nix/flake.lock: 1 input changed (pkgs); commit it to deploy them" in second.stdout

    again = nixfleet(config, "update-flake")
    assert "nix/flake.lock: unchanged" in again.stdout


def test_update_input_names_the_inputs_there_are(local_inputs):
    config, _ = local_inputs
    commit(config, "configuration")
    result = just(config, "update-input", "nixpkgs", **IDENTITY)
    assert result.returncode == 1
    assert "nixfleet: error: no input 'nixpkgs' in nix/flake.nix; inputs: pkgs, tools" in \
        result.stderr.splitlines()


def test_without_network_updating_is_one_clear_line(repo):
    commit(repo, "configuration")
    for recipe in (["update-flake"], ["update-input", "nixpkgs"]):
        result = just(repo, *recipe, **IDENTITY)
        assert result.returncode == 1
        errors = [line for line in result.stderr.splitlines()
                  if line.startswith("nixfleet: error:")]
        assert len(errors) == 1
        assert errors[0].startswith("nixfleet: error: cannot update nix/flake.lock: the flake's "
                                    "inputs cannot be fetched here (no network?): unable to "
                                    "download 'https://")
    assert not (repo / "nix" / "flake.lock").exists()


def test_update_stops_before_deploying_when_the_inputs_cannot_be_updated(repo, tmp_path):
    commit(repo, "configuration")
    log = tmp_path / "calls"
    stand_in(tmp_path / "bin", "hostname", "echo p620")
    result = just(repo, "update", PATH=minimal_path(tmp_path / "bin"), LOG=str(log),
                  **IDENTITY)
    assert result.returncode == 1
    assert "cannot update nix/flake.lock" in result.stderr
    assert "nixfleet deploy" not in result.stderr + result.stdout


@pytest.mark.parametrize(("argv", "called"), [
    (["update"], ["validate --quick", "update --deploy --limit p510"]),  # this machine
    (["update", "--canary"], ["validate --quick", "update --deploy --limit p510 --canary"]),
    (["update-flake"], ["update"]),
    (["update-flake", "--limit", "nvidia"], ["update --limit nvidia"]),
    (["update-input", "nixpkgs"], ["update --input nixpkgs"]),
    (["update-input", "nixpkgs", "--deploy"], ["update --input nixpkgs --deploy"]),
])
def test_update_recipes_run_nixfleet_update(recorded, argv, called):
    project, env = recorded
    result = just(project, *argv, **env)
    assert result.returncode == 0, result.stderr
    assert calls(env) == called


# --- deploy, per-host recipes, deploy-all --------------------------------------------------


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The Justfile with a stand-in nixfleet that records its arguments (the deploy itself is
    nixfleet deploy's, tested in test_deploy_lib.py and the lab tests)."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "Justfile", project)
    log = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    stand_in(bin_dir, "nixfleet", f'echo "$*" >> {log}\n'
             '[ "$1" != validate ] || exit "${VALIDATE_EXIT:-0}"')
    stand_in(bin_dir, "hostname", "echo p510")
    return project, {"PATH": minimal_path(bin_dir), "LOG": str(log)}


def calls(env: dict[str, str]) -> list[str]:
    path = Path(env["LOG"])
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize(("argv", "deployed"), [
    (["p620"], "deploy switch --limit p620"),
    (["razer", "--reboot"], "deploy switch --limit razer --reboot"),
    (["p510", "--no-rollback"], "deploy switch --limit p510 --no-rollback"),
    (["dex5550"], "deploy switch --limit dex5550"),
    (["deploy"], "deploy switch --limit p510"),  # this machine, by its hostname
    (["deploy-all", "-y"], "deploy switch"),
    (["deploy-all", "--no-rollback", "-y"], "deploy switch --no-rollback"),
])
def test_deploy_recipes_check_first_then_switch(recorded, argv, deployed):
    project, env = recorded
    result = just(project, *argv, **env)
    assert result.returncode == 0, result.stderr
    assert calls(env) == ["validate --quick", deployed]


def test_deploy_all_asks_first(recorded):
    project, env = recorded
    declined = just(project, "deploy-all", stdin="n\n", **env)
    assert declined.returncode == 1
    assert "Deploy to ALL hosts? [y/N]" in declined.stderr + declined.stdout
    assert "aborted: nothing was deployed" in declined.stdout
    assert calls(env) == ["validate --quick"]
    no_terminal = just(project, "deploy-all", stdin="", **env)
    assert no_terminal.returncode == 1
    accepted = just(project, "deploy-all", stdin="y\n", **env)
    assert accepted.returncode == 0
    assert calls(env)[-1] == "deploy switch"


def test_a_failed_validation_deploys_nothing(recorded):
    project, env = recorded
    result = just(project, "p620", VALIDATE_EXIT="1", **env)
    assert result.returncode == 1
    assert calls(env) == ["validate --quick"]


# --- ping-hosts ----------------------------------------------------------------------------


def test_ping_hosts_reports_each_unreachable_host_and_fails(repo):
    """The real inventory's hosts do not resolve here; the lab test pings real hosts."""
    result = just(repo, "ping-hosts", "--limit", "nvidia")
    assert result.returncode == 1
    assert "0 of 2 hosts answer over SSH; not: razer, p510" in result.stdout
    rows = json.loads(nixfleet(repo, "ping", "--json").stdout)
    assert [r["host"] for r in rows] == ["p620", "razer", "p510", "dex5550"]
    assert all(not r["ssh_ok"] and r["error"] and r["nixos_version"] is None for r in rows)

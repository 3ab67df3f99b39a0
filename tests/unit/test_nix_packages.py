"""The package the hosts get (nix/pkgs/nixfleet-host.nix) asks nixpkgs only for what nixpkgs has.

nixpkgs cannot be fetched here, so what it has is recorded in
tests/fixtures/nixpkgs/python3-packages.json, with the revision it was read at. The flake's
packages and overlay are evaluated with a stub nixpkgs made of exactly those attributes.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from nixfleet import nixcheck
from nixfleet.nixcheck import NixError

pytestmark = pytest.mark.skipif(shutil.which("nix-instantiate") is None,
                                reason="needs nix-instantiate (any Nix 2.x)")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nixpkgs"
RECORDED = FIXTURES / "python3-packages.json"
HOST_REQUIREMENTS = ["prometheus-client", "httpx"]


def recorded() -> dict:
    return json.loads(RECORDED.read_text())


def package_arguments(file: Path) -> set[str]:
    """The python3Packages attributes callPackage hands a package function."""
    args = nixcheck.evaluate("{ file }: builtins.functionArgs (import (/. + file))",
                             file=str(file))
    return set(args) - {"lib", "buildPythonApplication"}


def flake_packages(nix_dir: Path) -> dict:
    return nixcheck.evaluate(FIXTURES / "flake-packages.nix", nixDir=str(nix_dir),
                             recorded=str(RECORDED))


def pyproject_requirements(root: Path) -> list[str]:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return [re.split(r"[^A-Za-z0-9_.-]", spec, maxsplit=1)[0] for spec in project["dependencies"]]


def test_the_recorded_nixpkgs_says_where_it_comes_from():
    data = recorded()
    assert data["nixpkgs"]["repository"] == "NixOS/nixpkgs"
    assert re.fullmatch(r"[0-9a-f]{40}", data["nixpkgs"]["revision"])
    assert "pyrage" in data["absent"]
    assert not set(data["present"]) & set(data["absent"])


def test_the_hosts_package_takes_only_attributes_nixpkgs_has(root):
    wanted = package_arguments(root / "nix" / "pkgs" / "nixfleet-host.nix")
    assert wanted <= set(recorded()["present"]), wanted - set(recorded()["present"])
    assert "pyrage" not in wanted


def test_the_deployer_package_is_the_one_that_needs_pyrage(root):
    assert "pyrage" in package_arguments(root / "nix" / "pkgs" / "nixfleet.nix")


def test_the_flake_builds_the_hosts_package_from_what_nixpkgs_has(root):
    flake = flake_packages(root / "nix")
    # The deployer needs pyrage, so the flake does not offer it as a package or check.
    assert flake["packages"] == ["default", "nixfleet-host"]
    assert flake["default"] == "nixfleet-host"
    assert flake["checks"] == ["nixfleet-host"]
    assert set(flake["overlay"]) == {"nixfleet-host", "nixfleet"}
    host = flake["host"]
    assert host == flake["overlayHost"]
    assert host["dependencies"] == HOST_REQUIREMENTS
    assert host["build-system"] == ["setuptools"]
    # The wheel's metadata keeps only the hosts' requirements (nixpkgs checks it at build).
    everything = pyproject_requirements(root)
    assert set(HOST_REQUIREMENTS) <= set(everything)
    assert host["pythonRemoveDeps"] == [n for n in everything if n not in HOST_REQUIREMENTS]
    assert "pyrage" in host["pythonRemoveDeps"]
    assert "rm $out/bin/nixfleet\n" in host["postInstall"]
    assert host["pythonImportsCheck"] == ["nixfleet.exporters.nixos",
                                          "nixfleet.exporters.systemd"]


def test_a_host_package_argument_nixpkgs_lacks_fails_evaluation(root, tmp_path):
    nix = tmp_path / "nix"
    shutil.copytree(root / "nix", nix, ignore=shutil.ignore_patterns("lab"))
    shutil.copy(root / "pyproject.toml", tmp_path / "pyproject.toml")
    package = nix / "pkgs" / "nixfleet-host.nix"
    package.write_text(package.read_text().replace("  httpx,\n}:", "  httpx,\n  pyrage,\n}:"))
    with pytest.raises(NixError, match="without required argument 'pyrage'"):
        flake_packages(nix)


def test_every_host_gets_the_hosts_package(root):
    options = nixcheck.evaluate("""{ file, stubs }:
      ((import (/. + file)) (import (/. + stubs))).options.nixfleet.package.description""",
        file=str(root / "nix" / "modules" / "base.nix"),
        stubs=str(nixcheck.EXPRESSIONS / "stub-module-args.nix"))
    assert options == "package nixfleet-host"


def test_the_hosts_keep_the_console_scripts_their_modules_run(root):
    """The monitoring client runs the exporters from the hosts' package; only the deployer's
    own CLI is removed from it."""
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    client = (root / "nix" / "modules" / "monitoring" / "client.nix").read_text()
    for script in ("nixfleet-nixos-exporter", "nixfleet-systemd-exporter"):
        assert script in scripts and f'"{script}"' in client
    assert scripts["nixfleet"] == "nixfleet.cli:main"

"""The flake's packages ask nixpkgs only for what nixpkgs has, and bring the rest themselves.

The hosts' package (nix/pkgs/nixfleet-host.nix) takes only nixpkgs packages; the deployer
(nix/pkgs/nixfleet.nix) takes nixpkgs packages and the two published wheels nixpkgs lacks
(nix/pkgs/pyrage.nix, nix/pkgs/pyinfra.nix). nixpkgs cannot be fetched here, so what it has is
recorded in tests/fixtures/nixpkgs/python3-packages.json, with the revision it was read at. The
flake's packages, overlay, apps and checks are evaluated with a stub nixpkgs made of exactly
those attributes (and of nixpkgs' fetchPypi address rule).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename

from nixfleet import nixcheck
from nixfleet.nixcheck import NixError

pytestmark = pytest.mark.skipif(shutil.which("nix-instantiate") is None,
                                reason="needs nix-instantiate (any Nix 2.x)")

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "nixpkgs"
RECORDED = FIXTURES / "python3-packages.json"
HOST_REQUIREMENTS = ["prometheus-client", "httpx"]
# The deployer's dependencies that nixpkgs' python3Packages lacks: nix/pkgs/<name>.nix.
WHEELS = {"pyrage", "pyinfra"}


def recorded() -> dict:
    return json.loads(RECORDED.read_text())


def in_nixpkgs() -> set[str]:
    """What callPackage finds in the recorded python3Packages: packages and functions."""
    data = recorded()
    return set(data["present"]) | set(data["functions"])


def package_arguments(file: Path) -> set[str]:
    """The attributes callPackage hands a package function."""
    args = nixcheck.evaluate("{ file }: builtins.functionArgs (import (/. + file))",
                             file=str(file))
    return set(args)


def flake_packages(nix_dir: Path) -> dict:
    return nixcheck.evaluate(FIXTURES / "flake-packages.nix", nixDir=str(nix_dir),
                             recorded=str(RECORDED))


@pytest.fixture(scope="module")
def flake() -> dict:
    """This repository's flake, evaluated once for the tests that only read it."""
    return flake_packages(ROOT / "nix")


def copy_of_flake(root: Path, tmp_path: Path) -> Path:
    """nix/ and pyproject.toml copied under tmp_path, to break; the copy's nix/."""
    nix = tmp_path / "nix"
    shutil.copytree(root / "nix", nix, ignore=shutil.ignore_patterns("lab"))
    shutil.copy(root / "pyproject.toml", tmp_path / "pyproject.toml")
    return nix


def pyproject_dependencies(root: Path) -> list[Requirement]:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return [Requirement(spec) for spec in project["dependencies"]]


def pyproject_requirements(root: Path) -> list[str]:
    return [requirement.name for requirement in pyproject_dependencies(root)]


def test_the_recorded_nixpkgs_says_where_it_comes_from():
    data = recorded()
    assert data["nixpkgs"]["repository"] == "NixOS/nixpkgs"
    assert re.fullmatch(r"[0-9a-f]{40}", data["nixpkgs"]["revision"])
    assert set(data["absent"]) >= WHEELS
    assert not set(data["present"]) & set(data["absent"])
    # No version is invented: the note says why none was read.
    assert data["nixpkgs"]["versions"].startswith("none recorded")


def test_the_hosts_package_takes_only_attributes_nixpkgs_has(root):
    wanted = package_arguments(root / "nix" / "pkgs" / "nixfleet-host.nix")
    assert wanted <= in_nixpkgs(), wanted - in_nixpkgs()
    assert not wanted & WHEELS


def test_the_deployer_takes_nixpkgs_packages_and_the_wheels_of_nix_pkgs(root):
    pkgs = root / "nix" / "pkgs"
    wanted = package_arguments(pkgs / "nixfleet.nix")
    assert wanted - in_nixpkgs() == WHEELS
    for name in WHEELS:
        wheel = package_arguments(pkgs / f"{name}.nix")
        assert wheel <= in_nixpkgs(), (name, wheel - in_nixpkgs())


def test_the_flake_offers_the_deployer_as_package_app_and_check(root, flake):
    assert flake["packages"] == ["default", "nixfleet", "nixfleet-host"]
    assert flake["default"] == "nixfleet-host"
    assert flake["checks"] == ["nixfleet", "nixfleet-host"]
    assert flake["checkedDeployer"] == "nixfleet"
    assert set(flake["overlay"]) == {"nixfleet-host", "nixfleet"}
    deployer = flake["deployer"]
    assert deployer == flake["overlayDeployer"]
    # `nix run ./nix#nixfleet` runs the CLI pyproject.toml installs as `nixfleet`.
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert deployer["mainProgram"] == "nixfleet" and "nixfleet" in scripts
    app = flake["apps"]["nixfleet"]
    assert app["type"] == "app"
    assert app["program"].endswith("/bin/nixfleet")
    assert deployer["pythonImportsCheck"] == ["nixfleet", "nixfleet.cli"]


def test_the_deployer_has_every_pyproject_dependency_held_to_its_bounds(root, flake):
    deployer = flake["deployer"]
    assert deployer["dependencies"] == pyproject_requirements(root)
    assert deployer["build-system"] == ["setuptools"]
    # Nothing relaxes nixpkgs' runtime-dependency check, which holds every dependency to
    # pyproject.toml's bounds when the package is built.
    relaxing = {"pythonRemoveDeps", "pythonRelaxDeps", "dontCheckRuntimeDeps"}
    assert not relaxing & set(deployer["attributes"])


def test_the_wheels_are_published_files_fetched_by_name_with_the_hash_written_down(root, flake):
    wheels = {wheel["pname"]: wheel for wheel in flake["deployer"]["wheels"]}
    assert set(wheels) == WHEELS
    bounds = {dependency.name: dependency.specifier for dependency in pyproject_dependencies(root)}
    for name, wheel in wheels.items():
        text = (root / "nix" / "pkgs" / f"{name}.nix").read_text()
        src = wheel["src"]
        assert wheel["format"] == "wheel" and src["fetcher"] == "fetchPypi"
        assert src["format"] == "wheel"
        # The version pyproject.toml allows.
        assert wheel["version"] in bounds[name], (name, wheel["version"], bounds[name])
        # fetchPypi's address (nixpkgs' rule, reproduced by the stub) names the file written
        # in the comment: this name and version, for x86_64 Linux and for every Python 3 from
        # 3.11 (pyproject's requires-python) on, since nixpkgs' python3 moves with releases: a
        # pure-Python wheel or CPython's stable ABI.
        address = urlsplit(src["url"])
        assert address.hostname == "files.pythonhosted.org"
        filename = address.path.rsplit("/", 1)[-1]
        assert re.search(rf"^# {re.escape(filename)}$", text, re.M), (name, filename)
        parsed_name, version, _, tags = parse_wheel_filename(filename)
        assert (parsed_name, str(version)) == (name, wheel["version"])
        assert any(tag.platform == "any"
                   or (tag.platform.startswith("manylinux") and tag.platform.endswith("_x86_64"))
                   for tag in tags), (name, tags)
        assert all(tag.interpreter == "py3"
                   or (tag.abi == "abi3" and tag.interpreter.startswith("cp3")
                       and int(tag.interpreter.removeprefix("cp3")) <= 11)
                   for tag in tags), (name, tags)
        # The hash is an SRI sha256 and is the hexadecimal digest the comment records.
        assert src["sha256"] == ""
        assert src["hash"].startswith("sha256-")
        digest = base64.b64decode(src["hash"].removeprefix("sha256-"), validate=True)
        assert len(digest) == 32
        assert re.search(rf"^# sha256 {digest.hex()}\b", text, re.M), (name, digest.hex())
        assert wheel["pythonImportsCheck"][0] == name


def test_the_wheel_packages_write_no_address(root):
    for name in WHEELS:
        text = (root / "nix" / "pkgs" / f"{name}.nix").read_text()
        assert "://" not in text, name
        assert not re.search(r"\burl\b|fetchurl|pythonhosted|pypi\.org", text), name


def test_pyrage_is_patched_to_find_its_c_runtime(flake):
    wheels = flake["deployer"]["wheels"]
    pyrage = next(wheel for wheel in wheels if wheel["pname"] == "pyrage")
    assert pyrage["nativeBuildInputs"] == ["autoPatchelfHook"]
    assert pyrage["buildInputs"] == ["gcc"]  # libgcc_s.so.1, in gcc's lib output


def test_pyinfra_drops_only_the_stubs_nixpkgs_lacks(flake):
    wheels = flake["deployer"]["wheels"]
    pyinfra = next(wheel for wheel in wheels if wheel["pname"] == "pyinfra")
    assert pyinfra["pythonRemoveDeps"] == ["types-paramiko"]
    assert "types-paramiko" in recorded()["absent"]
    assert set(pyinfra["dependencies"]) <= set(recorded()["present"])


def test_an_address_written_into_a_wheel_package_fails_evaluation(root, tmp_path):
    """fetchPypi computes the address; like nixpkgs', the stub refuses one given to it."""
    nix = copy_of_flake(root, tmp_path)
    package = nix / "pkgs" / "pyrage.nix"
    text = package.read_text()
    package.write_text(text.replace('    hash = "', '    url = "https://example.invalid/x.whl";\n'
                                    '    hash = "', 1))
    with pytest.raises(NixError, match="unexpected argument 'url'"):
        flake_packages(nix)


def test_the_flake_without_the_pyrage_package_fails_evaluation(root, tmp_path):
    nix = copy_of_flake(root, tmp_path)
    (nix / "pkgs" / "pyrage.nix").unlink()
    with pytest.raises(NixError, match=r"pkgs/pyrage\.nix"):
        flake_packages(nix)


def test_the_flake_builds_the_hosts_package_from_what_nixpkgs_has(root, flake):
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
    nix = copy_of_flake(root, tmp_path)
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

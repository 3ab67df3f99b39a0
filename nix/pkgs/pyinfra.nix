# pyinfra, which the deployer runs for every deploy: its published wheel (pure Python), installed
# as it is. The recorded nixpkgs has no python3Packages.pyinfra (tests/fixtures/nixpkgs), and
# pyproject.toml needs 3.10 or later, so the version is pinned here. fetchPypi computes where the
# file is from the name, version and tags below, so no address is written here.
#
# Version: what pyproject.toml allows (pyinfra>=3.10,<4) and what the development virtualenv
# installs. File (any Python 3):
# pyinfra-3.10.0-py3-none-any.whl
# Hash checked on 2026-12-07 against the file downloaded from PyPI (pip download):
# sha256 668268db8df54c23a1e684d260121a6e23330c942f60048138597303227e48fb, the digest PyPI
# publishes for it; in SRI form (`nix hash file`, and Python's hashlib + base64) below.
# Every argument below is checked against the recorded nixpkgs by tests/unit/test_nix_packages.py.
{
  lib,
  buildPythonPackage,
  fetchPypi,
  click,
  distro,
  gevent,
  jinja2,
  packaging,
  paramiko,
  pydantic,
  python-dateutil,
  typeguard,
}:
let
  pname = "pyinfra";
  version = "3.10.0";
in
buildPythonPackage {
  inherit pname version;
  format = "wheel";

  src = fetchPypi {
    inherit pname version;
    format = "wheel";
    dist = "py3";
    python = "py3";
    hash = "sha256-ZoJo2431TCOh5oTSYBIabiMzDJQvYASBOFlzAyJ+SPs=";
  };

  # The wheel's requirements (its METADATA), less the two below.
  dependencies = [
    click
    distro
    gevent
    jinja2
    packaging
    paramiko
    pydantic
    python-dateutil
    typeguard
  ];
  # Type stubs for paramiko: nothing imports them at run time, and nixpkgs has no package of
  # them. (typing-extensions is required only below Python 3.11.)
  pythonRemoveDeps = [ "types-paramiko" ];

  pythonImportsCheck = [
    "pyinfra"
    "pyinfra_cli"
  ];

  meta = {
    description = "pyinfra, infrastructure automation in Python, from the published wheel";
    license = lib.licenses.mit;
    mainProgram = "pyinfra";
  };
}

# This repository's Python package as the deployer installs it (the nixfleet CLI and everything
# it needs), built from the source beside the flake. Name and version come from pyproject.toml,
# so they are written once. The flake passes pyrage and pyinfra from ./pyrage.nix and
# ./pyinfra.nix (nixpkgs' python3Packages has neither); the rest are nixpkgs' python3Packages,
# one argument per pyproject.toml dependency. The build's runtime-dependency check holds each of
# them to pyproject.toml's version bounds.
# The hosts get ./nixfleet-host.nix.
{
  lib,
  buildPythonApplication,
  setuptools,
  pyinfra,
  pyyaml,
  pyrage,
  jinja2,
  prometheus-client,
  httpx,
  pytest-testinfra,
  pydantic,
  rich,
  typing-extensions,
  cryptography,
}:
let
  root = ../..;
  project = (lib.importTOML (root + "/pyproject.toml")).project;
in
buildPythonApplication {
  pname = project.name;
  inherit (project) version;
  pyproject = true;

  # Only what the wheel is made of, so editing tests or nix/ does not rebuild the package.
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (root + "/pyproject.toml")
      (root + "/README.md")
      (lib.fileset.maybeMissing (root + "/nixfleet"))
      (lib.fileset.maybeMissing (root + "/facts"))
      (lib.fileset.maybeMissing (root + "/operations"))
    ];
  };

  build-system = [ setuptools ];
  dependencies = [
    pyinfra
    pyyaml
    pyrage
    jinja2
    prometheus-client
    httpx
    pytest-testinfra
    pydantic
    rich
    typing-extensions
    cryptography
  ];

  # The unit tests need the inventory, nix-instantiate and (for some) the lab; they run in the
  # repository (`pytest`), not in the sandbox. Importing the CLI catches a broken package.
  doCheck = false;
  pythonImportsCheck = [
    "nixfleet"
    "nixfleet.cli"
  ];

  meta = {
    inherit (project) description;
    license = lib.licenses.mit;
    mainProgram = "nixfleet";
  };
}

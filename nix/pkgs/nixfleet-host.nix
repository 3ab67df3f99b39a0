# What every fleet host runs from this repository: the exporters (nixfleet-nixos-exporter,
# nixfleet-systemd-exporter) and ai-cli, built from the same source as the deployer
# (./nixfleet.nix) but with only the nixpkgs packages those need. The deployer's dependencies
# (pyinfra, pyrage, pytest-testinfra, ...) stay out: the hosts never run them, and pyrage is not
# in nixpkgs at all, so a host package that took it would fail every host's evaluation.
# tests/unit/test_nix_packages.py checks every argument here against a recorded nixpkgs.
{
  lib,
  buildPythonApplication,
  setuptools,
  prometheus-client,
  httpx,
}:
let
  root = ../..;
  project = (lib.importTOML (root + "/pyproject.toml")).project;
  # The exporters import prometheus_client; ai-cli talks HTTP with httpx. Names as in
  # pyproject.toml's dependencies.
  hostRequirements = [
    "prometheus-client"
    "httpx"
  ];
  requirementName = spec: builtins.head (builtins.match "([A-Za-z0-9_.-]+).*" spec);
  deployerOnly = builtins.filter (name: !builtins.elem name hostRequirements) (
    map requirementName project.dependencies
  );
in
buildPythonApplication {
  pname = "${project.name}-host";
  inherit (project) version;
  pyproject = true;

  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (root + "/pyproject.toml")
      (root + "/README.md")
      (root + "/nixfleet")
    ];
  };

  build-system = [ setuptools ];
  dependencies = [
    prometheus-client
    httpx
  ];
  # The wheel's metadata names the deployer's dependencies too; nixpkgs' runtime-deps check
  # would refuse the package without them (pythonRelaxDepsHook removes them from METADATA).
  pythonRemoveDeps = deployerOnly;
  # The deployer's CLI needs what the hosts do not have; the other console scripts stay.
  postInstall = ''
    rm $out/bin/nixfleet
  '';

  doCheck = false;
  pythonImportsCheck = [
    "nixfleet.exporters.nixos"
    "nixfleet.exporters.systemd"
  ];

  meta = {
    description = "nixfleet's programs for the fleet's hosts: exporters and ai-cli";
    license = lib.licenses.mit;
    mainProgram = "nixfleet-nixos-exporter";
  };
}

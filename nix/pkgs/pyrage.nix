# pyrage (age encryption, what nixfleet's secrets are written with), which nixpkgs does not
# package: its published wheel for x86_64 Linux, installed as it is. fetchPypi computes where the
# file is from the name, version and tags below, so no address is written here.
#
# Version: what pyproject.toml allows (pyrage>=1.2) and what the development virtualenv installs.
# File (CPython 3.10 or later, stable ABI):
# pyrage-1.4.0-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
# Hash checked on 2026-12-07 against the file downloaded from PyPI (pip download):
# sha256 7f4eb0cbc2b4aee5deac9862c47b3895866df5554153951af822e9c581e68558, the digest PyPI
# publishes for it; in SRI form (`nix hash file`, and Python's hashlib + base64) below.
# tests/unit/test_nix_packages.py evaluates this file against a recorded nixpkgs.
{
  lib,
  stdenv,
  buildPythonPackage,
  fetchPypi,
  autoPatchelfHook,
}:
let
  pname = "pyrage";
  version = "1.4.0";
in
buildPythonPackage {
  inherit pname version;
  format = "wheel";

  src = fetchPypi {
    inherit pname version;
    format = "wheel";
    dist = "cp310";
    python = "cp310";
    abi = "abi3";
    platform = "manylinux_2_17_x86_64.manylinux2014_x86_64";
    hash = "sha256-f06wy8K0ruXerJhixHs4lYZt9VVBU5Ua+CLpxYHmhVg=";
  };

  # The extension module (Rust, built by maturin) needs libgcc_s.so.1, which NixOS keeps in
  # gcc's lib output instead of a system library directory.
  nativeBuildInputs = [ autoPatchelfHook ];
  buildInputs = [ (lib.getLib stdenv.cc.cc) ];

  pythonImportsCheck = [
    "pyrage"
    "pyrage.ssh"
    "pyrage.x25519"
  ];

  meta = {
    description = "Python bindings for rage (age encryption), from the published wheel";
    license = lib.licenses.mit;
    platforms = [ "x86_64-linux" ];
    sourceProvenance = [ lib.sourceTypes.binaryNativeCode ];
  };
}

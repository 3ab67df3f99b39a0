# features.development: language toolchains and developer tools, one flag per stack.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) concatLists mapAttrsToList mkEnableOption mkIf optionals;
  cfg = config.nixfleet.features.development;

  packagesFor = with pkgs; {
    python = [
      python3
      uv
      ruff
    ];
    go = [
      go
      gopls
    ];
    nodejs = [ nodejs ];
    java = [ jdk ];
    lua = [
      lua
      lua-language-server
    ];
    nix = [
      nil
      nixfmt
      nix-tree
    ];
    shell = [
      shellcheck
      shfmt
    ];
    ansible = [ ansible ];
    cargo = [
      cargo
      rustc
      rust-analyzer
    ];
    github = [ gh ];
  };
in
{
  options.nixfleet.features.development = {
    enable = mkEnableOption "development tools";
    python = mkEnableOption "Python (interpreter, uv, ruff)";
    go = mkEnableOption "Go (compiler, gopls)";
    nodejs = mkEnableOption "Node.js";
    java = mkEnableOption "a Java JDK";
    lua = mkEnableOption "Lua and its language server";
    nix = mkEnableOption "Nix tooling (nil, nixfmt, nix-tree)";
    shell = mkEnableOption "shell tooling (shellcheck, shfmt)";
    ansible = mkEnableOption "Ansible";
    cargo = mkEnableOption "Rust (cargo, rustc, rust-analyzer)";
    github = mkEnableOption "the GitHub CLI";
    devshell = mkEnableOption "direnv with nix-direnv for per-project development shells";
  };

  config = mkIf cfg.enable {
    environment.systemPackages = concatLists (
      mapAttrsToList (stack: packages: optionals cfg.${stack} packages) packagesFor
    );
    programs.direnv = mkIf cfg.devshell {
      enable = true;
      nix-direnv.enable = true;
    };
  };
}

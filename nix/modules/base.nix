# What every fleet host shares: flakes, SSH for the deployer, the hosts' nixfleet package.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkEnableOption mkIf mkPackageOption;
  cfg = config.nixfleet.base;
in
{
  options.nixfleet = {
    base.enable = mkEnableOption "the settings every fleet host shares" // {
      default = true;
    };
    # The hosts' build of this repository (../pkgs/nixfleet-host.nix), not the deployer's.
    package = mkPackageOption pkgs "nixfleet-host" {
      extraDescription = "It provides the exporters and ai-cli; the flake's overlay adds it to pkgs.";
    };
  };

  config = mkIf cfg.enable {
    nix.settings = {
      experimental-features = [
        "nix-command"
        "flakes"
      ];
      # Deploys copy closures built elsewhere (`nixos-rebuild --build-host`) as a wheel user.
      trusted-users = [
        "root"
        "@wheel"
      ];
    };
    # NVIDIA drivers, CUDA, 1Password, Obsidian and Terraform are unfree.
    nixpkgs.config.allowUnfree = true;

    services.openssh = {
      enable = true;
      settings = {
        PasswordAuthentication = false;
        KbdInteractiveAuthentication = false;
        PermitRootLogin = "prohibit-password";
      };
    };
    networking.firewall.enable = true;
    programs.git.enable = true;
  };
}

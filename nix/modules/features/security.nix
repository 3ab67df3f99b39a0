# features.security: password manager and GnuPG.
{ config, lib, ... }:
let
  inherit (lib) mkEnableOption mkIf mkMerge;
  cfg = config.nixfleet.features.security;
in
{
  options.nixfleet.features.security = {
    enable = mkEnableOption "security tooling";
    onepassword = mkEnableOption "1Password (CLI and desktop app)";
    gnupg = mkEnableOption "the GnuPG agent, also as SSH agent";
  };

  config = mkIf cfg.enable (mkMerge [
    (mkIf cfg.onepassword {
      programs._1password.enable = true;
      programs._1password-gui = {
        enable = true;
        # Lets the host's people unlock the CLI through the desktop app.
        polkitPolicyOwners = map (user: user.name) config.nixfleet.users;
      };
    })
    (mkIf cfg.gnupg {
      programs.gnupg.agent = {
        enable = true;
        enableSSHSupport = true;
      };
    })
  ]);
}

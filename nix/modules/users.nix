# The host's people (hostUsers): accounts, SSH keys, and the password hash from agenix.
{ config, lib, ... }:
let
  inherit (lib) listToAttrs mkIf mkOption types;
  cfg = config.nixfleet;
  # agenix's option tree, or nothing where agenix is not imported.
  ageSecrets = config.age.secrets or { };

  userType = types.submodule {
    options = {
      name = mkOption {
        type = types.str;
        description = "Login name.";
      };
      fullName = mkOption {
        type = types.str;
        description = "Full name (GECOS field, git identity).";
      };
      email = mkOption {
        type = types.str;
        default = "";
        description = "E-mail address for git; empty for none.";
      };
      sshKey = mkOption {
        type = types.str;
        description = "OpenSSH public key allowed to log in as this user.";
      };
      groups = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Supplementary groups.";
      };
    };
  };
in
{
  options.nixfleet.users = mkOption {
    type = types.listOf userType;
    default = [ ];
    description = ''
      People with an account on this host, in inventory order; the first is the host's admin.
      A secret named `user-password-<name>` becomes the user's hashedPasswordFile.
    '';
  };

  config = mkIf (cfg.users != [ ]) {
    users.users = listToAttrs (
      map (user: {
        inherit (user) name;
        value = {
          isNormalUser = true;
          description = user.fullName;
          extraGroups = user.groups;
          openssh.authorizedKeys.keys = [ user.sshKey ];
          hashedPasswordFile = (ageSecrets."user-password-${user.name}" or { path = null; }).path;
        };
      }) cfg.users
    );
  };
}

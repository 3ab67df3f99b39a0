# agenix secrets this host may decrypt, with their owner, group and mode. lib/secrets.nix picks
# them for the host from nix/secrets.json; agenix decrypts them to /run/agenix/<name>.
{ config, lib, ... }:
let
  inherit (lib)
    attrValues
    genAttrs
    mapAttrs
    mapAttrsToList
    mkEnableOption
    mkIf
    mkOption
    types
    unique
    ;
  cfg = config.nixfleet.secrets;

  secretType = types.submodule {
    options = {
      file = mkOption {
        type = types.path;
        description = "The encrypted .age file.";
      };
      owner = mkOption {
        type = types.str;
        default = "root";
        description = "User owning the decrypted file.";
      };
      group = mkOption {
        type = types.str;
        default = "root";
        description = "Group owning the decrypted file.";
      };
      mode = mkOption {
        type = types.strMatching "0[0-7]{3}";
        default = "0400";
        description = "Permissions of the decrypted file.";
      };
    };
  };
in
{
  options.nixfleet.secrets = {
    enable = mkEnableOption "the agenix secrets this host may decrypt";
    declarations = mkOption {
      type = types.attrsOf secretType;
      default = { };
      description = "Secrets by name (the name of /run/agenix/<name>).";
    };
  };

  config = mkIf cfg.enable {
    assertions = mapAttrsToList (name: secret: {
      assertion = builtins.pathExists secret.file;
      message = "secret ${name}: ${toString secret.file} does not exist (encrypt it into secrets/ first)";
    }) cfg.declarations;

    age.secrets = mapAttrs (name: secret: {
      inherit (secret)
        file
        owner
        group
        mode
        ;
    }) cfg.declarations;

    # A secret shared with a group (docker-auth is root:docker) needs that group on every host
    # that receives it, whether or not the host runs the group's service.
    users.groups = genAttrs (unique (map (secret: secret.group) (attrValues cfg.declarations))) (
      group: { }
    );
  };
}

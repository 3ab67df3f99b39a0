# What nixfleet's health gate checks after a switch: every service a module turns on, with its
# unit and port. Written to /etc/nixfleet/health.tsv (NAME<TAB>UNIT<TAB>PORT), which the gate
# reads from the running generation (nixfleet/remote/health.sh); modules add their services.
{ config, lib, ... }:
let
  inherit (lib) concatStrings mapAttrsToList mkOption types;
in
{
  options.nixfleet.health.services = mkOption {
    type = types.attrsOf (types.submodule {
      options = {
        unit = mkOption {
          type = types.str;
          description = "The systemd unit that must be active.";
        };
        port = mkOption {
          type = types.nullOr types.port;
          default = null;
          description = "A TCP port on localhost that must accept connections.";
        };
      };
    });
    default = { };
    description = "Services the deploy health gate checks, by name.";
  };

  config.environment.etc."nixfleet/health.tsv".text = concatStrings (mapAttrsToList
    (name: service: "${name}\t${service.unit}\t${
      if service.port == null then "" else toString service.port}\n")
    config.nixfleet.health.services);
}

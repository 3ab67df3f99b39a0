# The boot loader's generation limit, from the host's data (`boot` in the inventory): how many
# generations systemd-boot (or lanzaboote) keeps on the boot partition. A deploy's pre-flight
# and `nixfleet gc` read the same numbers; README.md, "Boot space".
{ config, lib, options, ... }:
let
  inherit (lib) mkIf mkMerge mkOption optional types;
  cfg = config.nixfleet.boot;
  # lanzaboote's module is no input of this flake: a host that names it must add it.
  hasLanzaboote = options.boot ? lanzaboote;
in
{
  options.nixfleet.boot = {
    loader = mkOption {
      type = types.enum [ "systemd-boot" "lanzaboote" ];
      default = "systemd-boot";
      description = "The boot loader whose configurationLimit is set.";
    };
    configurationLimit = mkOption {
      type = types.ints.positive;
      default = 10;
      description = "Generations the boot loader keeps on the boot partition.";
    };
  };

  config = mkMerge ([
    (mkIf (cfg.loader == "systemd-boot") {
      boot.loader.systemd-boot.configurationLimit = cfg.configurationLimit;
    })
    {
      assertions = [{
        assertion = cfg.loader != "lanzaboote" || hasLanzaboote;
        message = "boot.loader = lanzaboote: add lanzaboote's NixOS module to the flake";
      }];
    }
  ] ++ optional hasLanzaboote (mkIf (cfg.loader == "lanzaboote") {
    boot.lanzaboote.configurationLimit = cfg.configurationLimit;
  }));
}

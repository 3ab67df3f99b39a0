# Each host as the flake reads it (lib/fleet.nix) and as lib/host-module.nix turns it into
# option values (with an empty secrets table: secrets have their own check).
{ nixDir }:
let
  dir = /. + nixDir;
  fleet = import (dir + "/lib/fleet.nix") { hostsDir = dir + "/hosts"; };
  hostModule = name: import (dir + "/lib/host-module.nix") {
    data = fleet.hosts.${name};
    inherit fleet;
    secrets = { };
    secretsRoot = "/";
    binaryCachePublicKey = "cache-1:key";
  };
in
builtins.listToAttrs (map (name: {
  inherit name;
  value = {
    data = fleet.hosts.${name};
    hostUsers = fleet.hostUsers name;
    module = hostModule name;
  };
}) fleet.names)

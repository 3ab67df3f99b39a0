# The flake's outputs with stub inputs: nixosSystem hands back the modules it was given, and
# each host's home-manager users show which home files mkHost gave them.
{ nixDir }:
let
  flake = import (/. + nixDir + "/flake.nix");
  describe = import ./module-name.nix;
  inputs = {
    self = outputs;
    nixpkgs = {
      lib.nixosSystem = args: { _nixosSystem = args; };
      legacyPackages = { };
    };
    home-manager.nixosModules.home-manager = "<home-manager>";
    agenix.nixosModules.default = "<agenix>";
  };
  outputs = flake.outputs inputs;
  homes = modules: builtins.foldl' (a: b: a // b) { } (map
    (m: builtins.mapAttrs (user: home: map describe home.imports) m.home-manager.users)
    (builtins.filter (m: builtins.isAttrs m && m ? home-manager) modules));
in
builtins.mapAttrs (name: system: {
  modules = map describe system._nixosSystem.modules;
  homes = homes system._nixosSystem.modules;
}) outputs.nixosConfigurations

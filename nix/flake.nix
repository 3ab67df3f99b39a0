# The fleet's NixOS flake. Every host is built by one mkHost from the data `nixfleet generate`
# writes from the inventory (hosts/<host>.json); the host list is that directory.
#
#   nix build ./nix#nixosConfigurations.p620.config.system.build.toplevel
#
# What is checked without nixpkgs and what needs a machine with it: see README.md here.
{
  description = "nixfleet: the fleet's NixOS configurations, driven by the inventory";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    home-manager = {
      url = "github:nix-community/home-manager/release-26.05";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    agenix = {
      url = "github:ryantm/agenix";
      inputs.nixpkgs.follows = "nixpkgs";
      inputs.home-manager.follows = "home-manager";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      home-manager,
      agenix,
      ...
    }:
    let
      # Every host is x86_64 (the inventory has no architecture field).
      system = "x86_64-linux";
      fleet = import ./lib/fleet.nix { hostsDir = ./hosts; };
      mkHost = import ./lib/mk-host.nix {
        inherit
          nixpkgs
          home-manager
          agenix
          self
          fleet
          system
          ;
        # secrets.json names files relative to the repository root (secrets/<name>.age).
        secretsRoot = ./..;
      };
      pkgs = nixpkgs.legacyPackages.${system};
    in
    {
      nixosConfigurations = builtins.listToAttrs (
        map (name: {
          inherit name;
          value = mkHost name;
        }) fleet.names
      );

      nixosModules.default = ./modules;

      # nixfleet-host: what the hosts run (exporters, ai-cli; modules/base.nix's
      # nixfleet.package). nixfleet: the deployer, for a nixpkgs that has python3Packages.pyrage
      # (nixpkgs 26.05 does not: install the deployer with pip, see README.md).
      overlays.default = final: prev: {
        nixfleet-host = final.python3Packages.callPackage ./pkgs/nixfleet-host.nix { };
        nixfleet = final.python3Packages.callPackage ./pkgs/nixfleet.nix {
          pyrage =
            final.python3Packages.pyrage
              or (throw "nixfleet (the deployer) needs python3Packages.pyrage, which nixpkgs does not have; add it with an overlay or install the deployer with pip");
        };
      };

      packages.${system} = {
        nixfleet-host = pkgs.python3Packages.callPackage ./pkgs/nixfleet-host.nix { };
        default = self.packages.${system}.nixfleet-host;
      };

      # `nix flake check` evaluates every nixosConfiguration; this also builds the package.
      checks.${system}.nixfleet-host = self.packages.${system}.nixfleet-host;
    };
}

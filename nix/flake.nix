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

      overlays.default = final: prev: {
        nixfleet = final.python3Packages.callPackage ./pkgs/nixfleet.nix { };
      };

      packages.${system} = {
        nixfleet = pkgs.python3Packages.callPackage ./pkgs/nixfleet.nix { };
        default = self.packages.${system}.nixfleet;
      };

      # `nix flake check` evaluates every nixosConfiguration; this also builds the package.
      checks.${system}.nixfleet = self.packages.${system}.nixfleet;
    };
}

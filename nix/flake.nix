# The fleet's NixOS flake. Every host is built by one mkHost from the data `nixfleet generate`
# writes from the inventory (hosts/<host>.json); the host list is that directory.
#
#   nix build ./nix#nixosConfigurations.p620.config.system.build.toplevel
#   nix run ./nix#nixfleet -- deploy switch      # the deployer itself
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
      # The deployer with the two Python packages nixpkgs' python3Packages lacks, built from
      # their published wheels (pkgs/pyrage.nix, pkgs/pyinfra.nix).
      deployer =
        python3Packages:
        python3Packages.callPackage ./pkgs/nixfleet.nix {
          pyrage = python3Packages.callPackage ./pkgs/pyrage.nix { };
          pyinfra = python3Packages.callPackage ./pkgs/pyinfra.nix { };
        };
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
      # nixfleet.package). nixfleet: the deployer (`nix run ./nix#nixfleet`).
      overlays.default = final: prev: {
        nixfleet-host = final.python3Packages.callPackage ./pkgs/nixfleet-host.nix { };
        nixfleet = deployer final.python3Packages;
      };

      packages.${system} = {
        nixfleet-host = pkgs.python3Packages.callPackage ./pkgs/nixfleet-host.nix { };
        nixfleet = deployer pkgs.python3Packages;
        default = self.packages.${system}.nixfleet-host;
      };

      apps.${system}.nixfleet = {
        type = "app";
        program = "${self.packages.${system}.nixfleet}/bin/nixfleet";
      };

      # `nix flake check` evaluates every nixosConfiguration and builds both packages (the
      # deployer's build checks its dependencies against pyproject.toml's version bounds).
      checks.${system} = {
        inherit (self.packages.${system}) nixfleet-host nixfleet;
      };
    };
}

# mkHost: one NixOS system per generated host file. Everything host-specific comes from the
# host's data (host-module.nix); the modules in ../modules know no host.
{
  nixpkgs,
  home-manager,
  agenix,
  self,
  fleet,
  system,
  secretsRoot,
}:
let
  secrets = builtins.fromJSON (builtins.readFile ../secrets.json);
  # One line "name:base64"; the signing key's secret half is the agenix secret binary-cache-key.
  binaryCachePublicKey = builtins.head (builtins.match "[[:space:]]*([^[:space:]]+)[[:space:]]*"
    (builtins.readFile ../binary-cache.pub));
  # Optional: the public half of the agenix secret builder-ssh-key, with which hosts fetch from a
  # builder that runs no binary cache (modules/binary-cache.nix's fetchKey).
  builderSshPublicKey =
    if builtins.pathExists ../builder-ssh.pub then
      builtins.head (builtins.match "[[:space:]]*([^\n]*[^[:space:]])[[:space:]]*" (builtins.readFile ../builder-ssh.pub))
    else
      "";

  # A host's own hardware-configuration.nix (nixos-generate-config) when the repository has one,
  # else the NixOS manual's labelled layout, with a warning.
  hardwareModule =
    name:
    let
      own = ../hardware + "/${name}.nix";
    in
    if builtins.pathExists own then own else import ../hardware/labelled-disks.nix { hostName = name; };
in
name:
let
  data = fleet.hosts.${name};
in
nixpkgs.lib.nixosSystem {
  modules = [
    ../modules
    agenix.nixosModules.default
    home-manager.nixosModules.home-manager
    (hardwareModule name)
    (import ./host-module.nix {
      inherit
        data
        fleet
        secrets
        secretsRoot
        binaryCachePublicKey
        builderSshPublicKey
        ;
    })
    {
      nixpkgs.hostPlatform = system;
      nixpkgs.overlays = [ self.overlays.default ];
      system.configurationRevision = self.rev or self.dirtyRev or null;
      home-manager = {
        useGlobalPkgs = true;
        useUserPackages = true;
        users = builtins.listToAttrs (
          map (user: {
            inherit (user) name;
            value = import ./home-module.nix {
              inherit user data;
              usersDir = ../users;
            };
          }) data.users
        );
      };
    }
  ];
}

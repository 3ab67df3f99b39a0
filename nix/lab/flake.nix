# The lab flake: each lab host's toplevel, built from the same nix/hosts/<host>.json data the
# real flake (nix/flake.nix) reads, but without nixpkgs, which cannot be fetched here.
# STAND-IN: the toplevel has NixOS's shape (nixos-version, kernel, kernel-modules, initrd,
# etc/systemd/system, bin/switch-to-configuration) and is activated by the lab's
# switch-to-configuration, which installs and starts the units for real.
#
# On a lab host this directory is /etc/nixos, with hosts/*.json and lab.json beside it, the
# real flake's lib/ports.json and lib/ai-providers.nix (so /etc/ai-providers.json is the real
# flake's), its flake.nix as lib/fleet-flake.nix (whose nixpkgs input gives the NixOS release,
# read by lib/nixos-release.nix, nixfleet's own), and the lab's secrets: secrets/<name>.age
# (encrypted to the lab hosts' keys) and,
# per host, hosts/<host>.secrets.json (which of them it receives, with owner, group and mode),
# binary-cache.pub and builder-ssh.pub (the public halves of the lab's binary-cache-key and
# builder-ssh-key).
{
  description = "nixfleet lab hosts (stand-in NixOS toplevels, no nixpkgs)";

  # The lab's stand-in for nixpkgs, the package versions (labpkgs/): an input that moves,
  # offline. On a lab host it is /etc/nixos/labpkgs, with flake.lock beside flake.nix
  # (nixfleet/lab/target.py sends both, the lock pointing at where the host has it).
  inputs.labpkgs.url = "path:./labpkgs";

  outputs = { self, labpkgs }:
    let
      lab = builtins.fromJSON (builtins.readFile ./lab.json);
      jsonFiles = builtins.filter (f: builtins.match ".*\\.json" f != null)
        (builtins.attrNames (builtins.readDir ./hosts));
      hostNames = builtins.filter (f: builtins.match ".*\\.(extra-units|secrets)" f == null)
        (map (f: builtins.head (builtins.match "(.*)\\.json" f)) jsonFiles);
      readJSON = path: builtins.fromJSON (builtins.readFile path);
      # The release the real hosts run: the real flake's nixpkgs input (lib/fleet-flake.nix).
      nixosRelease = import ./lib/nixos-release.nix { flake = ./lib/fleet-flake.nix; };
      mkHost = name:
        let
          faultFile = ./faults + "/${name}.json";
          gateFile = ./faults + "/${name}.build-gate";
          secretsFile = ./hosts + "/${name}.secrets.json";
          toplevel = import ./toplevel.nix {
            inherit name;
            inherit (lab) system;
            inherit nixosRelease;
            inherit (labpkgs) versions;
            data = readJSON (./hosts + "/${name}.json");
            # Lab-only fault injection: units that tests add to one host's generation.
            extraUnits = if builtins.pathExists faultFile then readJSON faultFile else { };
            # Lab-only: a build that waits until a file exists on the host (lock tests).
            buildGate = if builtins.pathExists gateFile then builtins.readFile gateFile else null;
            # The monitoring server's files, rendered for the lab's addresses by the same code
            # as nix/monitoring/ (nixfleet/lab/target.py); one store path for all of them.
            monitoringFiles = if builtins.pathExists ./monitoring then ./monitoring else null;
            # agenix's age.secrets for this host: the .age files become store paths of the
            # generation, so a changed secret makes a new generation.
            secrets = map (s: s // { file = "${./secrets + "/${s.name}.age"}"; })
              (if builtins.pathExists secretsFile then readJSON secretsFile else [ ]);
            # The public half of the lab's binary-cache-key (nixfleet/lab/secrets.py), which
            # the clients trust as the real flake's trust nix/binary-cache.pub.
            binaryCachePublicKey = if builtins.pathExists ./binary-cache.pub
              then builtins.readFile ./binary-cache.pub else "";
            # The public half of the lab's builder-ssh-key, which builders accept over SSH.
            builderSshPublicKey = if builtins.pathExists ./builder-ssh.pub
              then builtins.readFile ./builder-ssh.pub else "";
          };
        in
        { config.system.build.toplevel = toplevel; };
    in
    {
      nixosConfigurations = builtins.listToAttrs
        (map (name: { inherit name; value = mkHost name; }) hostNames);
    };
}

# The lab flake's one input, a stand-in for nixpkgs (which cannot be fetched here): the versions
# of the base packages every lab host installs. It is locked in nix/lab/flake.lock like nixpkgs
# in nix/flake.lock, so a new version in versions.json reaches the hosts only once
# `nixfleet update` (or update-flake) has moved the lock: a real input that moves, offline.
{
  description = "nixfleet lab packages (stand-in for nixpkgs: package versions)";

  outputs = { self }: {
    versions = builtins.fromJSON (builtins.readFile ./versions.json);
  };
}

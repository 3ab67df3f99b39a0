# The fleet as the flake sees it: every nix/hosts/<host>.json that `nixfleet generate` wrote
# from the inventory. The host list is the directory listing, so adding a host to the inventory
# (and regenerating) is all it takes; nothing here names a host.
# Builtins only: `nixfleet check-nix` evaluates this file without nixpkgs.
{ hostsDir }:
let
  inherit (builtins) attrNames filter head listToAttrs map match readDir;

  jsonFiles = filter (file: match ".*\\.json" file != null) (attrNames (readDir hostsDir));
  names = map (file: head (match "(.*)\\.json" file)) jsonFiles;

  readHost = name: builtins.fromJSON (builtins.readFile (hostsDir + "/${name}.json"));
  hosts = listToAttrs (map (name: { inherit name; value = readHost name; }) names);
in
{
  inherit names hosts readHost;

  # User names per host, in inventory order (the first one is the host's admin).
  hostUsers = name: map (user: user.name) hosts.${name}.users;
}

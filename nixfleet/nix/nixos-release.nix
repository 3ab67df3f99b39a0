# The NixOS release the fleet's flake follows: the nixos-YY.MM branch of its nixpkgs input, read
# from flake.nix without fetching anything. flake.lock (when there is one) pins a revision of
# that branch; the release is the branch's.
{ flake }: # a path, or an absolute path as a string
let
  url = (import (if builtins.isPath flake then flake else /. + flake)).inputs.nixpkgs.url;
  release = builtins.match ".*[/=]nixos-([0-9]+[.][0-9]+)([/&].*)?" url;
in
if release == null then
  throw "inputs.nixpkgs.url is ${url}: no nixos-YY.MM branch to take the NixOS release from"
else
  builtins.head release

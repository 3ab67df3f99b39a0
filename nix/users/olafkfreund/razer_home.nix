# olafkfreund on the hybrid-graphics laptop.
{ pkgs, ... }:
{
  imports = [ ./common.nix ];
  home.packages = [ pkgs.powertop ];
}

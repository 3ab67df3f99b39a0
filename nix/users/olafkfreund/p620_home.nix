# olafkfreund on the AMD workstation.
{ pkgs, ... }:
{
  imports = [ ./common.nix ];
  home.packages = [ pkgs.amdgpu_top ];
}

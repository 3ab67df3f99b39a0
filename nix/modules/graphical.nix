# A graphical session on the hosts whose data says so (`graphical`): the X server, which NixOS
# starts from display-manager.service into graphical.target. The hardware modules choose its
# driver (services.xserver.videoDrivers) and NVIDIA PRIME sync configures it (PRIME sync's
# settings are Xorg's only). Which display manager and desktop run is the owner's choice: a
# module of their own or the users' home files (README.md, "The NixOS flake").
{ config, lib, ... }:
let
  inherit (lib) mkEnableOption mkIf;
  cfg = config.nixfleet.graphical;
in
{
  options.nixfleet.graphical.enable = mkEnableOption "a graphical session (the X server)";

  config = mkIf cfg.enable {
    services.xserver.enable = true;
  };
}

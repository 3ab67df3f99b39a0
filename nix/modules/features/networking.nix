# features.networking: NetworkManager and the Tailscale mesh between the hosts.
{ config, lib, ... }:
let
  inherit (lib) mkEnableOption mkIf;
  cfg = config.nixfleet.features.networking;
in
{
  options.nixfleet.features.networking = {
    enable = mkEnableOption "managed networking (NetworkManager)";
    tailscale = mkEnableOption "Tailscale";
  };

  config = mkIf cfg.enable {
    networking.networkmanager.enable = true;
    services.tailscale = mkIf cfg.tailscale {
      enable = true;
      openFirewall = true;
    };
    networking.firewall.trustedInterfaces = mkIf cfg.tailscale [ "tailscale0" ];
  };
}

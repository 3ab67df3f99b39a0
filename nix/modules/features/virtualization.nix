# features.virtualization: containers, virtual machines and game streaming.
{ config, lib, ... }:
let
  inherit (lib) mkEnableOption mkIf mkMerge;
  cfg = config.nixfleet.features.virtualization;
in
{
  options.nixfleet.features.virtualization = {
    enable = mkEnableOption "virtualisation";
    docker = mkEnableOption "Docker";
    podman = mkEnableOption "Podman";
    incus = mkEnableOption "Incus (containers and VMs)";
    spice = mkEnableOption "SPICE USB redirection for VM consoles";
    libvirt = mkEnableOption "libvirt with virt-manager";
    sunshine = mkEnableOption "the Sunshine game-streaming host";
  };

  config = mkIf cfg.enable (mkMerge [
    (mkIf cfg.docker { virtualisation.docker.enable = true; })
    (mkIf cfg.podman { virtualisation.podman.enable = true; })
    (mkIf cfg.incus {
      virtualisation.incus.enable = true;
      # Incus on NixOS supports only the nftables firewall.
      networking.nftables.enable = true;
    })
    (mkIf cfg.spice { virtualisation.spiceUSBRedirection.enable = true; })
    (mkIf cfg.libvirt {
      virtualisation.libvirtd.enable = true;
      programs.virt-manager.enable = true;
    })
    (mkIf cfg.sunshine {
      services.sunshine = {
        enable = true;
        # Needed for KMS screen capture on Wayland.
        capSysAdmin = true;
        openFirewall = true;
      };
    })
  ]);
}

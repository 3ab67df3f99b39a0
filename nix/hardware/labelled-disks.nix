# Used for a host that has no hardware/<host>.nix yet: the disk layout of the NixOS manual's
# UEFI installation (root labelled "nixos", EFI system partition labelled "boot").
# Replace it with the host's own: `nixos-generate-config --show-hardware-config > hardware/<host>.nix`.
{ hostName }:
{ lib, ... }:
{
  warnings = [
    "nixfleet: nix/hardware/${hostName}.nix is missing; assuming the NixOS manual's labelled disks"
  ];
  boot.loader.systemd-boot.enable = lib.mkDefault true;
  boot.loader.efi.canTouchEfiVariables = lib.mkDefault true;
  boot.initrd.availableKernelModules = [
    "nvme"
    "xhci_pci"
    "ahci"
    "usbhid"
    "usb_storage"
    "sd_mod"
  ];
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
  fileSystems."/boot" = {
    device = "/dev/disk/by-label/boot";
    fsType = "vfat";
    options = [
      "fmask=0077"
      "dmask=0077"
    ];
  };
  hardware.enableRedistributableFirmware = lib.mkDefault true;
}

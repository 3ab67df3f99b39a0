# NVIDIA GPUs: the proprietary driver, CUDA, and PRIME sync on hybrid laptops.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkEnableOption mkIf mkMerge mkOption types;
  cfg = config.nixfleet.hardware.nvidia;
  busId =
    example: what:
    mkOption {
      type = types.str;
      default = "";
      inherit example;
      description = "PCI bus ID of the ${what} (lspci's 01:00.0 is PCI:1:0:0).";
    };
in
{
  options.nixfleet.hardware.nvidia = {
    enable = mkEnableOption "an NVIDIA GPU with the proprietary driver";
    # The model's NvidiaBranch (nixfleet/nvidia.py), which also knows which GPU architectures
    # each branch supports: on nixos-26.05 stable is the 595 driver (Turing and newer),
    # legacy_580 the last for Maxwell, Pascal and Volta, legacy_470 the last for Kepler.
    package = mkOption {
      type = types.enum [
        "stable"
        "beta"
        "production"
        "latest"
        "legacy_580"
        "legacy_470"
      ];
      default = "stable";
      description = "Driver branch: an attribute of config.boot.kernelPackages.nvidiaPackages.";
    };
    open = mkOption {
      type = types.bool;
      default = false;
      description = "Use NVIDIA's open kernel modules (Turing and newer only).";
    };
    cuda = mkOption {
      type = types.bool;
      default = true;
      description = "Install the CUDA toolkit and let containers use the GPU.";
    };
    prime = {
      sync = mkEnableOption "PRIME sync: the NVIDIA GPU renders, the Intel GPU drives the panel";
      intelBusId = busId "PCI:0:2:0" "integrated Intel GPU";
      nvidiaBusId = busId "PCI:1:0:0" "NVIDIA GPU";
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      services.xserver.videoDrivers = [ "nvidia" ];
      hardware.graphics = {
        enable = true;
        enable32Bit = true;
      };
      hardware.nvidia = {
        package = config.boot.kernelPackages.nvidiaPackages.${cfg.package};
        inherit (cfg) open;
        modesetting.enable = true;
      };
    }
    (mkIf cfg.prime.sync {
      assertions = [
        {
          assertion = cfg.prime.intelBusId != "" && cfg.prime.nvidiaBusId != "";
          message = "nixfleet.hardware.nvidia.prime.sync needs intelBusId and nvidiaBusId (host data `prime`)";
        }
      ];
      hardware.nvidia.prime = {
        sync.enable = true;
        inherit (cfg.prime) intelBusId nvidiaBusId;
      };
    })
    (mkIf cfg.cuda {
      environment.systemPackages = [
        pkgs.cudaPackages.cudatoolkit
        pkgs.nvtopPackages.nvidia
      ];
      hardware.nvidia-container-toolkit.enable =
        config.virtualisation.docker.enable || config.virtualisation.podman.enable;
    })
  ]);
}

# AMD GPUs: amdgpu for display, ROCm for compute.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkEnableOption mkIf mkMerge mkOption types;
  cfg = config.nixfleet.hardware.amd;
in
{
  options.nixfleet.hardware.amd = {
    enable = mkEnableOption "an AMD GPU driven by amdgpu";
    rocm = mkOption {
      type = types.bool;
      default = true;
      description = "Install the ROCm compute stack (OpenCL/HIP runtime, rocminfo, rocm-smi).";
    };
    hsaOverrideGfxVersion = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "11.0.0";
      description = ''
        HSA_OVERRIDE_GFX_VERSION for GPUs that ROCm does not pick up by itself (gfx1100 is
        11.0.0). Also used by Ollama.
      '';
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      services.xserver.videoDrivers = [ "amdgpu" ];
      hardware.amdgpu.initrd.enable = true;
      hardware.graphics = {
        enable = true;
        enable32Bit = true;
      };
    }
    (mkIf cfg.rocm {
      hardware.amdgpu.opencl.enable = true;
      environment.systemPackages = [
        pkgs.rocmPackages.rocminfo
        pkgs.rocmPackages.rocm-smi
      ];
      # Many ROCm programs look for the HIP runtime under /opt/rocm.
      systemd.tmpfiles.rules = [ "L+ /opt/rocm/hip - - - - ${pkgs.rocmPackages.clr}" ];
    })
    (mkIf (cfg.hsaOverrideGfxVersion != null) {
      environment.variables.HSA_OVERRIDE_GFX_VERSION = cfg.hsaOverrideGfxVersion;
    })
  ]);
}

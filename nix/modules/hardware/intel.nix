# Intel integrated graphics: modesetting for display, VA-API for video; no compute.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkEnableOption mkIf mkOption optional types;
  cfg = config.nixfleet.hardware.intel;
in
{
  options.nixfleet.hardware.intel = {
    enable = mkEnableOption "Intel integrated graphics";
    mediaDriver = mkOption {
      type = types.nullOr types.str;
      default = "intel-media-driver";
      example = "intel-vaapi-driver";
      description = ''
        nixpkgs attribute of the VA-API driver: intel-media-driver (iHD) from Broadwell on,
        intel-vaapi-driver (i965) before; null for none.
      '';
    };
  };

  config = mkIf cfg.enable {
    services.xserver.videoDrivers = [ "modesetting" ];
    hardware.graphics = {
      enable = true;
      extraPackages = optional (cfg.mediaDriver != null) pkgs.${cfg.mediaDriver};
    };
    environment.sessionVariables = mkIf (cfg.mediaDriver == "intel-media-driver") {
      LIBVA_DRIVER_NAME = "iHD";
    };
    environment.systemPackages = [ pkgs.libva-utils ];
  };
}

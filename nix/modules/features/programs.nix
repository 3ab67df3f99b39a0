# features.programs: desktop applications, one flag each (the model has no master switch).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkEnableOption mkIf mkMerge;
  cfg = config.nixfleet.features.programs;
in
{
  options.nixfleet.features.programs = {
    lazygit = mkEnableOption "lazygit";
    thunderbird = mkEnableOption "Thunderbird";
    obsidian = mkEnableOption "Obsidian";
    office = mkEnableOption "LibreOffice";
    webcam = mkEnableOption "webcam tools (v4l-utils, guvcview)";
    print = mkEnableOption "printing (CUPS, with network printer discovery)";
  };

  config = mkMerge [
    (mkIf cfg.lazygit { environment.systemPackages = [ pkgs.lazygit ]; })
    (mkIf cfg.thunderbird { programs.thunderbird.enable = true; })
    (mkIf cfg.obsidian { environment.systemPackages = [ pkgs.obsidian ]; })
    (mkIf cfg.office { environment.systemPackages = [ pkgs.libreoffice ]; })
    (mkIf cfg.webcam {
      environment.systemPackages = [
        pkgs.v4l-utils
        pkgs.guvcview
      ];
    })
    (mkIf cfg.print {
      services.printing.enable = true;
      services.avahi = {
        enable = true;
        nssmdns4 = true;
        openFirewall = true;
      };
    })
  ];
}

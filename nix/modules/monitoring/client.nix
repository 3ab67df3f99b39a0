# Exporters on every monitored host: node exporter and the NixOS and systemd exporters of this
# repository's Python package (which also report the GPUs of every class). The monitoring
# server scrapes them as nix/monitoring/<server>/prometheus.yml says (nixfleet generate).
{ config, lib, ... }:
let
  inherit (lib) mkEnableOption mkIf mkMerge mkOption optional optionals types;
  cfg = config.nixfleet.monitoring.client;
  features = config.nixfleet.features.monitoring.features;
  ports = lib.importJSON ../../lib/ports.json;

  # nixfleet-nixos-exporter and nixfleet-systemd-exporter are console scripts of the nixfleet
  # package, added by the monitoring issue; both take --port.
  exporterService = description: script: port: extraServiceConfig: {
    inherit description;
    wantedBy = [ "multi-user.target" ];
    after = [ "network.target" ];
    serviceConfig = {
      ExecStart = "${config.nixfleet.package}/bin/${script} --port ${toString port}";
      Restart = "on-failure";
      ProtectSystem = "strict";
      ProtectHome = true;
      PrivateTmp = true;
      NoNewPrivileges = true;
    } // extraServiceConfig;
  };
in
{
  options.nixfleet.monitoring.client = {
    enable = mkEnableOption "the exporters features.monitoring.features asks for" // {
      default = config.nixfleet.features.monitoring.enable;
      defaultText = lib.literalExpression "config.nixfleet.features.monitoring.enable";
    };
    openFirewall = mkOption {
      type = types.bool;
      default = true;
      description = "Open the exporters' ports so the monitoring server can scrape them.";
    };
  };

  config = mkIf cfg.enable (mkMerge [
    (mkIf features.nodeExporter {
      services.prometheus.exporters.node = {
        enable = true;
        port = ports.nodeExporter;
        inherit (cfg) openFirewall;
        enabledCollectors =
          # node_systemd_unit_state: the SystemdServiceFailed alert names the failed unit.
          [ "systemd" ]
          ++ optionals features.networkMetrics [
            "tcpstat"
            "network_route"
          ];
      };
      nixfleet.health.services.node-exporter = {
        unit = "prometheus-node-exporter.service";
        port = ports.nodeExporter;
      };
    })
    (mkIf features.nixosMetrics {
      # Runs as root, read-only: it reads the system profile, /boot entries and the Nix database.
      systemd.services.nixfleet-nixos-exporter =
        exporterService "NixOS metrics exporter" "nixfleet-nixos-exporter" ports.nixosExporter
          { };
      networking.firewall.allowedTCPPorts = optional cfg.openFirewall ports.nixosExporter;
      nixfleet.health.services.nixos-exporter = {
        unit = "nixfleet-nixos-exporter.service";
        port = ports.nixosExporter;
      };
    })
    (mkIf features.serviceMetrics {
      systemd.services.nixfleet-systemd-exporter =
        exporterService "systemd metrics exporter" "nixfleet-systemd-exporter" ports.systemdExporter
          { DynamicUser = true; };
      networking.firewall.allowedTCPPorts = optional cfg.openFirewall ports.systemdExporter;
      nixfleet.health.services.systemd-exporter = {
        unit = "nixfleet-systemd-exporter.service";
        port = ports.systemdExporter;
      };
    })
  ]);
}

# features.monitoring: the host's monitoring role. monitoring/client.nix runs the exporters,
# monitoring/server.nix the Prometheus/Alertmanager/Grafana server; both follow these flags.
{ config, lib, ... }:
let
  inherit (lib) mkEnableOption mkIf mkOption types;
  cfg = config.nixfleet.features.monitoring;
  flag = description: default: mkEnableOption description // { inherit default; };
in
{
  options.nixfleet.features.monitoring = {
    enable = mkEnableOption "monitoring";
    mode = mkOption {
      type = types.enum [
        "server"
        "client"
        "standalone"
      ];
      default = "client";
      description = ''
        server: run Prometheus, Alertmanager and Grafana for the fleet; client: be scraped by
        serverHost; standalone: a server for this host only.
      '';
    };
    serverHost = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "The monitoring server that scrapes this host (clients only).";
    };
    features = {
      nodeExporter = flag "the Prometheus node exporter" true;
      nixosMetrics = flag "the NixOS exporter (generations, store, rebuilds)" true;
      serviceMetrics = flag "the systemd exporter (unit states)" true;
      aiMetrics = flag "scraping Ollama (on hosts that run it)" false;
      networkMetrics = flag "extra network collectors (TCP states, routes)" false;
      alerting = flag "alert rules and Alertmanager (on the server)" false;
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = (cfg.mode == "client") == (cfg.serverHost != null);
        message = "features.monitoring: a client needs serverHost, a server or standalone host must not have one";
      }
    ];
  };
}

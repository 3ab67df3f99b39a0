# The fleet's monitoring server: Prometheus scraping every host that names this one as its
# serverHost, Alertmanager, and Grafana with its datasource and dashboards provisioned.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mapAttrsToList mkEnableOption mkIf mkOption optional types;
  cfg = config.nixfleet.monitoring.server;
  monitoring = config.nixfleet.features.monitoring;
  ports = lib.importJSON ../../lib/ports.json;

  fleet = import ../../lib/monitoring.nix {
    inherit (cfg) hosts receivers;
    server = config.networking.hostName;
  };
  dashboards = pkgs.linkFarm "nixfleet-grafana-dashboards" (
    mapAttrsToList (name: dashboard: {
      inherit name;
      path = pkgs.writeText name (builtins.toJSON dashboard);
    }) (import ../../lib/dashboards.nix { inherit (cfg) hosts; inherit (fleet) monitored; })
  );
  grafanaSecretKey = "${config.services.grafana.dataDir}/secret_key";
in
{
  options.nixfleet.monitoring.server = {
    enable = mkEnableOption "the fleet's monitoring server" // {
      default = monitoring.enable && monitoring.mode != "client";
      defaultText = lib.literalExpression ''features.monitoring.enable && mode != "client"'';
    };
    hosts = mkOption {
      type = types.attrsOf types.raw;
      default = { };
      description = "Generated data of every fleet host (nix/hosts/*.json) by name: whom to scrape.";
    };
    receivers = mkOption {
      type = types.listOf types.attrs;
      default = [ { name = "default"; } ];
      description = "Alertmanager receivers; every route sends to the one named default.";
    };
  };

  config = mkIf cfg.enable {
    nixfleet.health.services = {
      prometheus = {
        unit = "prometheus.service";
        port = ports.prometheus;
      };
      grafana = {
        unit = "grafana.service";
        port = ports.grafana;
      };
      alertmanager = mkIf fleet.alerting {
        unit = "alertmanager.service";
        port = ports.alertmanager;
      };
    };
    services.prometheus = {
      enable = true;
      port = ports.prometheus;
      inherit (fleet) retentionTime scrapeConfigs alertmanagers;
      globalConfig = fleet.global;
      rules = [ (builtins.toJSON fleet.rules) ];
      alertmanager = mkIf fleet.alerting {
        enable = true;
        port = ports.alertmanager;
        configuration = fleet.alertmanager;
      };
    };

    services.grafana = {
      enable = true;
      settings = {
        server = {
          http_addr = "0.0.0.0";
          http_port = ports.grafana;
        };
        security.secret_key = "$__file{${grafanaSecretKey}}";
      };
      provision = {
        enable = true;
        datasources.settings = {
          apiVersion = 1;
          datasources = [
            {
              name = "Prometheus";
              type = "prometheus";
              uid = "prometheus";
              access = "proxy";
              url = "http://localhost:${toString ports.prometheus}";
              isDefault = true;
            }
          ];
        };
        dashboards.settings = {
          apiVersion = 1;
          providers = [
            {
              name = "nixfleet";
              type = "file";
              options.path = dashboards;
            }
          ];
        };
      };
    };

    # Grafana encrypts its database with this key. It is Grafana's own state, so it is made
    # once on the host, beside the database, and never enters the Nix store.
    systemd.services.grafana-secret-key = {
      description = "Create Grafana's database encryption key";
      wantedBy = [ "grafana.service" ];
      before = [ "grafana.service" ];
      serviceConfig.Type = "oneshot";
      script = ''
        if [ ! -s ${grafanaSecretKey} ]; then
          install -d -m 0700 -o grafana -g grafana ${config.services.grafana.dataDir}
          (umask 077; ${pkgs.openssl}/bin/openssl rand -hex 32 > ${grafanaSecretKey})
          chown grafana:grafana ${grafanaSecretKey}
        fi
      '';
    };

    networking.firewall.allowedTCPPorts = [
      ports.prometheus
      ports.grafana
    ]
    ++ optional fleet.alerting ports.alertmanager;
  };
}

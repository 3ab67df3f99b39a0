# The fleet's monitoring server: Prometheus, Alertmanager and Grafana, configured by the files
# `nixfleet generate` writes from the inventory into nix/monitoring/ (nixfleet/monitoring/).
# Those files are the only definition: this module installs them as they are, and the tests
# run promtool and amtool on the same files.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkEnableOption mkIf mkOption optional types;
  cfg = config.nixfleet.monitoring.server;
  monitoring = config.nixfleet.features.monitoring;
  alerting = monitoring.features.alerting;
  ports = lib.importJSON ../../lib/ports.json;

  # This server's own files: prometheus.yml and dashboards/.
  serverDir = cfg.configDir + "/${config.networking.hostName}";
  # prometheus.yml's rule_files and the dashboard provider name files in /etc/nixfleet/monitoring
  # (nixfleet.monitoring.SERVER_CONFIG_DIR).
  installDir = "nixfleet/monitoring";

  grafanaSecretKey = "${config.services.grafana.dataDir}/secret_key";
  # Grafana's admin password: the agenix secret secrets/rules.py gives the monitoring server.
  adminPassword = "grafana-admin-password";
  hasAdminPassword = builtins.hasAttr adminPassword config.nixfleet.secrets.declarations;
in
{
  options.nixfleet.monitoring.server = {
    enable = mkEnableOption "the fleet's monitoring server" // {
      default = monitoring.enable && monitoring.mode != "client";
      defaultText = lib.literalExpression ''features.monitoring.enable && mode != "client"'';
    };
    configDir = mkOption {
      type = types.path;
      default = ../../monitoring;
      description = ''
        The generated monitoring files (nix/monitoring): alerts.yml, alertmanager.yml,
        grafana-*.yml, and <hostName>/prometheus.yml and <hostName>/dashboards/ for this server.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [{
      assertion = hasAdminPassword;
      message = "the monitoring server needs the ${adminPassword} secret: give this host it in secrets/rules.py";
    }];

    nixfleet.health.services = {
      prometheus = {
        unit = "prometheus.service";
        port = ports.prometheus;
      };
      grafana = {
        unit = "grafana.service";
        port = ports.grafana;
      };
      alertmanager = mkIf alerting {
        unit = "alertmanager.service";
        port = ports.alertmanager;
      };
      alert-log = mkIf alerting {
        unit = "nixfleet-alert-log.service";
        port = ports.alertWebhook;
      };
    };

    environment.etc = {
      "${installDir}/alerts.yml".source = cfg.configDir + "/alerts.yml";
      "${installDir}/dashboards".source = serverDir + "/dashboards";
    };

    services.prometheus = {
      enable = true;
      port = ports.prometheus;
      retentionTime = "30d";
      configText = builtins.readFile (serverDir + "/prometheus.yml");
      # The rule file is read from /etc at run time, which a build cannot see; the tests run
      # the full `promtool check config` on these files.
      checkConfig = "syntax-only";
      alertmanager = mkIf alerting {
        enable = true;
        port = ports.alertmanager;
        configText = builtins.readFile (cfg.configDir + "/alertmanager.yml");
      };
    };
    # The rules live outside prometheus.yml: restart Prometheus when they change (the file's
    # own store path, so that only a change of the rules restarts it).
    systemd.services.prometheus.restartTriggers = [ "${cfg.configDir + "/alerts.yml"}" ];

    # alertmanager.yml's webhook receivers: one journal line per alert.
    systemd.services.nixfleet-alert-log = mkIf alerting {
      description = "Alertmanager's webhook receiver (journalctl -u nixfleet-alert-log)";
      wantedBy = [ "multi-user.target" ];
      before = [ "alertmanager.service" ];
      serviceConfig = {
        ExecStart = "${pkgs.python3}/bin/python3 ${./alert_log.py} --port ${toString ports.alertWebhook}";
        DynamicUser = true;
        Restart = "on-failure";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        NoNewPrivileges = true;
      };
    };

    services.grafana = {
      enable = true;
      settings = {
        server = {
          http_addr = "0.0.0.0";
          http_port = ports.grafana;
        };
        security = {
          secret_key = "$__file{${grafanaSecretKey}}";
          # Never a literal (the original's sat in the configuration): the agenix secret.
          admin_password = "$__file{${config.age.secrets.${adminPassword}.path}}";
        };
      };
      provision = {
        enable = true;
        datasources.path = cfg.configDir + "/grafana-datasources.yml";
        dashboards.path = cfg.configDir + "/grafana-dashboards.yml";
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
    ++ optional alerting ports.alertmanager;
  };
}
